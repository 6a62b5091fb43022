//! `/ops`: the fleet at a glance (docs/console.md#console): the summary's numbers, the
//! charts, connections by partner and state, the circuit breakers, stuck connections by
//! reason, errors by code, the last hour's runs and the queue.

use std::{fmt::Write as _, time::Duration};

use chrono::TimeDelta;
use engine::{
    state::State,
    store::{OpsSummary, RunSeries},
};
use poem::{Request, Response, http::StatusCode, web::Data};

use super::{
    BASE, Console,
    charts::{Chart, Series, line_chart},
    html::{self, duration, esc, opt_time, query_value},
    samples::Sample,
    session::to_login,
};

/// The run series' buckets: 24 of an hour.
const BUCKETS: u32 = 24;
const BUCKET: Duration = Duration::from_secs(3600);

#[poem::handler]
pub async fn show(req: &Request, Data(console): Data<&Console>) -> Response {
    let Some(session) = console.session(req) else {
        return to_login();
    };
    let store = console.workflows.store();
    let now = store.clock().now();
    let settings = console.workflows.settings().stuck();
    let read = async {
        let summary = store.ops_summary(now, &settings).await?;
        let runs = store.run_series(now, BUCKET, BUCKETS).await?;
        Ok::<_, engine::StoreError>((summary, runs))
    };
    match read.await {
        Ok((summary, runs)) => {
            let mut samples = console.samples.snapshot();
            // The page's own reading is the newest point.
            samples.push(Sample::of(&summary));
            let body = render(&summary, &samples, &runs);
            html::page(
                StatusCode::OK,
                "Summary",
                Some(&session),
                "summary",
                None,
                &body,
            )
        }
        Err(err) => super::store_failed(&session, &err),
    }
}

fn card(label: &str, value: &str, href: Option<&str>) -> String {
    let value = match href {
        Some(href) => format!("<a href=\"{href}\">{value}</a>"),
        None => value.to_owned(),
    };
    format!(
        "<div class=\"stat\"><dt>{}</dt><dd>{value}</dd></div>",
        esc(label)
    )
}

fn render(summary: &OpsSummary, samples: &[Sample], runs: &RunSeries) -> String {
    let mut out = format!(
        "<h1>Summary</h1><p class=\"help\">The fleet as of {}.</p><dl class=\"stats\">",
        html::time(summary.at)
    );
    let stuck_href = format!("{BASE}/connections?stuck=true");
    let lag = summary
        .oldest_due
        .map_or_else(|| "none".to_owned(), duration);
    for (label, value, href) in [
        ("Connections", summary.total.to_string(), None),
        (
            "Stuck",
            summary.stuck_connections.to_string(),
            Some(stuck_href.as_str()),
        ),
        ("Due now", summary.due_now.to_string(), None),
        ("Overdue", summary.overdue.to_string(), None),
        ("Scheduling lag", lag, None),
        ("In flight", summary.in_flight.to_string(), None),
        ("Claimed", summary.claimed.to_string(), None),
        ("Paused", summary.paused.to_string(), None),
    ] {
        out.push_str(&card(label, &esc(&value), href));
    }
    out.push_str("</dl>");
    charts(&mut out, samples, runs);
    partner_states(&mut out, summary);
    breakers(&mut out, summary);
    stuck_and_errors(&mut out, summary);
    runs_and_queue(&mut out, summary);
    out
}

fn charts(out: &mut String, samples: &[Sample], runs: &RunSeries) {
    let since = "One sample a minute since this process started (at most the last 24 h), and now.";
    let (from, to) = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => (first.at.min(last.at - TimeDelta::minutes(1)), last.at),
        _ => return,
    };
    let states: Vec<Series> = State::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| samples.iter().any(|s| s.by_state[*i] > 0))
        .map(|(i, state)| Series {
            label: state.as_str().to_owned(),
            points: samples
                .iter()
                .map(|s| (s.at, s.by_state[i] as f64))
                .collect(),
        })
        .collect();
    let lag = vec![Series {
        label: "lag".to_owned(),
        points: samples.iter().map(|s| (s.at, s.lag_secs as f64)).collect(),
    }];
    let width = TimeDelta::from_std(runs.width).unwrap_or(TimeDelta::hours(1));
    let end = runs.start + width * i32::try_from(BUCKETS).unwrap_or(24);
    let bucket_points = |f: &dyn Fn(&engine::store::RunBucket) -> u64,
                         series: &[engine::store::RunBucket]| {
        series
            .iter()
            .enumerate()
            .map(|(i, b)| (runs.start + width * (i as i32 + 1), f(b) as f64))
            .collect::<Vec<_>>()
    };
    let throughput: Vec<Series> = runs
        .partners
        .iter()
        .map(|(partner, series)| Series {
            label: partner.clone(),
            points: bucket_points(&|b| b.records, series),
        })
        .collect();
    let errors: Vec<Series> = runs
        .partners
        .iter()
        .map(|(partner, series)| Series {
            label: partner.clone(),
            points: bucket_points(&|b| b.errors, series),
        })
        .collect();
    let runs_caption = "Step runs per hour over the last 24 h, from the step_runs table (kept \
                        workers.run_retention_days), by the partner of their connection.";
    out.push_str("<h2>Over time</h2><div class=\"charts\">");
    out.push_str(&line_chart(
        &Chart {
            id: "chart-states",
            title: "Connections by state",
            caption: since,
            unit: "",
        },
        from,
        to,
        &states,
    ));
    out.push_str(&line_chart(
        &Chart {
            id: "chart-throughput",
            title: "Fetch throughput (records stored per hour)",
            caption: runs_caption,
            unit: "",
        },
        runs.start,
        end,
        &throughput,
    ));
    out.push_str(&line_chart(
        &Chart {
            id: "chart-lag",
            title: "Scheduling lag (the transfer due longest)",
            caption: since,
            unit: " s",
        },
        from,
        to,
        &lag,
    ));
    out.push_str(&line_chart(
        &Chart {
            id: "chart-errors",
            title: "Errors by partner (runs ending in an error, per hour)",
            caption: runs_caption,
            unit: "",
        },
        runs.start,
        end,
        &errors,
    ));
    out.push_str("</div>");
}

fn partner_states(out: &mut String, summary: &OpsSummary) {
    out.push_str(
        "<h2 id=\"by-partner\">Connections by partner and state</h2><div class=\"scroll\">\
         <table><thead><tr><th scope=\"col\">Partner</th>",
    );
    for state in State::ALL {
        let _ = write!(
            out,
            "<th scope=\"col\" class=\"num\">{}</th>",
            state.as_str()
        );
    }
    out.push_str("</tr></thead><tbody>");
    let mut partners: Vec<&str> = summary
        .by_partner_state
        .iter()
        .map(|c| c.partner.as_str())
        .collect();
    partners.dedup();
    if partners.is_empty() {
        out.push_str("<tr><td colspan=\"7\">No connections yet.</td></tr>");
    }
    for partner in partners {
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", esc(partner));
        for state in State::ALL {
            let n = summary
                .by_partner_state
                .iter()
                .find(|c| c.partner == partner && c.state == state)
                .map_or(0, |c| c.count);
            let _ = write!(
                out,
                "<td class=\"num\"><a href=\"{BASE}/connections?partner={}&amp;state={}\">{n}</a></td>",
                query_value(partner),
                state.as_str()
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

fn breakers(out: &mut String, summary: &OpsSummary) {
    out.push_str("<h2 id=\"breakers\">Partner circuit breakers</h2>");
    if summary.breakers.is_empty() {
        out.push_str("<p>No partner's breaker ever tripped: every partner is closed.</p>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Partner</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Opened</th><th scope=\"col\">Next probe</th><th scope=\"col\" class=\"num\">Failed probes</th>\
         <th scope=\"col\">Probe connection</th></tr></thead><tbody>",
    );
    for b in &summary.breakers {
        let probe = b.probe_connection.as_deref().map_or_else(
            || "—".to_owned(),
            |id| format!("<a href=\"{BASE}/connections/{0}\">{0}</a>", esc(id)),
        );
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td><span class=\"badge {state}\">{state}</span></td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{probe}</td></tr>",
            esc(&b.partner),
            opt_time(b.opened_at),
            opt_time(b.probe_at),
            b.probes,
            state = b.state.as_str(),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn stuck_and_errors(out: &mut String, summary: &OpsSummary) {
    out.push_str(
        "<div class=\"columns\"><section><h2 id=\"stuck\">Stuck, by reason</h2><table><thead><tr>\
         <th scope=\"col\">Reason</th><th scope=\"col\" class=\"num\">Connections</th></tr></thead><tbody>",
    );
    for (reason, n) in &summary.stuck {
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"{BASE}/connections?reason={code}\">{code}</a>\
             <div class=\"help\">{}</div></th><td class=\"num\">{n}</td></tr>",
            esc(reason.description()),
            code = reason.as_str(),
        );
    }
    out.push_str(
        "</tbody></table></section><section><h2 id=\"errors\">Last errors, by code</h2><table><thead><tr>\
         <th scope=\"col\">Error code</th><th scope=\"col\" class=\"num\">Connections</th></tr></thead><tbody>",
    );
    if summary.errors.is_empty() {
        out.push_str("<tr><td colspan=\"2\">No connection has an error.</td></tr>");
    }
    for (code, n) in &summary.errors {
        let _ = write!(
            out,
            "<tr><th scope=\"row\"><a href=\"{BASE}/connections?error={}\">{}</a></th><td class=\"num\">{n}</td></tr>",
            query_value(code),
            esc(code)
        );
    }
    out.push_str("</tbody></table></section></div>");
}

fn runs_and_queue(out: &mut String, summary: &OpsSummary) {
    out.push_str(
        "<h2 id=\"last-hour\">The last hour's step runs, and the queue</h2><div class=\"scroll\"><table><thead><tr>\
         <th scope=\"col\">Step</th><th scope=\"col\" class=\"num\">Runs</th><th scope=\"col\" class=\"num\">With an error</th>\
         <th scope=\"col\" class=\"num\">Records inserted</th><th scope=\"col\" class=\"num\">Records updated</th>\
         <th scope=\"col\" class=\"num\">Jobs queued or running</th></tr></thead><tbody>",
    );
    for (step, runs) in &summary.last_hour {
        let queued = summary
            .queue
            .iter()
            .find(|q| q.step == *step)
            .map_or(0, |q| q.pending);
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{queued}</td></tr>",
            step.as_str(),
            runs.runs,
            runs.errors,
            runs.inserted,
            runs.updated
        );
    }
    out.push_str("</tbody></table></div>");
}
