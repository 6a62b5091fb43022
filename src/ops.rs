//! `tributary ops …`: operators' tools, straight against the database of the configuration
//! (or `--database-url`). Today `ops doctor [--repair] [--json]` (docs/operations.md#doctor):
//! a readable table, or with `--json` the report as `GET /v1/ops/doctor` answers it; exit 0
//! when no violation remains, 1 when some do (or on any other failure), 2 for configuration
//! errors.

mod actions;
mod bulk;
mod inspect;
mod remote;
mod show;
mod show_table;

use std::path::Path;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use engine::{
    Store,
    model::Actor,
    store::{DoctorCode, DoctorReport},
};
use serde_json::{Value, json};

use crate::config::{CliOverrides, Config, LogConfig};

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
    Doctor(DoctorArgs),
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

/// Flags of `ops doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Repair what is safe to repair, then check again.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON (as `GET /v1/ops/doctor` answers it) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Database URL (overrides database.url).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The operator the journal names for repairs (`ops:<NAME>`); default $USER, else `cli`.
    #[arg(long, value_name = "NAME", value_parser = parse_operator)]
    pub operator: Option<String>,
}

fn parse_operator(s: &str) -> Result<String, String> {
    api::auth::validate_subject(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// Violations remain after the run: exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0} violation(s) remain")]
pub struct ViolationsRemain(pub u64);

/// Runs `ops …`; `init_logging` sets up logging from the loaded configuration.
pub fn run(
    file: Option<&Path>,
    args: OpsArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match args.command {
        OpsCommand::Doctor(args) => {
            let config = Config::load(
                file,
                CliOverrides {
                    database_url: args.database_url.clone(),
                    ..CliOverrides::default()
                },
            )?;
            init_logging(&config.log)?;
            if config
                .dev_secrets_in_use
                .as_ref()
                .is_some_and(|d| d.generated)
            {
                eprintln!(
                    "note: no development secrets were found beside the database, so new ones \
                     were created: tokens sealed by the server cannot be read here, and a repair \
                     discards such tokens without revoking them at the partner."
                );
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(doctor(config, args))
        }
        OpsCommand::Action(command) => actions::run(file, command, init_logging),
        OpsCommand::Inspect(command) => inspect::run(file, command, init_logging),
        OpsCommand::Show(args) => show::show(file, args, init_logging),
        OpsCommand::Refetch(args) => show::refetch(file, args, init_logging),
        OpsCommand::Bulk(args) => bulk::run(file, args, init_logging),
    }
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

async fn doctor(config: Config, args: DoctorArgs) -> anyhow::Result<()> {
    let url = crate::serve::redact_url(&config.database.url);
    let (store, workflow) = open_store(&config).await?;
    let settings = workflow.doctor();
    let report = if args.repair {
        let operator = args
            .operator
            .or_else(|| {
                std::env::var("USER")
                    .ok()
                    .filter(|u| parse_operator(u).is_ok())
            })
            .unwrap_or_else(|| "cli".to_owned());
        store
            .doctor_repair(&Actor::new("ops", &operator), &settings)
            .await
    } else {
        store.doctor(store.clock().now(), &settings).await
    };
    store.close().await;
    let report = report.with_context(|| format!("the doctor failed on {url}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print!("{}", table(&report));
    }
    let remaining: u64 = report.findings.iter().map(|f| f.remaining).sum();
    if remaining > 0 {
        return Err(ViolationsRemain(remaining).into());
    }
    Ok(())
}

/// The report in the shape of the API's `DoctorReport`.
pub fn report_json(report: &DoctorReport) -> Value {
    let violations: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "code": f.code.as_str(),
                "description": f.code.description(),
                "subject": f.code.subject().as_str(),
                "repair": f.code.repair(),
                "count": f.count,
                "sample": f.sample,
                "repaired": f.repaired,
                "remaining": f.remaining,
            })
        })
        .collect();
    json!({
        "checkedAt": report.checked_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "repair": report.repair,
        "clean": report.is_clean(),
        "checked": DoctorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "violations": violations,
    })
}

/// The report for people: one row per violation, its description, what repair does, and its
/// sample ids.
pub fn table(report: &DoctorReport) -> String {
    let checked = DoctorCode::ALL.len();
    let at = report
        .checked_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if report.findings.is_empty() {
        return format!("doctor: every invariant holds ({checked} checked at {at})\n");
    }
    let mut out = format!(
        "doctor: {checked} invariants checked at {at}{}\n\n{:<32} {:>7} {:>9} {:>10}\n",
        if report.repair { ", repaired" } else { "" },
        "CODE",
        "FOUND",
        "REPAIRED",
        "REMAINING"
    );
    for f in &report.findings {
        out.push_str(&format!(
            "{:<32} {:>7} {:>9} {:>10}\n",
            f.code.as_str(),
            f.count,
            f.repaired,
            f.remaining
        ));
        out.push_str(&format!("    {}\n", f.code.description()));
        match f.code.repair() {
            Some(repair) => out.push_str(&format!("    repair: {repair}\n")),
            None => out.push_str("    repair: none (report only; see docs/operations.md)\n"),
        }
        if !f.sample.is_empty() {
            let more = f.count.saturating_sub(f.sample.len() as u64);
            out.push_str(&format!(
                "    {}s: {}{}\n",
                f.code.subject().as_str(),
                f.sample.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ));
        }
    }
    let remaining: u64 = report.findings.iter().map(|f| f.remaining).sum();
    out.push_str(&if remaining == 0 {
        "\nno violation remains\n".to_owned()
    } else if report.repair {
        format!("\n{remaining} violation(s) remain\n")
    } else {
        format!("\n{remaining} violation(s); `tributary ops doctor --repair` fixes the repairable ones\n")
    });
    out
}
