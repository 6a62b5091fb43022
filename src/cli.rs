//! The command line: `serve`, `migrate`, `sandbox` and `token`.
//!
//! Configuration flags here are only the last layer over the TOML file and the environment (see
//! [`crate::config`]); everything else is configured there. Errors go to stderr; configuration
//! errors exit with status 2, other failures with 1.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use api::auth::{Role, validate_subject};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    config::{CONFIG_FILE_ENV, CliOverrides, Config, ConfigError, EnvVars, LogConfig},
    dev_secrets::DevSecretsInUse,
};

/// Tributary connects Tidepool to device partners' clouds over OAuth 2.0 and keeps the data
/// flowing with durable workflows.
///
/// Configuration is layered, later wins: built-in defaults, the TOML file given with --config,
/// environment variables TRIBUTARY_<SECTION>__<KEY> (e.g. TRIBUTARY_SERVER__LISTEN=0.0.0.0:9000,
/// TRIBUTARY_DATABASE__URL=postgres://…), and finally command-line flags. With no configuration
/// at all, `tributary serve` runs against ./tributary.db with a built-in simulated partner and
/// generated development secrets.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, arg_required_else_help = true)]
pub struct Cli {
    /// TOML configuration file. Its keys mirror the environment variables: [server] listen =
    /// "…" is TRIBUTARY_SERVER__LISTEN. Unknown keys are errors.
    #[arg(long, short = 'c', global = true, env = CONFIG_FILE_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the workflow workers until interrupted.
    ///
    /// Applies pending database migrations first. Unless --no-sandbox is given, the simulated
    /// partner is mounted under /sandbox and, when no partners are configured, two partners
    /// (a CGM and a pump) are configured against it, so the whole OAuth flow works locally.
    Serve(ServeArgs),
    /// Run the workers only (transfers, token refreshes, partner revocations), no HTTP API.
    ///
    /// Start any number of these against one PostgreSQL database to scale out; each connection
    /// is transferred by at most one worker at a time. Stops gracefully on SIGINT/SIGTERM.
    Worker(WorkerArgs),
    /// Apply pending database migrations and exit.
    ///
    /// `serve` does this too; run it separately to migrate before rolling out new instances.
    Migrate(MigrateArgs),
    /// Run the simulated partner (OAuth server and data API) on its own.
    ///
    /// Useful to point a separately running Tributary, or a test, at a partner that you control.
    /// Its OAuth clients redirect to the Tributary that the configuration describes
    /// (server.public_url, or http://<server.listen>), or to --tributary-url.
    Sandbox(SandboxArgs),
    /// Mint a development bearer token (JWT) and print it to stdout.
    ///
    /// Signed with the configured auth.jwt_secret, or with the development secret beside the
    /// database, found as `serve` finds it: run it in the server's working directory or give it
    /// the server's --config / --database-url. Only the token is printed, so `TOKEN=$(tributary
    /// token --role ops --subject alice)` works; use it as `Authorization: Bearer $TOKEN`.
    Token(TokenArgs),
    /// Operators' tools against the database: `ops doctor [--repair] [--json]` checks (and
    /// repairs) every invariant the engine relies on (docs/operations.md).
    Ops(crate::ops::OpsArgs),
    /// Benchmark the transfer pipeline against the sandbox (development only; see
    /// BENCHMARKS.md). Creates and drops its own databases.
    Bench(crate::bench::BenchArgs),
    /// Measure peak memory of transfers with large partner responses (development only; see
    /// BENCHMARKS.md, "Memory"), against the hostile partner, in this process.
    BenchMemory(crate::bench::memory::MemoryArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (server.listen), e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Database URL (database.url): sqlite://<path> or postgres://user:pass@host/db.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Do not mount the simulated partner or configure partners from it (sandbox.enabled =
    /// false).
    #[arg(long)]
    pub no_sandbox: bool,
    /// Serve the API only; run workers elsewhere (`tributary worker`).
    #[arg(long)]
    pub no_workers: bool,
}

/// `tributary worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Database URL (overrides database.url).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Database URL (database.url): sqlite://<path> or postgres://user:pass@host/db.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address and port the simulated partner listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Approve every consent screen as this user, without a browser (default:
    /// sandbox.auto_consent_user).
    #[arg(long, value_name = "USER")]
    pub auto_consent: Option<String>,
    /// The Tributary this sandbox serves: its clients' redirect URIs are
    /// <URL>/v1/oauth/<partner>/callback. Default: server.public_url of the configuration.
    #[arg(long, value_name = "URL")]
    pub tributary_url: Option<url::Url>,
}

/// Flags of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What the bearer may do.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Who the bearer is (the `sub` claim): a Tidepool user id for `user`, a service or person
    /// otherwise. 1-128 characters.
    #[arg(long, value_name = "ID", value_parser = parse_subject)]
    pub subject: String,
    /// How long the token is valid: a number with a unit s, m, h or d, combinable (90m, 1h30m,
    /// 7d). At most 365d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// A clinic the clinician belongs to (the `clinics` claim; repeat for several): they see
    /// and manage only these clinics' invitations. Only with `--role clinician`.
    #[arg(long = "clinic", value_name = "ID", value_parser = parse_clinic)]
    pub clinics: Vec<String>,
    /// Database URL (database.url); only used to find the development secrets file.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// `--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// A person connecting their own devices.
    User,
    /// Another Tidepool service acting on behalf of users.
    Service,
    /// A clinician viewing their patients' connections.
    Clinician,
    /// An operator inspecting and repairing workflows.
    Ops,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::User => Role::User,
            RoleArg::Service => Role::Service,
            RoleArg::Clinician => Role::Clinician,
            RoleArg::Ops => Role::Ops,
        }
    }
}

fn parse_clinic(s: &str) -> Result<String, String> {
    api::auth::validate_clinics(&[s.to_owned()]).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

fn parse_subject(s: &str) -> Result<String, String> {
    validate_subject(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// Longest `--ttl` accepted: development tokens should not outlive a year.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parse `90s`, `15m`, `24h`, `7d`, `1h30m`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration `{s}`: use e.g. 30m, 24h, 7d or 1h30m");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(invalid)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(invalid());
    }
    let ttl = Duration::from_secs(total);
    if ttl > MAX_TTL {
        return Err(format!("duration `{s}` is longer than 365d"));
    }
    Ok(ttl)
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(
                file,
                CliOverrides {
                    listen: args.listen,
                    database_url: args.database_url,
                    no_sandbox: args.no_sandbox,
                },
            )?;
            let mut config = config;
            if args.no_workers {
                config.workers.enabled = false;
            }
            init_logging(&config.log)?;
            runtime()?.block_on(crate::serve::serve(config))
        }
        Command::Worker(args) => {
            let config = Config::load(
                file,
                CliOverrides {
                    database_url: args.database_url,
                    ..CliOverrides::default()
                },
            )?;
            init_logging(&config.log)?;
            runtime()?.block_on(crate::serve::worker(config))
        }
        Command::Migrate(args) => {
            let config = Config::load(
                file,
                CliOverrides {
                    database_url: args.database_url,
                    ..CliOverrides::default()
                },
            )?;
            init_logging(&config.log)?;
            runtime()?.block_on(crate::serve::migrate(config))
        }
        Command::Sandbox(args) => {
            // No secrets are needed, so none are looked for or generated.
            let config = Config::resolve(file, EnvVars::from_process(), CliOverrides::default())?;
            init_logging(&config.log)?;
            let tributary_url = match args.tributary_url {
                Some(url) => url,
                None => config
                    .server
                    .public_url
                    .clone()
                    .unwrap_or_else(|| config.server.derived_public_url()),
            };
            let auto_consent = args.auto_consent.or(config.sandbox.auto_consent_user);
            runtime()?.block_on(crate::serve::standalone_sandbox(
                args.listen,
                tributary_url,
                auto_consent,
            ))
        }
        Command::Ops(args) => crate::ops::run(file, args, init_logging),
        Command::Bench(args) => {
            init_logging(&LogConfig {
                filter: "warn,sqlx=error".to_owned(),
                ..LogConfig::default()
            })?;
            runtime()?.block_on(crate::bench::run(args))
        }
        Command::BenchMemory(args) => {
            init_logging(&LogConfig {
                filter: "error".to_owned(),
                ..LogConfig::default()
            })?;
            runtime()?.block_on(crate::bench::memory::run(args))
        }
        Command::Token(args) => {
            let config = Config::load(
                file,
                CliOverrides {
                    database_url: args.database_url,
                    ..CliOverrides::default()
                },
            )?;
            if let Some(in_use) = config.dev_secrets_in_use.as_ref().filter(|d| d.generated) {
                eprintln!("{}", new_secrets_note(in_use, &config.database.url));
            }
            let keys = config.auth.jwt_keys()?;
            // The service would refuse a longer-lived token; better to say so now.
            if args.ttl > keys.max_lifetime() {
                return Err(ConfigError::invalid(
                    "auth.max_token_lifetime_secs",
                    format!(
                        "`--ttl` of {} s is longer than the {} s a token may live",
                        args.ttl.as_secs(),
                        keys.max_lifetime().as_secs()
                    ),
                )
                .into());
            }
            if !args.clinics.is_empty() && args.role != RoleArg::Clinician {
                return Err(ConfigError::invalid(
                    "",
                    "`--clinic` names a clinician's clinics: use it with `--role clinician`",
                )
                .into());
            }
            if args.clinics.len() > api::auth::MAX_CLINICS {
                return Err(ConfigError::invalid(
                    "",
                    format!("at most {} `--clinic`s", api::auth::MAX_CLINICS),
                )
                .into());
            }
            let token =
                keys.mint_for_clinics(args.role.into(), &args.subject, &args.clinics, args.ttl);
            println!("{token}");
            Ok(())
        }
    }
}

/// `token` created development secrets rather than finding the server's: a server started
/// elsewhere has its own and rejects this token.
fn new_secrets_note(in_use: &DevSecretsInUse, database_url: &str) -> String {
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".to_owned());
    format!(
        "note: no development secrets were found at {path} (the secrets file of database.url \
         {database_url}, in {cwd}), so new ones were created there.\n\
         note: a server running with another working directory or database has its own \
         secrets and will reject this token (401). Run `tributary token` in the server's \
         working directory, or give it the server's --config or --database-url.",
        path = in_use.path.display(),
        database_url = crate::serve::redact_url(database_url),
    )
}

/// 2 for configuration errors (like clap's usage errors), 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<ConfigError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs go to stderr so that stdout carries only command output.
fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    crate::logging::init(log)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "24",
            "h",
            "0s",
            "1x",
            "-1h",
            "366d",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
