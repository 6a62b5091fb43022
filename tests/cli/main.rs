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
//! - `inspect.rs`: `tributary ops summary` and `ops list`: tables, JSON, filters, pages.
//! - `actions.rs`: `tributary ops replay|pause|resume|pauses`: the actions and their exit status.
//! - `show.rs`: `tributary ops show` and `ops refetch` against the database.
//! - `bulk.rs`: `tributary ops bulk`: the dry run, its confirm command, exit statuses.

mod actions;
mod bulk;
mod configuration;
mod inspect;
mod ops;
mod serve;
mod show;
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

/// An active connection of `alice` to the sandbox CGM partner whose access token is `access`
/// (no refresh token), made through the store's own transitions.
async fn active_connection(
    store: &engine::Store,
    user: &str,
    access: &str,
) -> engine::ids::ConnectionId {
    use chrono::{TimeDelta, Utc};
    use engine::{
        ids::{PartnerName, UserId},
        model::{Actor, Change, NewAuthorization, TokenSet},
        secret::SecretString,
        state::Event,
    };
    let authorization = NewAuthorization {
        state_hash: format!("{access}-{user}"),
        pkce_verifier: SecretString::from("verifier"),
        expires_at: Utc::now() + TimeDelta::minutes(10),
    };
    let (opened, _) = store
        .open_connection(
            &UserId::parse(user).unwrap(),
            &PartnerName::parse("sandbox-cgm").unwrap(),
            Change::new(
                Event::StartAuthorization { authorization },
                Actor::new("user", user),
            ),
        )
        .await
        .unwrap();
    let id = opened.connection.id;
    let tokens = TokenSet {
        access_token: SecretString::from(access),
        refresh_token: None,
        expires_at: Some(Utc::now() + TimeDelta::hours(2)),
        scope: None,
    };
    let authorized = Change::new(Event::Authorized { tokens }, Actor::system("test"));
    store.apply(id, None, authorized).await.unwrap();
    id
}
