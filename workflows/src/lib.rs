//! workflows
pub mod partner;
