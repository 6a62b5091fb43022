//! Integration tests: the sandbox over real HTTP on 127.0.0.1, nested under `/sandbox` like
//! `tributary serve` mounts it. One binary, one module per area (zero-to-production style).

mod admin;
mod cgm_data;
mod faults;
mod helpers;
mod oauth_flow;
mod pump_data;
mod tokens;
