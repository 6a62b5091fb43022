//! Partners: configuration and the OAuth client.
pub mod config;

pub use config::{ClientAuth, PartnerConfig, PartnerKind};
