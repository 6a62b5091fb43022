//! `tributary ops summary` and `tributary ops list` (docs/operations.md#stuck): the fleet in
//! counts, and the connections matching filters with their stuck reasons, straight against the
//! database; readable tables, or with `--json` what `GET /v1/ops/summary` and `GET
//! /v1/ops/connections` answer. Reads only; never migrates.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use engine::{
    Store,
    ids::{PartnerName, UserId},
    state::State,
    store::{
        ConnectionFilter, ConnectionPage, MAX_LIST_PAGE, OpsSummary, StuckFilter, StuckReason,
        StuckSettings,
    },
};

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
    /// Database URL (overrides database.url).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
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
    /// Database URL (overrides database.url).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
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
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
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
    let summary = with_store(file, args.database_url, init_logging, async |store, s| {
        Ok(store.ops_summary(store.clock().now(), &s).await?)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&api::fleet_summary_json(summary))?
        );
    } else {
        print!("{}", summary_table(&summary));
    }
    Ok(())
}

/// `ops list`.
fn list(
    file: Option<&Path>,
    args: ListArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let filter = ConnectionFilter {
        state: args.state,
        partner: args.partner,
        user: args.user,
        paused: args.paused,
        error: args.error,
        stuck: StuckFilter::from_parts(args.stuck, args.reason)?,
    };
    let after = args
        .cursor
        .as_deref()
        .map(api::decode_fleet_cursor)
        .transpose()
        .map_err(|p| anyhow::anyhow!("--cursor: {}", p.detail))?;
    let limit = args.limit;
    let page = with_store(file, args.database_url, init_logging, async |store, s| {
        let now = store.clock().now();
        Ok(store
            .list_connections(&filter, after, limit, now, &s)
            .await?)
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&api::fleet_page_json(page))?
        );
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

/// The summary for people.
pub fn summary_table(s: &OpsSummary) -> String {
    let at = s.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out = format!(
        "fleet at {at}: {} connections, {} paused, {} stuck\n\n{:<32} {:<12} {:>9}\n",
        s.total, s.paused, s.stuck_connections, "PARTNER", "STATE", "COUNT"
    );
    for p in &s.by_partner_state {
        out.push_str(&format!(
            "{:<32} {:<12} {:>9}\n",
            p.partner,
            p.state.as_str(),
            p.count
        ));
    }
    let oldest = s
        .oldest_due
        .map(|d| format!(" (oldest due {} ago)", duration(d)))
        .unwrap_or_default();
    out.push_str(&format!(
        "\ntransfers: {} due now, {} overdue{oldest}, {} in flight, {} claimed\n",
        s.due_now, s.overdue, s.in_flight, s.claimed
    ));
    let queue: Vec<String> = s
        .queue
        .iter()
        .map(|q| format!("{} {}", q.step.as_str(), q.pending))
        .collect();
    out.push_str(&format!("queue:     {}\n", queue.join(", ")));
    out.push_str(&format!(
        "\n{:<10} {:>9} {:>9} {:>11} {:>11}   (last hour)\n",
        "STEP", "RUNS", "ERRORS", "INSERTED", "UPDATED"
    ));
    for (step, r) in &s.last_hour {
        out.push_str(&format!(
            "{:<10} {:>9} {:>9} {:>11} {:>11}\n",
            step.as_str(),
            r.runs,
            r.errors,
            r.inserted,
            r.updated
        ));
    }
    if !s.errors.is_empty() {
        out.push_str(&format!("\n{:<40} {:>9}\n", "LAST ERROR", "COUNT"));
        for (code, n) in &s.errors {
            out.push_str(&format!("{code:<40} {n:>9}\n"));
        }
    }
    let out_partners: Vec<_> = s
        .breakers
        .iter()
        .filter(|b| b.state != engine::store::BreakerState::Closed)
        .collect();
    if !out_partners.is_empty() {
        out.push_str(&format!(
            "\n{:<32} {:<10} {:<22} {:>7}   (partner outages)\n",
            "PARTNER", "BREAKER", "NEXT PROBE", "PROBES"
        ));
        for b in out_partners {
            let probe = b.probe_at.map_or_else(
                || "running".to_owned(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            out.push_str(&format!(
                "{:<32} {:<10} {:<22} {:>7}\n",
                b.partner,
                b.state.as_str(),
                probe,
                b.probes
            ));
        }
    }
    out.push_str(&format!("\n{:<24} {:>9}\n", "STUCK REASON", "COUNT"));
    for (reason, n) in &s.stuck {
        out.push_str(&format!(
            "{:<24} {:>9}   {}\n",
            reason.as_str(),
            n,
            reason.description()
        ));
    }
    out
}

/// A page for people: one row per connection.
pub fn list_table(page: &ConnectionPage) -> String {
    if page.connections.is_empty() {
        return "no connection matches\n".to_owned();
    }
    let mut out = format!(
        "{:<36}  {:<20} {:<16} {:<11} {:<6} {:<20} {:<24} {}\n",
        "ID", "USER", "PARTNER", "STATE", "PAUSED", "NEXT TRANSFER", "LAST ERROR", "STUCK"
    );
    for listed in &page.connections {
        let c = &listed.connection;
        let next = c.next_sync_at.map_or("-".to_owned(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let error = c.last_error.as_ref().map_or("-", |e| e.code.as_str());
        let stuck: Vec<&str> = listed.stuck.iter().map(|r| r.as_str()).collect();
        out.push_str(&format!(
            "{:<36}  {:<20} {:<16} {:<11} {:<6} {:<20} {:<24} {}\n",
            c.id.to_string(),
            c.user_id.as_str(),
            c.partner.as_str(),
            c.state.as_str(),
            if c.paused { "yes" } else { "no" },
            next,
            error,
            if stuck.is_empty() {
                "-".to_owned()
            } else {
                stuck.join(",")
            }
        ));
    }
    out.push_str(&format!("\n{} connection(s)", page.connections.len()));
    match &page.next {
        Some(next) => out.push_str(&format!(
            "; more: --cursor {}\n",
            api::encode_fleet_cursor(next)
        )),
        None => out.push('\n'),
    }
    out
}
