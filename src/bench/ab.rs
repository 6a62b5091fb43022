//! `--ab-webhooks` and `--ab-runs`: per configuration, round k's run without a feature beside
//! round k's run with it, alternating in one bench run (so the machine's drift hits both), and
//! the mean ratio with its range and each side's spread.

use super::{Outcome, report::opt};

/// The A/B table of `outcomes`, whose "with" side is where `with` holds.
pub(super) fn report(outcomes: &[Outcome], feature: &str, with: fn(&Outcome) -> bool) -> String {
    let mut configs: Vec<(&str, usize, usize)> = Vec::new();
    for o in outcomes {
        let key = (o.backend, o.n, o.processes);
        if !configs.contains(&key) {
            configs.push(key);
        }
    }
    let mut rounds = format!(
        "\nA/B of {feature}, alternating in one process run (without, then with, each round):\n\n\
         | backend | N | procs | round | without cycles/s | with cycles/s | with ÷ without | events accepted | pending at end | step runs written (without / with) | CPU ms per cycle, bench · workers · PostgreSQL (without → with) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut summary = String::from(
        "\n| backend | N | procs | rounds | mean without | mean with | mean ratio (min–max) | without spread | with spread |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (backend, n, processes) in configs {
        let runs: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| (o.backend, o.n, o.processes) == (backend, n, processes))
            .collect();
        let (withs, withouts): (Vec<&Outcome>, Vec<&Outcome>) =
            runs.into_iter().partition(|o| with(o));
        let mut ratios = Vec::new();
        for (k, (a, b)) in withouts.iter().zip(&withs).enumerate() {
            let ratio = b.cycles_per_sec / a.cycles_per_sec;
            ratios.push(ratio);
            let h = b.webhooks.as_ref().map(|h| (h.accepted, h.pending_end));
            rounds.push_str(&format!(
                "| {backend} | {n} | {processes} | {} | {:.0} | {:.0} | {ratio:.3} | {} | {} | {} / {} | {} → {} |\n",
                k + 1,
                a.cycles_per_sec,
                b.cycles_per_sec,
                opt(h.map(|h| h.0 as f64), 0),
                opt(h.map(|h| h.1 as f64), 0),
                a.runs_written,
                b.runs_written,
                cpu_text(a.cpu),
                cpu_text(b.cpu),
            ));
        }
        let without: Vec<f64> = withouts.iter().map(|o| o.cycles_per_sec).collect();
        let with: Vec<f64> = withs.iter().map(|o| o.cycles_per_sec).collect();
        summary.push_str(&format!(
            "| {backend} | {n} | {processes} | {} | {} | {} | {} ({}–{}) | {} | {} |\n",
            ratios.len(),
            opt(mean(&without), 0),
            opt(mean(&with), 0),
            opt(mean(&ratios), 3),
            opt(ratios.iter().copied().reduce(f64::min), 3),
            opt(ratios.iter().copied().reduce(f64::max), 3),
            spread(&without),
            spread(&with),
        ));
    }
    rounds + &summary
}

/// `bench · workers · PostgreSQL` CPU milliseconds per cycle.
fn cpu_text(cpu: Option<super::cpu::CpuPerCycle>) -> String {
    cpu.map_or_else(
        || "—".to_owned(),
        |c| format!("{:.2} · {:.2} · {:.2}", c.bench, c.workers, c.postgres),
    )
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `±x %`: half the range over the mean.
fn spread(values: &[f64]) -> String {
    let (Some(lo), Some(hi), Some(m)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
        mean(values),
    ) else {
        return "—".to_owned();
    };
    format!("±{:.1} %", (hi - lo) / 2.0 / m * 100.0)
}
