//! `tributary ops replay|pause|resume|fail|clear-error|pauses`: the operators' actions
//! (docs/actions.md#actions) straight against the database, as the API does them (the same
//! store methods, the same checked reason, the operator: `--operator`, default `$USER`, else
//! `cli`, as actor), or through a running server's API (`--server`, `--token`: the token's
//! subject is the actor). Both print from the API's JSON answer, so they read the same. Exit 0
//! when done or already so, 1 when refused or on any other failure, 2 for a usage or
//! configuration error (a bad reason is refused before the database is opened).

use std::path::Path;

use clap::{ArgGroup, Args, Subcommand};
use engine::{
    Store,
    ids::{ConnectionId, PartnerName},
    model::Actor,
    store::{ActionSettings, PauseScope, Reason},
};

use serde_json::{Value, json};

use super::json::{items, text};

use crate::config::{CliOverrides, Config, LogConfig};

/// The actions, as subcommands of `ops`.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Run a connection's current step now from its persisted state.
    ///
    /// An active connection's transfer is made due now (a transfer lease left behind is
    /// cleared); a refresh left stuck in `refreshing` is recovered and due now; a partner
    /// revocation a revoked or failed connection still owes is due now. Refused when the step
    /// runs right now, when its transfers are paused, or when there is nothing to run.
    Replay(ConnectionAction),
    /// Pause a connection, a partner (--partner) or everything (--all): nothing paused is
    /// claimed for a transfer or a token refresh until resumed.
    Pause(ScopeAction),
    /// Resume a connection, a partner (--partner) or everything (--all); the overdue work a
    /// partner's or everyone's resume frees is spread over `workers.resume_spread_secs`.
    Resume(ScopeAction),
    /// Move an active connection to failed: tokens dropped, a partner revocation owed.
    Fail(ConnectionAction),
    /// Clear a connection's last error and its transfer failure streak.
    ClearError(ConnectionAction),
    /// List the pauses of partners and of everything in force.
    Pauses(Target),
}

/// Where and as whom.
#[derive(Debug, Args)]
pub struct Target {
    #[command(flatten)]
    pub source: super::remote::Source,
    /// The operator the journal names (`ops:<NAME>`; against the database: through a server,
    /// the token's subject); default $USER, else `cli`.
    #[arg(long, value_name = "NAME", value_parser = super::parse_operator)]
    pub operator: Option<String>,
}

/// An action on one connection.
#[derive(Debug, Args)]
pub struct ConnectionAction {
    /// The connection's id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: ConnectionId,
    /// Why (for the journal): one line, no token, secret or email address.
    #[arg(long, value_parser = ReasonParser)]
    pub reason: Reason,
    #[command(flatten)]
    pub target: Target,
}

/// A pause or resume of a connection, a partner or everything.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["id", "partner", "all"])))]
pub struct ScopeAction {
    /// The connection's id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    pub id: Option<ConnectionId>,
    /// Every connection of this partner.
    #[arg(long, value_name = "NAME", value_parser = parse_partner)]
    pub partner: Option<PartnerName>,
    /// Every connection.
    #[arg(long)]
    pub all: bool,
    /// Why (for the journal or the pause's record): one line, no token, secret or email
    /// address.
    #[arg(long, value_parser = ReasonParser)]
    pub reason: Reason,
    #[command(flatten)]
    pub target: Target,
}

fn parse_id(s: &str) -> Result<ConnectionId, String> {
    s.parse()
        .map_err(|_| "not a connection id (a UUID)".to_owned())
}

fn parse_partner(s: &str) -> Result<PartnerName, String> {
    PartnerName::parse(s).map_err(|e| e.to_string())
}

/// Parses `--reason`; a refused reason is not repeated in the error (it may hold what the rule
/// keeps out of terminals and logs: a token, an address).
#[derive(Debug, Clone, Copy)]
pub(super) struct ReasonParser;

impl clap::builder::TypedValueParser for ReasonParser {
    type Value = Reason;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Reason, clap::Error> {
        let refused = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --reason: {message}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused("not UTF-8".to_owned()))?;
        Reason::parse(text).map_err(|e| refused(e.to_string()))
    }
}

/// Runs one action; `init_logging` sets up logging from the loaded configuration.
pub fn run(
    file: Option<&Path>,
    command: ActionCommand,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let target = match &command {
        ActionCommand::Replay(a) | ActionCommand::Fail(a) | ActionCommand::ClearError(a) => {
            &a.target
        }
        ActionCommand::Pause(a) | ActionCommand::Resume(a) => &a.target,
        ActionCommand::Pauses(t) => t,
    };
    let runtime = super::runtime()?;
    if let Some(remote) = super::remote::Remote::of(&target.source)? {
        let what = Said::of(&command);
        let answer = runtime.block_on(ask(&remote, command))?;
        println!("{}", said(what, &answer));
        return Ok(());
    }
    let config = Config::load(
        file,
        CliOverrides {
            database_url: target.source.database_url.clone(),
            ..CliOverrides::default()
        },
    )?;
    init_logging(&config.log)?;
    runtime.block_on(act(config, command))
}

async fn act(config: Config, command: ActionCommand) -> anyhow::Result<()> {
    let (store, workflow) = super::open_store(&config).await?;
    let settings = workflow.actions();
    let what = Said::of(&command);
    let outcome = perform(&store, command, &settings).await;
    store.close().await;
    println!("{}", said(what, &outcome?));
    Ok(())
}

/// The same action through the API.
async fn ask(remote: &super::remote::Remote, command: ActionCommand) -> anyhow::Result<Value> {
    let body = |reason: &Reason| json!({ "reason": reason.as_str() });
    let connection = |id: &ConnectionId, verb: &str| format!("/v1/ops/connections/{id}/{verb}");
    let scope = |a: &ScopeAction, verb: &str| match (&a.id, &a.partner) {
        (Some(id), _) => connection(id, verb),
        (None, Some(partner)) => format!("/v1/ops/partners/{partner}/{verb}"),
        (None, None) => format!("/v1/ops/{verb}"),
    };
    let (path, reason) = match &command {
        ActionCommand::Replay(a) => (connection(&a.id, "replay"), &a.reason),
        ActionCommand::Fail(a) => (connection(&a.id, "fail"), &a.reason),
        ActionCommand::ClearError(a) => (connection(&a.id, "clear-error"), &a.reason),
        ActionCommand::Pause(a) => (scope(a, "pause"), &a.reason),
        ActionCommand::Resume(a) => (scope(a, "resume"), &a.reason),
        ActionCommand::Pauses(_) => return remote.get("/v1/ops/pauses").await,
    };
    remote.post(&path, &body(reason)).await
}

pub(super) fn operator(target: &Target) -> Actor {
    operator_named(target.operator.clone())
}

/// The operator `name`, else `$USER` (when it is a valid name), else `cli`.
pub(super) fn operator_named(name: Option<String>) -> Actor {
    let name = name
        .or_else(|| {
            std::env::var("USER")
                .ok()
                .filter(|u| super::parse_operator(u).is_ok())
        })
        .unwrap_or_else(|| "cli".to_owned());
    Actor::new("ops", &name)
}

fn unchanged(changed: bool) -> &'static str {
    if changed {
        ""
    } else {
        " (already so: nothing changed)"
    }
}

/// What an answer is about, for [`said`].
#[derive(Debug, Clone)]
enum Said {
    Replay(ConnectionId),
    Failed(ConnectionId),
    Cleared(ConnectionId),
    Paused(Option<ConnectionId>),
    Resumed(Option<ConnectionId>, String),
    Pauses,
}

impl Said {
    fn of(command: &ActionCommand) -> Self {
        let key = |a: &ScopeAction| {
            a.partner
                .clone()
                .map_or(PauseScope::All, PauseScope::Partner)
                .key()
        };
        match command {
            ActionCommand::Replay(a) => Said::Replay(a.id),
            ActionCommand::Fail(a) => Said::Failed(a.id),
            ActionCommand::ClearError(a) => Said::Cleared(a.id),
            ActionCommand::Pause(a) => Said::Paused(a.id),
            ActionCommand::Resume(a) => Said::Resumed(a.id, key(a)),
            ActionCommand::Pauses(_) => Said::Pauses,
        }
    }
}

/// The answer (the API's JSON) for people.
fn said(what: Said, a: &Value) -> String {
    let changed = a["changed"] == true;
    match what {
        Said::Replay(id) => format!(
            "replay {id}: {} due at {}{}{}",
            text(&a["step"]),
            text(&a["dueAt"]),
            if a["leaseCleared"] == true {
                " (a transfer lease left behind was cleared)"
            } else {
                ""
            },
            unchanged(changed),
        ),
        Said::Failed(id) => format!("connection {id} is failed{}", unchanged(changed)),
        Said::Cleared(id) => format!(
            "connection {id}: error and failure streak cleared{}",
            unchanged(changed)
        ),
        Said::Paused(Some(id)) => format!(
            "connection {id} is paused{}{}",
            if a["transferStopped"] == true {
                " (its running transfer stops at its next write)"
            } else {
                ""
            },
            unchanged(changed)
        ),
        Said::Paused(None) => format!(
            "{} is paused since {} by {}{}",
            text(&a["pause"]["scope"]),
            text(&a["pause"]["since"]),
            text(&a["pause"]["actor"]),
            unchanged(changed)
        ),
        Said::Resumed(Some(id), _) => {
            format!("connection {id} is resumed{}", unchanged(changed))
        }
        Said::Resumed(None, scope) => format!(
            "{scope} is resumed: {} connection(s) with overdue work spread over the resume \
             window (workers.resume_spread_secs){}",
            a["rescheduled"],
            unchanged(changed)
        ),
        Said::Pauses => {
            let pauses: Vec<&Value> = items(&a["pauses"]).collect();
            let mut out = format!(
                "{} pause(s) in force; {} connection(s) paused on their own",
                pauses.len(),
                a["pausedConnections"]
            );
            for p in pauses {
                out.push_str(&format!(
                    "\n{:<40} since {} by {}: {}",
                    text(&p["scope"]),
                    text(&p["since"]),
                    text(&p["actor"]),
                    text(&p["reason"])
                ));
            }
            out
        }
    }
}

/// Performs the action against the database; the API's JSON answer.
async fn perform(
    store: &Store,
    command: ActionCommand,
    settings: &ActionSettings,
) -> anyhow::Result<Value> {
    Ok(match command {
        ActionCommand::Replay(a) => api::replay_json(
            store
                .replay(a.id, &operator(&a.target), &a.reason, settings)
                .await?,
        ),
        ActionCommand::Fail(a) => api::acted_json(
            store
                .fail_by_operator(a.id, &operator(&a.target), &a.reason)
                .await?,
        ),
        ActionCommand::ClearError(a) => api::acted_json(
            store
                .clear_error(a.id, &operator(&a.target), &a.reason)
                .await?,
        ),
        ActionCommand::Pause(a) => {
            let actor = operator(&a.target);
            match (a.id, a.partner) {
                (Some(id), _) => {
                    api::acted_json(store.pause_connection(id, &actor, &a.reason).await?)
                }
                (None, partner) => {
                    let scope = partner.map_or(PauseScope::All, PauseScope::Partner);
                    let (pause, changed) = store.pause(&scope, &actor, &a.reason).await?;
                    api::paused_json(pause, changed)
                }
            }
        }
        ActionCommand::Resume(a) => {
            let actor = operator(&a.target);
            match (a.id, a.partner) {
                (Some(id), _) => {
                    api::acted_json(store.resume_connection(id, &actor, &a.reason).await?)
                }
                (None, partner) => {
                    let scope = partner.map_or(PauseScope::All, PauseScope::Partner);
                    api::resumed_json(
                        store
                            .resume(&scope, &actor, &a.reason, settings.resume_spread)
                            .await?,
                    )
                }
            }
        }
        ActionCommand::Pauses(_) => {
            api::pauses_json(store.pauses().await?, store.paused_connections().await?)
        }
    })
}
