//! The built binary: help, minting a development token, and configuration errors.
//!
//! Each run gets its own working directory and an environment without `TRIBUTARY_…` variables,
//! so the developer's shell cannot change the outcome.
//!
//! # Layout
//! - `main.rs`: running the binary, shared values.
//! - `usage.rs`: help and usage errors.
//! - `token.rs`: `tributary token`: what it prints, which secret signs, which lifetimes.
//! - `configuration.rs`: configuration errors exit 2 naming the key; unreachable databases.
//! - `serve.rs`: `serve`'s banner and the standalone sandbox.
//! - `ops.rs`: `tributary ops doctor`: what it lists, repairs, and its exit status.

mod configuration;
mod ops;
mod serve;
mod token;
mod usage;

use std::{
    path::Path,
    process::{Command, Output},
};

fn tributary(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, args, env).output().expect("the binary runs")
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tributary"));
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("TRIBUTARY_")
        {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_BACKTRACE");
    command.envs(env.iter().copied());
    command
}

/// A JWT's header (`{"alg":…` / `{"typ":…` in base64url) anywhere in `text`.
fn contains_jwt(text: &str) -> bool {
    text.contains("eyJ")
}

const JWT_SECRET: &str = "configured-secret-configured-secret!";
const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// A production-like environment: explicit secrets, no development secrets.
fn production_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TRIBUTARY_AUTH__JWT_SECRET", JWT_SECRET),
        ("TRIBUTARY_CRYPTO__KEYS__PROD", KEY),
        ("TRIBUTARY_DEV_SECRETS", "false"),
    ]
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}
