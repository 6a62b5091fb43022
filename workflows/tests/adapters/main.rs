//! The partners' data API clients against the real sandbox on loopback (real HTTP, frozen
//! sandbox clock), tokens obtained through the sandbox's OAuth flow with `PartnerClient`.
//!
//! # Layout
//! - `helpers.rs`: a sandbox on port 0 with auto-consent, configs, connecting, clients.
//! - `windows.rs`: exact record sets per window, pump paging, window limits, `dataRange`.
//! - `faults.rs`: each sandbox fault mapped to its `FetchError`.
//! - `rate.rs`: the per-partner token bucket (paused time) and its sharing across clients.

mod faults;
mod helpers;
mod rate;
mod windows;
