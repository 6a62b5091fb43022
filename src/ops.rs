//! `tributary ops …`: operators' tools (docs/operations.md#cli), straight against the
//! database of the configuration (or `--database-url`), or through a running server's API
//! (`--server URL --token T`). Each prints a readable table rendered from the API's JSON, or
//! with `--json` that JSON itself.
//!
//! - `doctor.rs`: `ops doctor [--repair]`; `bulk.rs`: `ops bulk`; `actions.rs`: replay, pause,
//!   resume, fail, clear-error, pauses; `inspect.rs`: summary, list; `show.rs`: show, refetch;
//!   `remote.rs`: the server's API as an operator.

mod actions;
mod bulk;
mod doctor;
mod inspect;
mod json;
mod remote;
mod show;
mod show_table;

use std::path::Path;

use clap::{Args, Subcommand};
use engine::Store;

use crate::config::{Config, LogConfig};

/// `tributary ops`.
#[derive(Debug, Args)]
pub struct OpsArgs {
    #[command(subcommand)]
    pub command: OpsCommand,
}

/// The operators' tools.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Check every invariant the engine relies on and list the violations.
    ///
    /// Each violation has a stable code, a count and up to 20 connection (or outbox message)
    /// ids; docs/operations.md lists them. With --repair, what is safe to repair is repaired
    /// (each fix journaled with the operator as actor) and everything is checked again. Exits 0
    /// when no violation remains, 1 when some do. Does not migrate the database.
    Doctor(doctor::DoctorArgs),
    #[command(flatten)]
    Action(actions::ActionCommand),
    #[command(flatten)]
    Inspect(inspect::InspectCommand),
    /// One connection: its row, stuck reasons and next step, the last journal entries, the
    /// last step runs, and the coverage of the last 14 days (docs/coverage.md).
    ///
    /// Against the database, or a running server with --server and --token. Reads only.
    Show(show::ShowArgs),
    /// Read a time range of a connection again: the cursor is rewound to --start and the
    /// transfer made due now (docs/coverage.md#refetch). --dry-run (through --server) fetches
    /// the range and reports what it would insert, update, leave unchanged or retire.
    Refetch(show::RefetchArgs),
    /// An action on every connection matching the list's filters: a dry run first (count,
    /// sample, confirmation token), then --confirm with its token acts on exactly those.
    Bulk(bulk::BulkArgs),
}

fn parse_operator(s: &str) -> Result<String, String> {
    api::auth::validate_subject(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// Runs `ops …`; `init_logging` sets up logging from the loaded configuration.
pub fn run(
    file: Option<&Path>,
    args: OpsArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match args.command {
        OpsCommand::Doctor(args) => doctor::run(file, args, init_logging),
        OpsCommand::Action(command) => actions::run(file, command, init_logging),
        OpsCommand::Inspect(command) => inspect::run(file, command, init_logging),
        OpsCommand::Show(args) => show::show(file, args, init_logging),
        OpsCommand::Refetch(args) => show::refetch(file, args, init_logging),
        OpsCommand::Bulk(args) => bulk::run(file, args, init_logging),
    }
}

/// The runtime an `ops` tool runs its one request or query on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The configuration's store for an `ops` tool (a small pool, the configuration's outbox;
/// never migrated), with the workflow settings the tool derives its bounds from.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<(Store, workflows::Settings)> {
    let workflow = crate::serve::workflow_settings(config)?;
    let store = crate::serve::open_configured(config, config.database.max_connections.min(4))
        .await?
        .with_outbox(workflow.delivery.outbox());
    Ok((store, workflow))
}
