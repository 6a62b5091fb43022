//! The API against a real SQLite store and real `Workflows`, through poem's `TestClient`.
//! The partner is a small fake authorization server on 127.0.0.1:0 (`helpers::FakePartner`),
//! so callbacks can complete a code exchange and tokens really exist to be leaked (or not).

mod auth;
mod callback;
mod connections;
mod contract;
mod data;
mod helpers;
mod meta;
mod ops;
mod problems;
