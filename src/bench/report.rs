//! The results of `tributary bench` as Markdown (pasted into BENCHMARKS.md).

use super::{BenchArgs, Outcome};

pub(super) fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

/// The results as Markdown (pasted into BENCHMARKS.md).
pub(super) fn report(args: &BenchArgs, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "settings: seconds={} warmup={} lag_seconds={} lag_load={} concurrency={} batch_size={} pool={} poll_ms={}\n\n",
        args.seconds, args.warmup, args.lag_seconds, args.lag_load, args.concurrency,
        args.batch_size, args.pool, args.poll_ms
    ));
    out.push_str("| backend | N | procs | cycles/s | measured s | records/cycle | errors | lag load /s | lag p50 ms | lag p99 ms | lag max ms | unfinished | peak RSS MiB per worker |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0}{} | {:.1} | {:.1} | {} | {:.0} | {} | {} | {} | {}/{} | {} |\n",
            o.backend,
            o.n,
            o.processes,
            o.cycles_per_sec,
            if o.backlog_ran_out {
                " (backlog ran out)"
            } else {
                ""
            },
            o.measured_secs,
            o.records_per_cycle,
            o.errors,
            o.lag_rate,
            opt(o.lag_p50_ms, 0),
            opt(o.lag_p99_ms, 0),
            opt(o.lag_max_ms, 0),
            o.lag_unfinished,
            o.lag_count,
            o.rss_mib
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("\nfloors (same database, before the workers start):\n\n");
    out.push_str("| backend | N | raw SQL 1 loop /s | raw SQL C loops /s | apalis no-op jobs/s |\n|---|---:|---:|---:|---:|\n");
    for o in outcomes.iter().filter(|o| o.floor_sql_1.is_some()) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            o.backend,
            o.n,
            opt(o.floor_sql_1, 0),
            opt(o.floor_sql_c, 0),
            opt(o.floor_apalis, 0)
        ));
    }
    out.push_str(
        "\nratios (cycles/s ÷ floor, same backend and N, floors from that N's first run):\n\n",
    );
    out.push_str(
        "| backend | N | procs | ÷ raw SQL C loops | ÷ apalis no-op |\n|---|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        if let Some(f) = outcomes
            .iter()
            .find(|f| f.backend == o.backend && f.n == o.n && f.floor_sql_1.is_some())
        {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                o.backend,
                o.n,
                o.processes,
                opt(f.floor_sql_c.map(|x| o.cycles_per_sec / x), 2),
                opt(f.floor_apalis.map(|x| o.cycles_per_sec / x), 2)
            ));
        }
    }
    let refreshes: Vec<_> = outcomes
        .iter()
        .filter_map(|o| Some((o, o.refresh.as_ref()?)))
        .collect();
    if !refreshes.is_empty() {
        out.push_str(
            "\ntoken refreshes (refresh times spread over one token lifetime):\n\n| backend | N | procs | token lifetime | needed/s | achieved/s | refreshes | max late (< ½ margin left) | max expired before refresh | kills | outcome unknown | revoked for reuse | RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for (o, r) in refreshes {
            out.push_str(&format!(
                "| {} | {} | {} | {} s | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} |\n",
                o.backend,
                o.n,
                o.processes,
                r.lifetime_secs,
                r.needed_per_sec,
                r.achieved_per_sec,
                r.refreshes,
                r.max_late,
                r.max_expired,
                r.kills,
                r.outcome_unknown,
                r.reuse_revoked,
                o.rss_mib
                    .iter()
                    .map(|m| format!("{m:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
    }
    out
}
