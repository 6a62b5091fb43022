//! sea-orm entities: the rows as stored. Domain types (`crate::model`) are kept apart and
//! converted explicitly, so a column type never leaks into the API.

pub mod connection;
pub mod connection_event;
pub mod data_record;
pub mod delivery_attempt;
pub mod invitation;
pub mod oauth_authorization;
pub mod operator_alert;
pub mod outbox;
pub mod partner_revocation;
pub mod pause;
pub mod skipped_record;
pub mod step_run;
