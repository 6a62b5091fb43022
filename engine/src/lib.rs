//! engine
pub mod secret;
