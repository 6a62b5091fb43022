//! The worker processes of a bench run: their configuration file, their peak memory, stopping
//! them.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use base64::Engine as _;
use rand::RngCore as _;
use sandbox::{Flavor, Sandbox};

use super::{BenchArgs, PARTNER, db::uuid_suffix, webhooks::BenchHooks};

/// The configuration every worker process loads: the bench database, the bench keyring, the
/// sandbox CGM partner at the bench's sandbox with overlap 0 and no client-side rate limit;
/// with `hooks`, the bench's webhook receiver as `[webhooks.bench]`; without `runs`, no step
/// runs recorded.
pub(super) fn write_worker_config(
    args: &BenchArgs,
    dir: &Path,
    url: &str,
    key: &[u8; 32],
    sandbox: &Sandbox,
    (hooks, runs): (Option<&BenchHooks>, bool),
) -> anyhow::Result<PathBuf> {
    let mut toml = worker_config_toml(
        url,
        key,
        sandbox,
        &WorkerToml {
            partner: PARTNER,
            database: &format!("max_connections = {}\nbusy_timeout_ms = 30000", args.pool),
            workers: &format!(
                "concurrency = {}\nbatch_size = {}\npoll_interval_ms = {}\ndispatch_batch = 500\nrecord_step_runs = {runs}{}",
                args.concurrency,
                args.batch_size,
                args.poll_ms,
                if args.kill_every_secs.is_some() {
                    "\nstale_refresh_secs = 10"
                } else {
                    ""
                }
            ),
            log_filter: "warn,sqlx=error",
            partner_settings: "requests_per_second = 1000000.0\ntransfer.overlap_secs = 0",
        },
    )?;
    if let Some(hooks) = hooks {
        toml.push_str(&hooks.toml());
    }
    let path = dir.join(format!("worker-{}.toml", uuid_suffix()));
    let mut file = std::fs::File::create(&path)?;
    file.write_all(toml.as_bytes())?;
    Ok(path)
}

/// Starts a `tributary worker` on `config`, its log in `dir`.
pub(super) fn spawn_worker(exe: &Path, config: &Path, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("worker-{}.log", uuid_suffix())))?;
    Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("worker")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("cannot start a worker process")
}

/// What differs between the worker configurations [`worker_config_toml`] writes: extra keys
/// (TOML lines) of `[database]`, `[workers]` and the partner's table, and the log filter.
#[derive(Debug, Clone, Copy)]
pub struct WorkerToml<'a> {
    /// The partner's name (its table is `[partners.<partner>]`).
    pub partner: &'a str,
    pub database: &'a str,
    pub workers: &'a str,
    pub log_filter: &'a str,
    pub partner_settings: &'a str,
}

/// A `tributary worker` configuration against database `url` and an in-process sandbox's CGM
/// partner: no dev secrets, a fresh JWT secret, the keyring `k1 = key`, the sandbox not
/// mounted (the bench and `tests/processes/` start workers with it).
pub fn worker_config_toml(
    url: &str,
    key: &[u8; 32],
    sandbox: &Sandbox,
    extra: &WorkerToml<'_>,
) -> anyhow::Result<String> {
    let urls = sandbox.urls(Flavor::Cgm);
    let client = sandbox
        .config()
        .clients
        .iter()
        .find(|c| c.flavor == Flavor::Cgm)
        .context("the sandbox has a CGM client")?;
    let auth = match client.auth_method {
        sandbox::ClientAuthMethod::Basic => "client_secret_basic",
        sandbox::ClientAuthMethod::Post => "client_secret_post",
    };
    let mut jwt = [0u8; 32];
    rand::rng().fill_bytes(&mut jwt);
    let b64 = base64::engine::general_purpose::STANDARD;
    let WorkerToml {
        partner,
        database,
        workers,
        log_filter,
        partner_settings,
    } = extra;
    Ok(format!(
        r#"dev_secrets = false

[database]
url = "{url}"
{database}

[auth]
jwt_secret = "{jwt}"

[crypto]
active_key_id = "k1"
[crypto.keys]
k1 = "{key}"

[sandbox]
enabled = false

[workers]
{workers}

[log]
filter = "{log_filter}"

[partners.{partner}]
display_name = "Sandbox CGM"
kind = "dexcom"
client_id = "{client_id}"
client_secret = "{client_secret}"
client_auth = "{auth}"
authorize_url = "{authorize}"
token_url = "{token}"
revoke_url = "{revoke}"
redirect_url = "http://127.0.0.1:1/v1/oauth/{partner}/callback"
scopes = ["offline_access"]
api_base_url = "{api}"
{partner_settings}
"#,
        jwt = b64.encode(jwt),
        key = b64.encode(key),
        client_id = client.client_id,
        client_secret = client.client_secret,
        authorize = urls.authorize,
        token = urls.token,
        revoke = urls.revoke,
        api = urls.api_base,
    ))
}

/// Peak resident set size of a process, from `/proc/<pid>/status` (`VmHWM`), in MiB.
pub(super) fn vm_hwm_mib(pid: u32) -> f64 {
    proc_status_mib(&pid.to_string(), "VmHWM:")
}

/// A memory field of `/proc/<pid>/status` (`pid` may be `self`), in MiB; NaN when unreadable.
pub(super) fn proc_status_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| f64::from_str(kb).ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// SIGTERM (graceful), then SIGKILL after 5 s.
pub(super) async fn stop_children(children: Vec<Child>) {
    for child in &children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for mut child in children {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}
