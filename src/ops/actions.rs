//! `tributary ops replay|pause|resume|fail|clear-error|pauses`: the operators' actions
//! (docs/actions.md#actions) straight against the database, as the API does them: the same
//! store methods, the same checked reason, the operator (`--operator`, default `$USER`, else
//! `cli`) as actor. Exit 0 when done or already so, 1 when refused or on any other failure,
//! 2 for a usage or configuration error (a bad reason is refused before the database is
//! opened).

use std::path::Path;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand};
use engine::{
    Store,
    ids::{ConnectionId, PartnerName},
    model::Actor,
    store::{ActionSettings, PauseScope, Reason},
};

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
    /// Database URL (overrides database.url).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The operator the journal names (`ops:<NAME>`); default $USER, else `cli`.
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
    let config = Config::load(
        file,
        CliOverrides {
            database_url: target.database_url.clone(),
            ..CliOverrides::default()
        },
    )?;
    init_logging(&config.log)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(act(config, command))
}

async fn act(config: Config, command: ActionCommand) -> anyhow::Result<()> {
    let (store, workflow) = super::open_store(&config).await?;
    let settings = workflow.actions();
    let outcome = perform(&store, command, &settings).await;
    store.close().await;
    println!("{}", outcome?);
    Ok(())
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

/// Performs the action; what to print.
async fn perform(
    store: &Store,
    command: ActionCommand,
    settings: &ActionSettings,
) -> anyhow::Result<String> {
    Ok(match command {
        ActionCommand::Replay(a) => {
            let r = store
                .replay(a.id, &operator(&a.target), &a.reason, settings)
                .await?;
            format!(
                "replay {}: {} due at {}{}{}",
                a.id,
                r.step.as_str(),
                r.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                if r.lease_cleared {
                    " (a transfer lease left behind was cleared)"
                } else {
                    ""
                },
                unchanged(r.changed),
            )
        }
        ActionCommand::Fail(a) => {
            let done = store
                .fail_by_operator(a.id, &operator(&a.target), &a.reason)
                .await?;
            format!("connection {} is failed{}", a.id, unchanged(done.changed))
        }
        ActionCommand::ClearError(a) => {
            let done = store
                .clear_error(a.id, &operator(&a.target), &a.reason)
                .await?;
            format!(
                "connection {}: error and failure streak cleared{}",
                a.id,
                unchanged(done.changed)
            )
        }
        ActionCommand::Pause(a) => {
            let actor = operator(&a.target);
            match (a.id, a.partner) {
                (Some(id), _) => {
                    let done = store.pause_connection(id, &actor, &a.reason).await?;
                    format!(
                        "connection {id} is paused{}{}",
                        if done.transfer_stopped {
                            " (its running transfer stops at its next write)"
                        } else {
                            ""
                        },
                        unchanged(done.changed)
                    )
                }
                (None, partner) => {
                    let scope = partner.map_or(PauseScope::All, PauseScope::Partner);
                    let (pause, changed) = store.pause(&scope, &actor, &a.reason).await?;
                    format!(
                        "{} is paused since {} by {}{}",
                        pause.scope.key(),
                        pause
                            .since
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        pause.actor,
                        unchanged(changed)
                    )
                }
            }
        }
        ActionCommand::Resume(a) => {
            let actor = operator(&a.target);
            match (a.id, a.partner) {
                (Some(id), _) => {
                    let done = store.resume_connection(id, &actor, &a.reason).await?;
                    format!("connection {id} is resumed{}", unchanged(done.changed))
                }
                (None, partner) => {
                    let scope = partner.map_or(PauseScope::All, PauseScope::Partner);
                    let done = store
                        .resume(&scope, &actor, &a.reason, settings.resume_spread)
                        .await?;
                    format!(
                        "{} is resumed: {} connection(s) with overdue work spread over {} s{}",
                        scope.key(),
                        done.rescheduled,
                        settings.resume_spread.as_secs(),
                        unchanged(done.changed)
                    )
                }
            }
        }
        ActionCommand::Pauses(_) => {
            let pauses = store.pauses().await?;
            let mut out = format!(
                "{} pause(s) in force; {} connection(s) paused on their own",
                pauses.len(),
                store.paused_connections().await?
            );
            for p in pauses {
                out.push_str(&format!(
                    "\n{:<40} since {} by {}: {}",
                    p.scope.key(),
                    p.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    p.actor,
                    p.reason
                ));
            }
            out
        }
    })
}
