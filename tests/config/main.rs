//! Configuration: layering, validation messages, development secrets, the bounds of numeric
//! keys, the environment namespace and the production-like rules.
//!
//! Every test passes an explicit environment ([`EnvVars::from_pairs`]) and keeps files in its own
//! temporary directory, so tests can run in parallel without touching process state.

mod bounds;
mod environment;
mod layering;
mod notify;
mod partners;
mod production;
mod secrets;

use std::{net::SocketAddr, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use tributary::config::{CliOverrides, Config, EnvVars};

pub const JWT_SECRET: &str = "a-configured-jwt-secret-of-32-bytes!";

pub fn key_b64(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

/// Configured secrets, so that no development secrets file is written.
pub fn secrets() -> Vec<(String, String)> {
    vec![
        ("TRIBUTARY_AUTH__JWT_SECRET".into(), JWT_SECRET.into()),
        ("TRIBUTARY_CRYPTO__KEYS__K1".into(), key_b64(1)),
    ]
}

pub fn env(extra: &[(&str, &str)]) -> EnvVars {
    let mut pairs = secrets();
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    EnvVars::from_pairs(pairs)
}

pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn load_err(file: Option<&Path>, env: EnvVars, cli: CliOverrides) -> (String, String) {
    let err = Config::load_from(file, env, cli).unwrap_err();
    let key = err.key().unwrap_or_default().to_owned();
    (key, err.to_string())
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
