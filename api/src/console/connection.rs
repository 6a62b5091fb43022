//! `/ops/connections/{id}`: one connection (docs/console.md#console): its state, schedule,
//! pause, last error and stuck reasons, the forms of the actions, its step runs and its journal
//! as a timeline, newest first.

use std::fmt::Write as _;

use engine::{
    ids::ConnectionId,
    model::{Connection, JournalEntry},
    store::{ConnectionFilter, Coverage, StepRun, StuckReason},
};
use poem::{
    Request, Response,
    http::StatusCode,
    web::{Data, Path, Query},
};
use serde::Deserialize;

use super::{
    BASE, Console,
    actions::{ACTIONS, flash},
    html::{self, duration, esc, opt_time, time},
    session::{Session, to_login},
};

/// Journal entries shown, newest first.
const JOURNAL_SHOWN: usize = 200;
/// Step runs shown, newest first.
const RUNS_SHOWN: u64 = 50;

/// What the last action did, as its redirect names it.
#[derive(Debug, Default, Deserialize)]
pub struct FlashQuery {
    done: Option<String>,
    changed: Option<String>,
    refused: Option<String>,
}

/// The connection of a path segment, or the page saying there is none.
pub fn parse_id(raw: &str) -> Option<ConnectionId> {
    raw.parse()
        .ok()
        .filter(|id: &ConnectionId| id.to_string() == raw)
}

pub fn not_found(session: &Session) -> Response {
    html::page(
        StatusCode::NOT_FOUND,
        "Not found",
        Some(session),
        "",
        None,
        &format!(
            "<h1>No such connection</h1><p><a href=\"{BASE}/connections\">All connections</a></p>"
        ),
    )
}

#[poem::handler]
pub async fn show(
    req: &Request,
    Data(console): Data<&Console>,
    Path(raw): Path<String>,
    Query(q): Query<FlashQuery>,
) -> Response {
    let Some(session) = console.session(req) else {
        return to_login();
    };
    let Some(id) = parse_id(&raw) else {
        return not_found(&session);
    };
    let store = console.workflows.store();
    let read = async {
        let connection = store.get(id).await?;
        // The stuck reasons of this one: the list of its user's connections to its partner
        // (a handful of rows, on the user's index) evaluates them exactly as the list does.
        let filter = ConnectionFilter {
            user: Some(connection.user_id.clone()),
            partner: Some(connection.partner.clone()),
            ..ConnectionFilter::default()
        };
        let settings = console.workflows.settings().stuck();
        let page = store
            .list_connections(&filter, None, 1000, store.clock().now(), &settings)
            .await?;
        let stuck = page
            .connections
            .into_iter()
            .find(|l| l.connection.id == id)
            .map(|l| l.stuck)
            .unwrap_or_default();
        let journal = store.journal(id).await?;
        let runs = store.step_runs(&id, None, RUNS_SHOWN).await?;
        let coverage = super::coverage::read(store, &connection).await?;
        Ok::<_, engine::StoreError>((connection, stuck, journal, runs, coverage))
    };
    match read.await {
        Ok((connection, stuck, journal, runs, coverage)) => {
            let flash = flash(
                q.done.as_deref(),
                q.changed.as_deref(),
                q.refused.as_deref(),
            );
            let body = render(
                &session,
                &connection,
                &stuck,
                &journal,
                &runs,
                coverage.as_ref(),
            );
            html::page(
                StatusCode::OK,
                "Connection",
                Some(&session),
                "",
                flash.as_ref(),
                &body,
            )
        }
        Err(engine::StoreError::NotFound) => not_found(&session),
        Err(err) => super::store_failed(&session, &err),
    }
}

fn row(out: &mut String, label: &str, value: &str) {
    let _ = write!(out, "<div><dt>{}</dt><dd>{value}</dd></div>", esc(label));
}

fn render(
    session: &Session,
    c: &Connection,
    stuck: &[StuckReason],
    journal: &[JournalEntry],
    runs: &[(i64, StepRun)],
    coverage: Option<&Coverage>,
) -> String {
    let mut out = format!(
        "<p class=\"crumbs\"><a href=\"{BASE}/connections\">Connections</a> ›</p>\
         <h1>Connection <span class=\"mono\">{id}</span></h1><div class=\"columns\"><section>\
         <h2>State</h2><dl class=\"facts\" id=\"facts\">",
        id = c.id
    );
    row(
        &mut out,
        "State",
        &format!(
            "<span class=\"badge {0}\" id=\"state\">{0}</span>",
            c.state.as_str()
        ),
    );
    row(&mut out, "User", &esc(c.user_id.as_str()));
    row(&mut out, "Partner", &esc(c.partner.as_str()));
    row(
        &mut out,
        "Paused",
        if c.paused {
            "<strong>yes</strong>"
        } else {
            "no"
        },
    );
    row(&mut out, "Next transfer", &opt_time(c.next_sync_at));
    row(&mut out, "Last transfer", &opt_time(c.last_sync_at));
    row(&mut out, "Refresh due", &opt_time(c.refresh_due_at));
    row(&mut out, "Token expires", &opt_time(c.token_expires_at));
    row(&mut out, "Data through", &opt_time(c.fetched_through));
    row(&mut out, "Newest data", &opt_time(c.latest_data_time));
    row(
        &mut out,
        "Last error",
        &c.last_error.as_ref().map_or_else(
            || "<span class=\"none\">none</span>".to_owned(),
            |e| format!("<code>{}</code> {}", esc(&e.code), esc(&e.message)),
        ),
    );
    row(
        &mut out,
        "Failure streak",
        &match c.failing_since {
            Some(since) => format!("{} transfers, since {}", c.failure_count, time(since)),
            None => "none".to_owned(),
        },
    );
    row(&mut out, "State since", &time(c.state_changed_at));
    row(&mut out, "Version", &c.version.to_string());
    out.push_str("</dl><h2>Stuck</h2>");
    if stuck.is_empty() {
        out.push_str("<p id=\"stuck-reasons\" data-stuck=\"false\">Not stuck: nothing holds this connection.</p>");
    } else {
        out.push_str("<ul id=\"stuck-reasons\" data-stuck=\"true\">");
        for r in stuck {
            let _ = write!(
                out,
                "<li><span class=\"badge stuck\">{}</span> {}</li>",
                r.as_str(),
                esc(r.description())
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    actions(&mut out, session, c);
    out.push_str("</div>");
    super::coverage::render(&mut out, coverage);
    runs_table(&mut out, runs);
    timeline(&mut out, journal);
    out
}

fn actions(out: &mut String, session: &Session, c: &Connection) {
    out.push_str(
        "<section aria-labelledby=\"actions-h\"><h2 id=\"actions-h\">Actions</h2><p class=\"help\">Each \
         action is journaled with you as actor and its reason (one line, no token, secret or email \
         address). Asked twice, it writes once.</p>",
    );
    for action in ACTIONS {
        let _ = write!(
            out,
            "<form class=\"action card\" method=\"post\" action=\"{BASE}/connections/{id}/{name}\" id=\"{name}-form\">\
             {csrf}<p><label for=\"{name}-reason\">Reason to {verb}</label>\
             <input id=\"{name}-reason\" name=\"reason\" type=\"text\" required maxlength=\"500\" \
             autocomplete=\"off\" aria-describedby=\"{name}-help\"></p><p id=\"{name}-help\" class=\"help\">{help}</p>\
             <p><button type=\"submit\" id=\"{name}-submit\" class=\"{class}\">{label}</button></p></form>",
            id = c.id,
            name = action.name,
            verb = action.verb,
            help = action.help,
            label = action.label,
            class = if action.destructive { "danger" } else { "" },
            csrf = session.csrf_field(),
        );
    }
    out.push_str("</section>");
}

fn runs_table(out: &mut String, runs: &[(i64, StepRun)]) {
    let _ = write!(
        out,
        "<h2 id=\"runs-h\">Step runs</h2><p class=\"help\">The newest {RUNS_SHOWN}.</p>"
    );
    if runs.is_empty() {
        out.push_str("<p id=\"runs\" data-count=\"0\">No step has run yet.</p>");
        return;
    }
    let _ = write!(
        out,
        "<div class=\"scroll\"><table id=\"runs\" data-count=\"{}\"><thead><tr><th scope=\"col\">Ended</th>\
         <th scope=\"col\">Step</th><th scope=\"col\">Outcome</th><th scope=\"col\" class=\"num\">Took</th>\
         <th scope=\"col\" class=\"num\">Inserted</th><th scope=\"col\" class=\"num\">Updated</th>\
         <th scope=\"col\" class=\"num\">Unchanged</th><th scope=\"col\" class=\"num\">Skipped</th>\
         <th scope=\"col\" class=\"num\">Windows</th><th scope=\"col\">Partner answers</th><th scope=\"col\">Error</th>\
         </tr></thead><tbody>",
        runs.len()
    );
    for (run_id, run) in runs {
        let statuses = run
            .statuses
            .iter()
            .map(|(s, n)| format!("{}×{n}", esc(s)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            out,
            "<tr data-run=\"{run_id}\" data-step=\"{step}\" data-outcome=\"{outcome}\" data-finished=\"{finished}\">\
             <td>{}</td><td>{step}</td><td>{outcome}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{statuses}</td><td>{}</td></tr>",
            time(run.finished_at),
            duration(run.duration()),
            run.counts.inserted,
            run.counts.updated,
            run.counts.unchanged,
            run.counts.skipped,
            run.counts.windows,
            run.error_code
                .as_deref()
                .map_or_else(String::new, |e| format!("<code>{}</code>", esc(e))),
            step = run.step.as_str(),
            outcome = esc(&run.outcome),
            finished = run.finished_at.to_rfc3339(),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn timeline(out: &mut String, journal: &[JournalEntry]) {
    let _ = write!(
        out,
        "<h2 id=\"journal-h\">Journal</h2><p class=\"help\">Every change, newest first ({} entries{}).</p>\
         <ol class=\"timeline\" id=\"journal\" aria-labelledby=\"journal-h\">",
        journal.len(),
        if journal.len() > JOURNAL_SHOWN {
            format!(", the newest {JOURNAL_SHOWN} shown")
        } else {
            String::new()
        }
    );
    for e in journal.iter().rev().take(JOURNAL_SHOWN) {
        let change = match e.from {
            Some(from) if from != e.to => format!("{} → {}", from.as_str(), e.to.as_str()),
            Some(_) => format!("stays {}", e.to.as_str()),
            None => format!("created, {}", e.to.as_str()),
        };
        let details = match &e.details {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(map) if map.is_empty() => String::new(),
            details => format!("<pre class=\"details\">{}</pre>", esc(&details.to_string())),
        };
        let reason = e.reason.as_deref().map_or_else(String::new, |r| {
            format!("<p class=\"reason\">“{}”</p>", esc(r))
        });
        let _ = write!(
            out,
            "<li data-event=\"{event}\" data-actor=\"{actor}\"><div class=\"when\">{}<span class=\"seq\">#{}</span></div>\
             <div class=\"what\"><strong>{event}</strong> <span class=\"change\">{}</span> \
             <span class=\"actor\">by {actor}</span>{reason}{details}</div></li>",
            time(e.at),
            e.seq,
            esc(&change),
            event = esc(&e.event),
            actor = esc(&e.actor),
        );
    }
    out.push_str("</ol>");
}
