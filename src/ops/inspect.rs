//! `tributary ops summary` and `tributary ops list` (docs/operations.md#stuck): the fleet in
//! counts, and the connections matching filters with their stuck reasons, against the database
//! or a running server (`--server`, `--token`); with `--json` what `GET /v1/ops/summary` and
//! `GET /v1/ops/connections` answer, else tables rendered from that same JSON, so both sources
//! read the same. Reads only; never migrates.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use engine::{
    Store,
    ids::{PartnerName, UserId},
    state::State,
    store::{ConnectionFilter, MAX_LIST_PAGE, StuckFilter, StuckReason, StuckSettings},
};

use serde_json::Value;

use super::json::{items, text};

use super::remote::{Remote, Source};
use crate::config::{CliOverrides, Config, LogConfig};

/// `ops summary` and `ops list`.
#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// The fleet in counts: by partner and state, due and overdue, in flight, the queue, the
    /// last hour's runs, errors by code, stuck connections by reason.
    ///
    /// docs/operations.md#summary describes each figure. Reads only; does not migrate.
    Summary(SummaryArgs),
    /// The connections matching every filter given, smallest id first, each with its stuck
    /// reasons (docs/operations.md#stuck), one page at a time.
    ///
    /// The last line names the --cursor of the next page. Reads only; does not migrate.
    List(ListArgs),
}

/// Runs `ops summary` or `ops list`.
pub fn run(
    file: Option<&Path>,
    command: InspectCommand,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match command {
        InspectCommand::Summary(args) => summary(file, args, init_logging),
        InspectCommand::List(args) => list(file, args, init_logging),
    }
}

/// Flags of `ops summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Print the summary as JSON (as `GET /v1/ops/summary` answers it) instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

/// Flags of `ops list`: every filter given must hold.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only connections in this state (invited, authorizing, active, refreshing, revoked, failed).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<State>,
    /// Only connections to this partner.
    #[arg(long, value_name = "NAME", value_parser = parse_partner)]
    pub partner: Option<PartnerName>,
    /// Only connections of this Tidepool user.
    #[arg(long, value_name = "USER_ID", value_parser = parse_user)]
    pub user: Option<UserId>,
    /// Only paused (true) or unpaused (false) connections.
    #[arg(long, value_name = "BOOL")]
    pub paused: Option<bool>,
    /// Only connections whose last error has this code.
    #[arg(long, value_name = "CODE")]
    pub error: Option<String>,
    /// Only connections stuck for some reason (true) or for none (false).
    #[arg(long, value_name = "BOOL")]
    pub stuck: Option<bool>,
    /// Only connections stuck for this reason (docs/operations.md#stuck lists them).
    #[arg(long, value_name = "CODE", value_parser = parse_reason)]
    pub reason: Option<StuckReason>,
    /// The page after this cursor (`nextCursor`, or the cursor the table's last line names).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Connections per page, 1 to 1000.
    #[arg(
        long,
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=MAX_LIST_PAGE)
    )]
    pub limit: u64,
    /// Print the page as JSON (as `GET /v1/ops/connections` answers it) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
}

fn parse_state(s: &str) -> Result<State, String> {
    s.parse()
        .map_err(|e: engine::state::UnknownState| e.to_string())
}

fn parse_partner(s: &str) -> Result<PartnerName, String> {
    PartnerName::parse(s).map_err(|e| e.to_string())
}

fn parse_user(s: &str) -> Result<UserId, String> {
    UserId::parse(s).map_err(|e| e.to_string())
}

fn parse_reason(s: &str) -> Result<StuckReason, String> {
    StuckReason::parse(s).ok_or_else(|| {
        let codes: Vec<_> = StuckReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown stuck reason; one of {}", codes.join(", "))
    })
}

/// Loads the configuration, starts logging and runs `work` against the store.
fn with_store<T>(
    file: Option<&Path>,
    database_url: Option<String>,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
    work: impl AsyncFnOnce(&Store, StuckSettings) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let config = Config::load(
        file,
        CliOverrides {
            database_url,
            ..CliOverrides::default()
        },
    )?;
    init_logging(&config.log)?;
    let url = crate::serve::redact_url(&config.database.url);
    super::runtime()?.block_on(async {
        let (store, workflow) = super::open_store(&config).await?;
        let result = work(&store, workflow.stuck()).await;
        store.close().await;
        result.with_context(|| format!("cannot read the fleet of {url}"))
    })
}

/// `ops summary`.
fn summary(
    file: Option<&Path>,
    args: SummaryArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let summary = match Remote::of(&args.source)? {
        Some(remote) => super::runtime()?.block_on(remote.get("/v1/ops/summary"))?,
        None => with_store(
            file,
            args.source.database_url,
            init_logging,
            async |store, s| {
                let summary = store.ops_summary(store.clock().now(), &s).await?;
                Ok(api::fleet_summary_json(summary))
            },
        )?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary_table(&summary));
    }
    Ok(())
}

/// The list's query string, as `GET /v1/ops/connections` reads it.
fn query(args: &ListArgs) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    if let Some(state) = args.state {
        q.append_pair("state", state.as_str());
    }
    if let Some(partner) = &args.partner {
        q.append_pair("partner", partner.as_str());
    }
    if let Some(user) = &args.user {
        q.append_pair("user", user.as_str());
    }
    if let Some(paused) = args.paused {
        q.append_pair("paused", &paused.to_string());
    }
    if let Some(error) = &args.error {
        q.append_pair("error", error);
    }
    if let Some(stuck) = args.stuck {
        q.append_pair("stuck", &stuck.to_string());
    }
    if let Some(reason) = args.reason {
        q.append_pair("reason", reason.as_str());
    }
    if let Some(cursor) = &args.cursor {
        q.append_pair("cursor", cursor);
    }
    q.append_pair("limit", &args.limit.to_string());
    q.finish()
}

/// `ops list`.
fn list(
    file: Option<&Path>,
    args: ListArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let filter = ConnectionFilter {
        state: args.state,
        partner: args.partner.clone(),
        user: args.user.clone(),
        paused: args.paused,
        error: args.error.clone(),
        stuck: StuckFilter::from_parts(args.stuck, args.reason)?,
    };
    let after = args
        .cursor
        .as_deref()
        .map(api::decode_fleet_cursor)
        .transpose()
        .map_err(|p| anyhow::anyhow!("--cursor: {}", p.detail))?;
    let limit = args.limit;
    let page = match Remote::of(&args.source)? {
        Some(remote) => {
            let path = format!("/v1/ops/connections?{}", query(&args));
            super::runtime()?.block_on(remote.get(&path))?
        }
        None => with_store(
            file,
            args.source.database_url,
            init_logging,
            async |store, s| {
                let now = store.clock().now();
                let page = store
                    .list_connections(&filter, after, limit, now, &s)
                    .await?;
                Ok(api::fleet_page_json(page))
            },
        )?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
    } else {
        print!("{}", list_table(&page));
    }
    Ok(())
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The summary for people, from the API's JSON.
pub fn summary_table(s: &Value) -> String {
    let mut out = format!(
        "fleet at {}: {} connections, {} paused, {} stuck\n\n{:<32} {:<12} {:>9}\n",
        text(&s["at"]),
        text(&s["total"]),
        text(&s["paused"]),
        text(&s["stuckConnections"]),
        "PARTNER",
        "STATE",
        "COUNT"
    );
    for p in items(&s["byPartnerState"]) {
        out.push_str(&format!(
            "{:<32} {:<12} {:>9}\n",
            text(&p["partner"]),
            text(&p["state"]),
            text(&p["count"])
        ));
    }
    let oldest = s["oldestDueSecs"]
        .as_u64()
        .map(|secs| format!(" (oldest due {} ago)", duration(Duration::from_secs(secs))))
        .unwrap_or_default();
    out.push_str(&format!(
        "\ntransfers: {} due now, {} overdue{oldest}, {} in flight, {} claimed\n",
        text(&s["dueNow"]),
        text(&s["overdue"]),
        text(&s["inFlight"]),
        text(&s["claimed"])
    ));
    let queue: Vec<String> = items(&s["queue"])
        .map(|q| format!("{} {}", text(&q["step"]), text(&q["pending"])))
        .collect();
    out.push_str(&format!("queue:     {}\n", queue.join(", ")));
    out.push_str(&format!(
        "\n{:<10} {:>9} {:>9} {:>11} {:>11}   (last hour)\n",
        "STEP", "RUNS", "ERRORS", "INSERTED", "UPDATED"
    ));
    for r in items(&s["lastHour"]) {
        out.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>11} {:>11}\n",
            text(&r["step"]),
            text(&r["runs"]),
            text(&r["errors"]),
            text(&r["inserted"]),
            text(&r["updated"])
        ));
    }
    if s["errors"].as_array().is_some_and(|e| !e.is_empty()) {
        out.push_str(&format!("\n{:<40} {:>9}\n", "LAST ERROR", "COUNT"));
        for e in items(&s["errors"]) {
            out.push_str(&format!(
                "{:<40} {:>9}\n",
                text(&e["code"]),
                text(&e["count"])
            ));
        }
    }
    let out_partners: Vec<&Value> = items(&s["breakers"])
        .filter(|b| b["state"] != "closed")
        .collect();
    if !out_partners.is_empty() {
        out.push_str(&format!(
            "\n{:<32} {:<10} {:<22} {:>7}   (partner outages)\n",
            "PARTNER", "BREAKER", "NEXT PROBE", "PROBES"
        ));
        for b in out_partners {
            let probe = b["probeAt"]
                .as_str()
                .map_or_else(|| "running".to_owned(), str::to_owned);
            out.push_str(&format!(
                "{:<32} {:<10} {:<22} {:>7}\n",
                text(&b["partner"]),
                text(&b["state"]),
                probe,
                text(&b["failedProbes"])
            ));
        }
    }
    out.push_str(&format!("\n{:<24} {:>9}\n", "STUCK REASON", "COUNT"));
    for r in items(&s["stuck"]) {
        let code = text(&r["reason"]);
        let description = StuckReason::parse(&code).map_or("", StuckReason::description);
        out.push_str(&format!(
            "{:<24} {:>9}   {}\n",
            code,
            text(&r["count"]),
            description
        ));
    }
    out
}

/// A page for people, from the API's JSON: one row per connection.
pub fn list_table(page: &Value) -> String {
    let rows: Vec<&Value> = items(&page["connections"]).collect();
    if rows.is_empty() {
        return "no connection matches\n".to_owned();
    }
    let mut out = format!(
        "{:<36}  {:<20} {:<16} {:<11} {:<6} {:<20} {:<24} {}\n",
        "ID", "USER", "PARTNER", "STATE", "PAUSED", "NEXT TRANSFER", "LAST ERROR", "STUCK"
    );
    for c in &rows {
        let next = c["nextSyncAt"].as_str().map_or("-".to_owned(), |t| {
            t.parse::<chrono::DateTime<chrono::Utc>>()
                .map_or(t.to_owned(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
        });
        let stuck: Vec<String> = items(&c["stuckReasons"]).map(text).collect();
        out.push_str(&format!(
            "{:<36}  {:<20} {:<16} {:<11} {:<6} {:<20} {:<24} {}\n",
            text(&c["id"]),
            text(&c["userId"]),
            text(&c["partner"]),
            text(&c["state"]),
            if c["paused"] == true { "yes" } else { "no" },
            next,
            text(&c["lastError"]["code"]),
            if stuck.is_empty() {
                "-".to_owned()
            } else {
                stuck.join(",")
            }
        ));
    }
    out.push_str(&format!("\n{} connection(s)", rows.len()));
    match page["nextCursor"].as_str() {
        Some(next) => out.push_str(&format!("; more: --cursor {next}\n")),
        None => out.push('\n'),
    }
    out
}
