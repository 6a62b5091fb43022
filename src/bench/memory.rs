//! `tributary bench-memory`: peak memory of transfers with large partner responses (see
//! BENCHMARKS.md, "Memory"). In one process: the hostile partner serving a body of EGVs of the
//! size asked, the service on an SQLite file, connections made through the OAuth flow, then
//! (1) one transfer of a `--body-mib` body, (2) `--concurrent` transfers at once of a
//! `--concurrent-body-mib` body each. For each phase, the process's resident set before and
//! its peak during (`VmHWM`, reset through `/proc/self/clear_refs` at the start of the phase),
//! so the figure is what the transfers added, whatever the process held before (the partner's
//! own copy of the body included).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use clap::Args;
use rand::RngCore as _;
use sandbox::hostile::{Hostile, Reply};
use workflows::fetch::FetchReport;

use super::{
    hostile::{HOSTILE, connect, hostile_partner},
    proc_status_mib,
};
use crate::{config::Config, serve::Application};

/// Flags of `bench-memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Body of the single large transfer, in MiB.
    #[arg(long, default_value_t = 50)]
    pub body_mib: usize,
    /// Transfers run at once in the second phase.
    #[arg(long, default_value_t = 64)]
    pub concurrent: usize,
    /// Body of each concurrent transfer, in MiB.
    #[arg(long, default_value_t = 8)]
    pub concurrent_body_mib: usize,
    /// The process's response budget (workers.response_memory_bytes), in MiB.
    #[arg(long, default_value_t = 256)]
    pub budget_mib: usize,
    /// Database (default: an SQLite file in a temporary directory); a PostgreSQL database
    /// given here gets the bench's tables and connections, and is not dropped.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// `tributary bench-memory`.
pub async fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hostile = Hostile::spawn().await?;
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.database.url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("memory.db").display()));
    config.dev_secrets = true;
    config.sandbox.enabled = false;
    config.workers.enabled = false;
    config.workers.response_memory_bytes = args.budget_mib << 20;
    config.log.filter = "error".to_owned();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    config.auth.jwt_secret = Some(b64.encode(secret).into());
    rand::rng().fill_bytes(&mut secret);
    config.crypto.active_key_id = Some("k1".to_owned());
    config
        .crypto
        .keys
        .insert("k1".to_owned(), b64.encode(secret).into());
    let mut partner = hostile_partner(&hostile.base);
    partner.max_response_bytes = (args.body_mib.max(args.concurrent_body_mib) + 8) << 20;
    config.partners.insert(HOSTILE.to_owned(), partner);

    let app = Application::build(config).await?.without_dispatch();
    let base = app.base_url();
    let jwt = app.jwt().clone();
    let workflows = app.workflows().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    println!("| phase | bodies | process before | peak during | added | added ÷ bound | time |");
    println!("|---|---|---|---|---|---|---|");
    // Phase 1: one large body.
    connect(&base, &jwt, "memory-one").await?;
    let body = egv_body(args.body_mib << 20);
    let body_len = body.len();
    hostile.script(|s| drop(s.data.insert("egvs".into(), Reply::json(body))));
    let (before, peak, secs, records) = phase(&workflows, 1).await?;
    println!(
        "| one transfer | 1 × {:.1} MiB ({records} records) | {before:.0} MiB | {peak:.0} MiB | {:.0} MiB | {:.2} × the body | {secs:.1} s |",
        body_len as f64 / MIB,
        peak - before,
        (peak - before) * MIB / body_len as f64,
    );

    // Phase 2: many at once, within the budget.
    for i in 0..args.concurrent {
        connect(&base, &jwt, &format!("memory-{i}")).await?;
    }
    let body = egv_body(args.concurrent_body_mib << 20);
    let body_len = body.len();
    hostile.script(|s| drop(s.data.insert("egvs".into(), Reply::json(body))));
    let (before, peak, secs, records) = phase(&workflows, args.concurrent).await?;
    println!(
        "| {n} at once, budget {b} MiB | {n} × {:.1} MiB ({records} records) | {before:.0} MiB | {peak:.0} MiB | {:.0} MiB | {:.2} × the budget | {secs:.1} s |",
        body_len as f64 / MIB,
        peak - before,
        (peak - before) / args.budget_mib as f64,
        n = args.concurrent,
        b = args.budget_mib,
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// Claims `n` due connections and runs their transfers at once: (RSS before, peak RSS during,
/// seconds, records stored).
async fn phase(workflows: &workflows::Workflows, n: usize) -> anyhow::Result<(f64, f64, f64, u64)> {
    let claimed = workflows
        .store()
        .claim_due(n as u64, Duration::from_secs(600))
        .await?;
    anyhow::ensure!(
        claimed.len() == n,
        "{} of {n} connections due",
        claimed.len()
    );
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let before = proc_status_mib("self", "VmRSS:");
    let started = Instant::now();
    let runs: Vec<_> = claimed
        .into_iter()
        .map(|c| {
            let workflows = workflows.clone();
            tokio::spawn(async move { workflows.run_fetch(c.id, c.version).await })
        })
        .collect();
    let mut records = 0;
    for run in runs {
        match run.await?? {
            FetchReport::Completed { stats, .. } => records += stats.inserted,
            other => anyhow::bail!("a transfer did not complete: {other:?}"),
        }
    }
    Ok((
        before,
        proc_status_mib("self", "VmHWM:"),
        started.elapsed().as_secs_f64(),
        records,
    ))
}

/// A Dexcom EGV list of about `bytes`, one reading every 10 s back from a minute ago.
fn egv_body(bytes: usize) -> Vec<u8> {
    let mut body = b"{\"recordType\":\"egv\",\"recordVersion\":\"3.0\",\"records\":[".to_vec();
    let newest = Utc::now() - TimeDelta::minutes(1);
    let mut i = 0i64;
    while body.len() < bytes {
        if i > 0 {
            body.push(b',');
        }
        let at = (newest - TimeDelta::seconds(10 * i)).format("%Y-%m-%dT%H:%M:%S");
        body.extend_from_slice(
            format!(
                r#"{{"recordId":"egv-{i:08}","systemTime":"{at}","displayTime":"{at}","transmitterId":"80AB12","transmitterTicks":{i},"value":{v},"status":null,"trend":"flat","trendRate":0.1,"unit":"mg/dL","rateUnit":"mg/dL/min","displayDevice":"iOS","transmitterGeneration":"g7"}}"#,
                v = 70 + i % 150
            )
            .as_bytes(),
        );
        i += 1;
    }
    body.extend_from_slice(b"]}");
    body
}
