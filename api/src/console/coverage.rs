//! A connection's coverage on its page (docs/coverage.md#coverage): of the last 14 days, what
//! it fetched and committed, what it did not and why, and per data type the stretches without
//! a record, so "the partner had no data" and "we failed to fetch" look different.

use std::{fmt::Write as _, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    model::Connection,
    store::{Coverage, Store, TimeSpan, Unfetched},
};

use super::html::{esc, opt_time, time};

/// The range shown: the last 14 days (the API's default).
const DAYS: i64 = 14;
/// Stretches without a record longer than this are shown (the API's default).
const GAP: Duration = Duration::from_secs(3600);
/// Empty stretches listed per type (the longest); the rest are counted.
const EMPTY_SHOWN: usize = 3;

/// The coverage of the last [`DAYS`] days, read.
pub async fn read(
    store: &Store,
    connection: &Connection,
) -> engine::store::Result<Option<Coverage>> {
    let now = store.clock().now();
    let Ok(range) = TimeSpan::checked(now - TimeDelta::days(DAYS), now, now) else {
        return Ok(None);
    };
    store.coverage(connection, range, GAP).await.map(Some)
}

fn span(s: &TimeSpan) -> String {
    format!("{} – {}", time(s.start), time(s.end))
}

/// A time in a table cell: month, day, hour and minute (the year and zone are the page's).
fn short(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339(),
        at.format("%m-%d %H:%M")
    )
}

fn hours(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let minutes = (end - start).num_minutes().max(0);
    if minutes >= 120 {
        format!("{} h", minutes / 60)
    } else {
        format!("{minutes} min")
    }
}

/// The coverage section.
pub fn render(out: &mut String, coverage: Option<&Coverage>) {
    out.push_str("<h2 id=\"coverage-h\">Coverage</h2>");
    let Some(c) = coverage else {
        out.push_str("<p class=\"help\">No coverage for this range.</p>");
        return;
    };
    let _ = write!(
        out,
        "<p class=\"help\">The last {DAYS} days ({}); stretches over {} without a record are listed.</p>\
         <dl class=\"facts\" id=\"coverage\"><div><dt>Fetched</dt><dd>{}</dd></div>",
        span(&c.range),
        super::html::duration(c.gap),
        c.fetched
            .as_ref()
            .map_or_else(|| "<span class=\"none\">nothing</span>".to_owned(), span),
    );
    for (s, why) in &c.unfetched {
        let detail = match why {
            Unfetched::BeforeFirstWindow => {
                "before its first committed window (before its backfill)".to_owned()
            }
            Unfetched::NeverFetched => "it never committed a window".to_owned(),
            Unfetched::Pending {
                next_sync_at,
                failing_since,
                last_error_code,
            } => {
                let mut text = format!(
                    "newer than the cursor: the next transfer reads it ({})",
                    opt_time(*next_sync_at)
                );
                if let Some(since) = failing_since {
                    let _ = write!(text, "; transfers failing since {}", time(*since));
                }
                if let Some(code) = last_error_code {
                    let _ = write!(text, ", last error <code>{}</code>", esc(code));
                }
                text
            }
        };
        let _ = write!(
            out,
            "<div><dt>Not fetched <code>{}</code></dt><dd>{}: {detail}</dd></div>",
            why.code(),
            span(s)
        );
    }
    out.push_str("</dl>");
    if c.types.is_empty() {
        out.push_str("<p>No stored record in the fetched part.</p>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Data type</th><th scope=\"col\" class=\"num\">Records</th>\
         <th scope=\"col\">First</th><th scope=\"col\">Last</th><th scope=\"col\">Stretches without a record (UTC; the partner had none)</th></tr></thead><tbody>",
    );
    for t in &c.types {
        // The longest stretches first: they are the ones worth a look.
        let mut longest: Vec<&TimeSpan> = t.empty.iter().collect();
        longest.sort_by_key(|s| std::cmp::Reverse(s.end - s.start));
        let shown: Vec<String> = longest
            .iter()
            .take(EMPTY_SHOWN)
            .map(|s| {
                format!(
                    "{} → {} ({})",
                    short(s.start),
                    short(s.end),
                    hours(s.start, s.end)
                )
            })
            .collect();
        let empty = match t.empty.len() {
            0 => "none".to_owned(),
            n => format!("{n}; the longest: {}", shown.join(", ")),
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{empty}</td></tr>",
            esc(&t.datum_type),
            t.records,
            short(t.first),
            short(t.last),
        );
    }
    out.push_str("</tbody></table></div>");
}
