//! End-to-end flows: the whole service in-process on a loopback port (exactly what
//! `tributary serve` runs), its built-in sandbox partner, real HTTP, a real SQLite file or a
//! real PostgreSQL database. Each test runs on both backends (`engine::backend_tests!`).

mod actions;
mod breaker;
mod bulk;
mod callbacks;
mod cli_server;
mod connect;
mod coverage;
mod deliveries;
mod doctor;
mod fleet;
mod harness;
mod helpers;
mod hostile;
mod http;
mod invitations;
mod lifecycle;
mod metrics;
mod notices;
mod runs;
mod steps;
mod stuck_cases;
mod transfer;
mod transfer_faults;
mod webhook_batches;
