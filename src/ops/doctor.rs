//! `tributary ops doctor [--repair] [--json]` (docs/operations.md#doctor), against the
//! database or through a running server (`GET /v1/ops/doctor`, `POST /v1/ops/doctor/repair`).
//! The table is rendered from the API's JSON in both modes. Exit 0 when no violation remains,
//! 1 when some do (or on any other failure), 2 for configuration errors.

use std::path::Path;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::{
    json::{count, items, text},
    remote::{Remote, Source},
};
use crate::config::{CliOverrides, Config, LogConfig};

/// Flags of `ops doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Repair what is safe to repair, then check again.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON (as `GET /v1/ops/doctor` answers it) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: Source,
    /// The operator the journal names for repairs (`ops:<NAME>`); default $USER, else `cli`.
    /// Through a server, the token's subject.
    #[arg(long, value_name = "NAME", value_parser = super::parse_operator)]
    pub operator: Option<String>,
}

/// Violations remain after the run: exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0} violation(s) remain")]
pub struct ViolationsRemain(pub u64);

/// Runs `ops doctor`; `init_logging` sets up logging from the loaded configuration.
pub fn run(
    file: Option<&Path>,
    args: DoctorArgs,
    init_logging: fn(&LogConfig) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let report = if let Some(remote) = Remote::of(&args.source)? {
        runtime.block_on(async {
            if args.repair {
                remote
                    .post("/v1/ops/doctor/repair", &Value::Object(Default::default()))
                    .await
            } else {
                remote.get("/v1/ops/doctor").await
            }
        })?
    } else {
        let config = Config::load(
            file,
            CliOverrides {
                database_url: args.source.database_url.clone(),
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
        runtime.block_on(local(config, &args))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    let remaining = remaining(&report);
    if remaining > 0 {
        return Err(ViolationsRemain(remaining).into());
    }
    Ok(())
}

/// The doctor against the database, answered as the API would.
async fn local(config: Config, args: &DoctorArgs) -> anyhow::Result<Value> {
    let url = crate::serve::redact_url(&config.database.url);
    let (store, workflow) = super::open_store(&config).await?;
    let settings = workflow.doctor();
    let report = if args.repair {
        let operator = super::actions::operator_named(args.operator.clone());
        store.doctor_repair(&operator, &settings).await
    } else {
        store.doctor(store.clock().now(), &settings).await
    };
    store.close().await;
    let report = report.with_context(|| format!("the doctor failed on {url}"))?;
    Ok(api::doctor_json(report))
}

fn remaining(report: &Value) -> u64 {
    items(&report["violations"])
        .map(|v| count(&v["remaining"]))
        .sum()
}

/// The report for people: one row per violation, its description, what repair does, and its
/// sample ids.
pub fn table(report: &Value) -> String {
    let checked = items(&report["checked"]).count();
    let at = text(&report["checkedAt"]);
    if items(&report["violations"]).next().is_none() {
        return format!("doctor: every invariant holds ({checked} checked at {at})\n");
    }
    let repair = report["repair"] == true;
    let mut out = format!(
        "doctor: {checked} invariants checked at {at}{}\n\n{:<32} {:>7} {:>9} {:>10}\n",
        if repair { ", repaired" } else { "" },
        "CODE",
        "FOUND",
        "REPAIRED",
        "REMAINING"
    );
    for v in items(&report["violations"]) {
        let found = count(&v["count"]);
        out.push_str(&format!(
            "{:<32} {:>7} {:>9} {:>10}\n",
            text(&v["code"]),
            found,
            count(&v["repaired"]),
            count(&v["remaining"])
        ));
        out.push_str(&format!("    {}\n", text(&v["description"])));
        match v["repair"].as_str() {
            Some(repair) => out.push_str(&format!("    repair: {repair}\n")),
            None => out.push_str("    repair: none (report only; see docs/operations.md)\n"),
        }
        let sample: Vec<String> = items(&v["sample"]).map(text).collect();
        if !sample.is_empty() {
            let more = found.saturating_sub(sample.len() as u64);
            out.push_str(&format!(
                "    {}s: {}{}\n",
                text(&v["subject"]),
                sample.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ));
        }
    }
    let remaining = remaining(report);
    out.push_str(&if remaining == 0 {
        "\nno violation remains\n".to_owned()
    } else if repair {
        format!("\n{remaining} violation(s) remain\n")
    } else {
        format!(
            "\n{remaining} violation(s); `tributary ops doctor --repair` fixes the repairable ones\n"
        )
    });
    out
}
