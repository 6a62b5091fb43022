//! `tributary ops show ID` and `tributary ops refetch ID` (docs/actions.md#actions,
//! docs/coverage.md): one connection as an operator needs it (its row, stuck reasons, next
//! step, journal, step runs, coverage of the last 14 days), and a re-fetch of a range with its
//! dry run. Against the database or a running server (`--server`, `--token`); both print what
//! the API answers (`--json`) or a table rendered from it, so the two read the same.

use std::{path::Path, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use engine::{
    ids::ConnectionId,
    store::{ConnectionFilter, Reason, TimeSpan},
};
use serde_json::{Value, json};

use super::remote::{Remote, Source};
use crate::config::{CliOverrides, Config, LogConfig};

/// Flags of `ops show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The connection's id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: ConnectionId,
    /// Print `{connection, stuck, journal, runs, coverage}` as the API answers each.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

/// Flags of `ops refetch`.
#[derive(Debug, Args)]
pub struct RefetchArgs {
    /// The connection's id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: ConnectionId,
    /// Range start (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub start: DateTime<Utc>,
    /// Range end (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub end: DateTime<Utc>,
    /// Why (for the journal): one line, no token, secret or email address.
    #[arg(long, value_parser = super::actions::ReasonParser)]
    pub reason: Reason,
    /// Fetch the range and report what it would change, committing nothing (needs --server:
    /// the partner is reached by the server's own clients).
    #[arg(long)]
    pub dry_run: bool,
    /// The operator the journal names (`ops:<NAME>`; database only: through a server, the
    /// token's subject); default $USER, else `cli`.
    #[arg(long, value_name = "NAME", value_parser = super::parse_operator)]
    pub operator: Option<String>,
    #[command(flatten)]
    pub source: Source,
}

fn parse_id(s: &str) -> Result<ConnectionId, String> {
    s.parse()
        .map_err(|_| "not a connection id (a UUID)".to_owned())
}

fn load(
    file: Option<&Path>,
    source: &Source,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<Config> {
    let config = Config::load(
        file,
        CliOverrides {
            database_url: source.database_url.clone(),
            ..CliOverrides::default()
        },
    )?;
    init_logging(&config.log)?;
    Ok(config)
}

/// Runs `ops show`.
pub fn show(
    file: Option<&Path>,
    args: ShowArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let remote = Remote::of(&args.source)?;
    let config = match remote {
        Some(_) => None,
        None => Some(load(file, &args.source, init_logging)?),
    };
    let view = super::runtime()?.block_on(async {
        match (&remote, config) {
            (Some(remote), _) => remote_view(remote, args.id).await,
            (None, Some(config)) => database_view(&config, args.id).await,
            (None, None) => unreachable!("a configuration is loaded without a server"),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", super::show_table::render(&view));
    }
    Ok(())
}

fn coverage_path(id: ConnectionId) -> String {
    format!("/v1/connections/{id}/coverage")
}

async fn remote_view(remote: &Remote, id: ConnectionId) -> anyhow::Result<Value> {
    let connection = remote.get(&format!("/v1/connections/{id}")).await?;
    let user = connection["userId"].as_str().unwrap_or_default().to_owned();
    let partner = connection["partner"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let page = remote
        .get(&format!(
            "/v1/ops/connections?user={user}&partner={partner}&limit=100"
        ))
        .await?;
    let stuck = page["connections"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == id.to_string()))
        .map_or(json!([]), |r| r["stuckReasons"].clone());
    Ok(json!({
        "connection": connection,
        "stuck": stuck,
        "journal": remote.get(&format!("/v1/connections/{id}/events")).await?,
        "runs": remote.get(&format!("/v1/connections/{id}/runs?limit=10")).await?,
        "coverage": remote.get(&coverage_path(id)).await?,
    }))
}

async fn database_view(config: &Config, id: ConnectionId) -> anyhow::Result<Value> {
    let (store, workflow) = super::open_store(config).await?;
    let view = async {
        let connection = store.get(id).await?;
        let now = store.clock().now();
        let filter = ConnectionFilter {
            user: Some(connection.user_id.clone()),
            partner: Some(connection.partner.clone()),
            ..ConnectionFilter::default()
        };
        let page = store
            .list_connections(&filter, None, 100, now, &workflow.stuck())
            .await?;
        let page = api::fleet_page_json(page);
        let stuck = page["connections"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["id"] == id.to_string()))
            .map_or(json!([]), |r| r["stuckReasons"].clone());
        let range = TimeSpan {
            start: now - TimeDelta::days(14),
            end: now,
        };
        let coverage = store
            .coverage(&connection, range, Duration::from_secs(3600))
            .await?;
        Ok::<_, anyhow::Error>(json!({
            "connection": api::connection_json(connection),
            "stuck": stuck,
            "journal": api::journal_json(store.journal(id).await?),
            "runs": api::runs_json(store.step_runs(&id, None, 10).await?),
            "coverage": api::coverage_json(coverage),
        }))
    }
    .await;
    store.close().await;
    view
}

/// Runs `ops refetch`.
pub fn refetch(
    file: Option<&Path>,
    args: RefetchArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let remote = Remote::of(&args.source)?;
    let body = json!({
        "start": args.start,
        "end": args.end,
        "reason": args.reason.as_str(),
        "dryRun": args.dry_run,
    });
    let answer = match remote {
        Some(remote) => super::runtime()?
            .block_on(remote.post(&format!("/v1/ops/connections/{}/refetch", args.id), &body))?,
        None => {
            anyhow::ensure!(
                !args.dry_run,
                "a dry run fetches from the partner through the server: give --server and --token"
            );
            let config = load(file, &args.source, init_logging)?;
            super::runtime()?.block_on(rewind(&config, &args))?
        }
    };
    println!("{}", super::show_table::refetched(&answer));
    Ok(())
}

async fn rewind(config: &Config, args: &RefetchArgs) -> anyhow::Result<Value> {
    let (store, _) = super::open_store(config).await?;
    let range = match TimeSpan::checked(args.start, args.end, store.clock().now()) {
        Ok(range) => range,
        Err(err) => {
            store.close().await;
            anyhow::bail!("invalid range: {err}");
        }
    };
    let actor = super::actions::operator_named(args.operator.clone());
    let done = store.refetch(args.id, range, &actor, &args.reason).await;
    store.close().await;
    let done = done?;
    Ok(json!({
        "dryRun": false,
        "range": {"start": range.start, "end": range.end},
        "changed": done.changed,
        "cursorWas": done.cursor_was,
        "connection": api::connection_json(done.connection),
    }))
}
