//! `tributary ops bulk <action> [filters…] --reason R (--dry-run | --confirm TOKEN) [--json]`:
//! a bulk action (docs/actions.md#bulk-actions) straight against the database, as `POST
//! /v1/ops/bulk/{action}` does it, or through a running server's that endpoint (`--server`). The dry run prints how many connections match, a sample,
//! and the confirmation token with the command that confirms it; the confirmation acts on
//! exactly the connections the dry run stored. Exit 0 when the dry run is stored or every
//! member was acted on or already so, 1 when some member was refused or the call failed (an
//! unknown, expired or mismatched token, too many matches), 2 for a usage or configuration
//! error (a bad reason is refused before the database is opened).

use std::path::Path;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use engine::{
    ids::{PartnerName, UserId},
    state::State,
    store::{BulkAction, ConnectionFilter, Reason},
    store::{StuckFilter, StuckReason},
};
use serde_json::{Value, json};

use super::{
    actions::{ReasonParser, Target},
    json::{count, items, text},
    remote::Remote,
};
use crate::config::{CliOverrides, Config, LogConfig};

/// Flags of `ops bulk`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["dry_run", "confirm"])))]
pub struct BulkArgs {
    /// pause, resume, fail, clear-error or replay.
    #[arg(value_name = "ACTION", value_parser = parse_action)]
    pub action: BulkAction,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Why (for the journal): one line, no token, secret or email address. On --confirm it is
    /// what the journal entries say.
    #[arg(long, value_parser = ReasonParser)]
    pub reason: Reason,
    /// Store the matching connections as a plan and print it; nothing is acted on.
    #[arg(long)]
    pub dry_run: bool,
    /// Act on the connections of the dry run that printed this token (and no others).
    #[arg(long, value_name = "TOKEN", conflicts_with = "filters")]
    pub confirm: Option<String>,
    /// Print the answer as JSON (as `POST /v1/ops/bulk/{action}` answers it).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

/// The filters of `ops list`: every one given must hold (dry run only).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("filters").multiple(true)))]
pub struct FilterArgs {
    /// Only connections in this state.
    #[arg(long, value_name = "STATE", value_parser = parse_state, group = "filters")]
    pub state: Option<State>,
    /// Only connections to this partner.
    #[arg(long, value_name = "NAME", value_parser = parse_partner, group = "filters")]
    pub partner: Option<PartnerName>,
    /// Only connections of this Tidepool user.
    #[arg(long, value_name = "USER_ID", value_parser = parse_user, group = "filters")]
    pub user: Option<UserId>,
    /// Only paused (true) or unpaused (false) connections.
    #[arg(long, value_name = "BOOL", group = "filters")]
    pub paused: Option<bool>,
    /// Only connections whose last error has this code.
    #[arg(long, value_name = "CODE", group = "filters")]
    pub error: Option<String>,
    /// Only connections stuck for some reason (true) or for none (false).
    #[arg(long, value_name = "BOOL", group = "filters")]
    pub stuck: Option<bool>,
    /// Only connections stuck for this reason.
    #[arg(long = "stuck-reason", value_name = "CODE", value_parser = parse_stuck_reason, group = "filters")]
    pub stuck_reason: Option<StuckReason>,
}

fn parse_action(s: &str) -> Result<BulkAction, String> {
    BulkAction::parse(s).ok_or_else(|| {
        let names: Vec<_> = BulkAction::ALL.iter().map(|a| a.as_str()).collect();
        format!("one of {}", names.join(", "))
    })
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

fn parse_stuck_reason(s: &str) -> Result<StuckReason, String> {
    StuckReason::parse(s).ok_or_else(|| {
        let codes: Vec<_> = StuckReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown stuck reason; one of {}", codes.join(", "))
    })
}

/// Some members were refused by the single action: exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0} connection(s) were refused")]
pub struct SomeRefused(pub u64);

/// Runs `ops bulk`; `init_logging` sets up logging from the loaded configuration.
pub fn run(
    file: Option<&Path>,
    args: BulkArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let answer = if let Some(remote) = Remote::of(&args.target.source)? {
        let path = format!("/v1/ops/bulk/{}", args.action);
        runtime.block_on(remote.post(&path, &request_body(&args)))?
    } else {
        let filter = filter_of(&args.filter)?;
        let config = Config::load(
            file,
            CliOverrides {
                database_url: args.target.source.database_url.clone(),
                ..CliOverrides::default()
            },
        )?;
        init_logging(&config.log)?;
        runtime.block_on(local(&config, &args, &filter))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if let Some(token) = answer["confirmationToken"].as_str() {
        print!(
            "{}",
            plan_text(&answer, &confirm_command(file, &args, token))
        );
    } else {
        print!("{}", result_text(args.action, &answer));
    }
    match answer["refused"].as_u64() {
        Some(refused) if refused > 0 => Err(SomeRefused(refused).into()),
        _ => Ok(()),
    }
}

fn filter_of(f: &FilterArgs) -> anyhow::Result<ConnectionFilter> {
    Ok(ConnectionFilter {
        state: f.state,
        partner: f.partner.clone(),
        user: f.user.clone(),
        paused: f.paused,
        error: f.error.clone(),
        stuck: StuckFilter::from_parts(f.stuck, f.stuck_reason)?,
    })
}

/// The body of `POST /v1/ops/bulk/{action}` for this run: a dry run with the filters, or a
/// confirmation with its token.
fn request_body(args: &BulkArgs) -> Value {
    if let Some(token) = &args.confirm {
        return json!({"confirmationToken": token, "reason": args.reason.as_str()});
    }
    let f = &args.filter;
    json!({
        "filter": {
            "state": f.state.map(|s| s.as_str()),
            "partner": f.partner.as_ref().map(|p| p.as_str()),
            "user": f.user.as_ref().map(|u| u.as_str()),
            "paused": f.paused,
            "error": f.error,
            "stuck": f.stuck,
            "reason": f.stuck_reason.map(|r| r.as_str()),
        },
        "reason": args.reason.as_str(),
        "dryRun": true,
    })
}

/// The bulk action against the database, answered as the API would.
async fn local(
    config: &Config,
    args: &BulkArgs,
    filter: &ConnectionFilter,
) -> anyhow::Result<Value> {
    let url = crate::serve::redact_url(&config.database.url);
    let actor = super::actions::operator(&args.target);
    let (store, workflow) = super::open_store(config).await?;
    let settings = workflow.bulk();
    let answer = match &args.confirm {
        Some(token) => store
            .execute_bulk(token, args.action, &actor, Some(&args.reason), &settings)
            .await
            .map(api::bulk_result_json),
        None => store
            .plan_bulk(args.action, filter, &args.reason, &actor, &settings)
            .await
            .map(api::bulk_plan_json),
    };
    store.close().await;
    answer.with_context(|| format!("bulk {} on {url}", args.action))
}

/// `text` quoted for a POSIX shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The command that confirms the dry run that answered `token`, with the flags this run was
/// given where they matter (never a password or a bearer token).
fn confirm_command(file: Option<&Path>, args: &BulkArgs, token: &str) -> String {
    let mut command = "tributary".to_owned();
    if let Some(file) = file {
        command.push_str(&format!(
            " --config {}",
            quoted(&file.display().to_string())
        ));
    }
    command.push_str(&format!(
        " ops bulk {} --confirm {token} --reason {}",
        args.action,
        quoted(args.reason.as_str())
    ));
    let source = &args.target.source;
    if let Some(server) = &source.server {
        command.push_str(&format!(" --server {}", quoted(server.as_str())));
        if std::env::var_os("TRIBUTARY_OPS_TOKEN").is_none() {
            command.push_str(" --token <the same token>");
        }
    }
    if let Some(url) = &source.database_url {
        // A URL with a password is not repeated on the terminal.
        let redacted = crate::serve::redact_url(url);
        if redacted == *url {
            command.push_str(&format!(" --database-url {}", quoted(url)));
        } else {
            command.push_str(" --database-url <the same URL>");
        }
    }
    if let (Some(operator), None) = (&args.target.operator, &source.server) {
        command.push_str(&format!(" --operator {operator}"));
    }
    command
}

/// A dry run (the API's `BulkPlan`) for people: the count, the sample and how to confirm.
pub fn plan_text(plan: &Value, confirm: &str) -> String {
    let action = text(&plan["action"]);
    let n = count(&plan["count"]);
    let mut out = format!("bulk {action} dry run: {n} connection(s) match; nothing was done\n");
    if n == 0 {
        return out;
    }
    out.push_str(&format!(
        "\n{:<36}  {:<20} {:<16} {:<11} {}\n",
        "ID", "USER", "PARTNER", "STATE", "PAUSED"
    ));
    let mut shown = 0;
    for c in items(&plan["sample"]) {
        shown += 1;
        out.push_str(&format!(
            "{:<36}  {:<20} {:<16} {:<11} {}\n",
            text(&c["id"]),
            text(&c["userId"]),
            text(&c["partner"]),
            text(&c["state"]),
            if c["paused"] == true { "yes" } else { "no" }
        ));
    }
    let more = n.saturating_sub(shown);
    if more > 0 {
        out.push_str(&format!("… and {more} more\n"));
    }
    out.push_str(&format!(
        "\nTo {action} exactly these {n} connection(s), before {}:\n  {confirm}\n",
        text(&plan["expiresAt"])
    ));
    out
}

/// A confirmation's result (the API's `BulkResult`) for people.
pub fn result_text(action: BulkAction, r: &Value) -> String {
    let mut out = format!(
        "bulk {action}: {} acted on, {} already so, {} refused, {} gone\n",
        count(&r["acted"]),
        count(&r["already"]),
        count(&r["refused"]),
        count(&r["gone"])
    );
    for refusal in items(&r["refusals"]) {
        out.push_str(&format!(
            "  refused {}: {}\n",
            text(&refusal["code"]),
            count(&refusal["count"])
        ));
    }
    out
}
