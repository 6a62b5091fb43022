//! Tributary: a durable workflow engine connecting Tidepool to device partners' clouds.
//!
//! The binary is a thin shell over this library so integration tests can load configuration and
//! start the server in-process.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults → TOML → `TRIBUTARY_…` env → CLI flags).
//! - [`dev_secrets`]: generated development secrets for zero-configuration runs.
//! - [`cli`]: the command line and its dispatch.
//! - [`logging`]: the log formats (text, JSON lines).
//! - [`serve`]: starting the API, workers, migrations and the sandbox.
//! - [`ops`]: `tributary ops …`, operators' tools against the database (the doctor).

pub mod bench;
pub mod cli;
pub mod config;
pub mod dev_secrets;
pub mod logging;
pub mod ops;
pub mod serve;
