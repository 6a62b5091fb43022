//! The OAuth partner client against scripted authorization servers on loopback (real HTTP).
//! Each mock answers requests from a script, in order, and records what it received.
//!
//! # Layout
//! - `mock.rs`: the scripted server (`MockPartner`, `Reply`, `Seen`) and fixtures.
//! - `authorize.rs`: authorization requests, callback errors, issuer check, config validation.
//! - `token.rs`: code exchange and refresh, client authentication, error classification.
//! - `revoke.rs`: RFC 7009 revocation.
//! - `faults.rs`: token responses refused as partner faults (token type, size), refresh timeout.
//! - `limits.rs`: the settings behind those refusals, and their checks.
//! - `error_code.rs`: the shared parser of OAuth error bodies.
//! - `policy.rs`: the partner kind's sync policy and `[sync]` overrides.

mod authorize;
mod error_code;
mod faults;
mod limits;
mod mock;
mod policy;
mod revoke;
mod token;
