//! `/ops/connections`: the connection list with the API's filters (docs/operations.md#connection-list)
//! as a form that works without script, each row with its stuck reasons, keyset-paged by a
//! "next page" link.

use std::fmt::Write as _;

use engine::{
    ids::{PartnerName, UserId},
    state::State,
    store::{ConnectionFilter, ConnectionPage, StuckFilter, StuckReason},
};
use poem::{
    Request, Response,
    http::StatusCode,
    web::{Data, Query},
};
use serde::Deserialize;

use super::{
    BASE, Console,
    html::{self, esc, opt_time, query_value},
    session::to_login,
};
use crate::fleet::{decode_cursor, encode_cursor};

/// Connections per page.
const PAGE: u64 = 50;

/// The list's query: the API's filters, each optional; an empty value (a form's "any") is no
/// filter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    partner: Option<String>,
    user: Option<String>,
    paused: Option<String>,
    error: Option<String>,
    stuck: Option<String>,
    // Named apart from the bulk form's own `reason` (the journal's).
    #[serde(rename = "stuck_reason", alias = "reason")]
    reason: Option<String>,
    cursor: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn flag(value: Option<&str>, name: &str) -> Result<Option<bool>, String> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(format!("`{name}` is true, false or empty")),
    }
}

impl ListQuery {
    pub fn filter(&self) -> Result<ConnectionFilter, String> {
        let state = given(&self.state)
            .map(|s| {
                s.parse::<State>()
                    .map_err(|_| "`state` is not a state".to_owned())
            })
            .transpose()?;
        let partner = given(&self.partner)
            .map(|p| PartnerName::parse(p).map_err(|e| e.to_string()))
            .transpose()?;
        let user = given(&self.user)
            .map(|u| UserId::parse(u).map_err(|e| e.to_string()))
            .transpose()?;
        let error = given(&self.error).map(str::to_owned);
        if error.as_ref().is_some_and(|e| {
            e.len() > 64
                || !e
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        }) {
            return Err("`error` is an error code (letters, digits, _ . : -)".to_owned());
        }
        let reason = given(&self.reason)
            .map(|r| {
                StuckReason::parse(r).ok_or_else(|| "`reason` is not a stuck reason".to_owned())
            })
            .transpose()?;
        let stuck = StuckFilter::from_parts(flag(given(&self.stuck), "stuck")?, reason)
            .map_err(|e| e.to_string())?;
        Ok(ConnectionFilter {
            state,
            partner,
            user,
            paused: flag(given(&self.paused), "paused")?,
            error,
            stuck,
        })
    }

    /// These filters as hidden fields of a form (the bulk form's; the stuck reason under its own
    /// name, apart from the form's reason).
    pub fn hidden_fields(&self) -> String {
        [
            ("state", &self.state),
            ("partner", &self.partner),
            ("user", &self.user),
            ("paused", &self.paused),
            ("error", &self.error),
            ("stuck", &self.stuck),
            ("stuck_reason", &self.reason),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            given(v).map(|v| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        })
        .collect()
    }

    /// The query string of these filters (no cursor), each value encoded.
    pub fn filters_query(&self) -> String {
        [
            ("state", &self.state),
            ("partner", &self.partner),
            ("user", &self.user),
            ("paused", &self.paused),
            ("error", &self.error),
            ("stuck", &self.stuck),
            ("reason", &self.reason),
        ]
        .into_iter()
        .filter_map(|(k, v)| given(v).map(|v| format!("{k}={}", query_value(v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

#[poem::handler]
pub async fn list(
    req: &Request,
    Data(console): Data<&Console>,
    Query(query): Query<ListQuery>,
) -> Response {
    let Some(session) = console.session(req) else {
        return to_login();
    };
    let current = if given(&query.stuck) == Some("true") {
        "stuck"
    } else {
        "connections"
    };
    let mut body = String::from("<h1>Connections</h1>");
    form(&mut body, console, &query);
    let filter = query.filter();
    let after = given(&query.cursor).map(decode_cursor).transpose();
    let (filter, after) = match (filter, after) {
        (Ok(filter), Ok(after)) => (filter, after),
        (Err(message), _) => {
            let _ = write!(
                body,
                "<p class=\"flash refused\" role=\"alert\">{}</p>",
                esc(&message)
            );
            return html::page(
                StatusCode::BAD_REQUEST,
                "Connections",
                Some(&session),
                current,
                None,
                &body,
            );
        }
        (_, Err(problem)) => {
            let _ = write!(
                body,
                "<p class=\"flash refused\" role=\"alert\">{}</p>",
                esc(&problem.detail)
            );
            return html::page(
                StatusCode::BAD_REQUEST,
                "Connections",
                Some(&session),
                current,
                None,
                &body,
            );
        }
    };
    let store = console.workflows.store();
    let settings = console.workflows.settings().stuck();
    match store
        .list_connections(&filter, after, PAGE, store.clock().now(), &settings)
        .await
    {
        Ok(page) => {
            table(&mut body, &page, &query);
            super::bulk::form(&mut body, &session, &query);
            html::page(
                StatusCode::OK,
                "Connections",
                Some(&session),
                current,
                None,
                &body,
            )
        }
        Err(err) => super::store_failed(&session, &err),
    }
}

fn select(
    out: &mut String,
    name: &str,
    label: &str,
    chosen: Option<&str>,
    options: &[(&str, &str)],
) {
    let _ = write!(
        out,
        "<p><label for=\"f-{name}\">{label}</label><select id=\"f-{name}\" name=\"{name}\">"
    );
    for (value, text) in options {
        let selected = if chosen.unwrap_or("") == *value {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{}\"{selected}>{}</option>",
            esc(value),
            esc(text)
        );
    }
    out.push_str("</select></p>");
}

fn text(out: &mut String, name: &str, label: &str, value: Option<&str>, placeholder: &str) {
    let _ = write!(
        out,
        "<p><label for=\"f-{name}\">{label}</label><input id=\"f-{name}\" name=\"{name}\" type=\"text\" \
         value=\"{}\" placeholder=\"{placeholder}\" spellcheck=\"false\"></p>",
        esc(value.unwrap_or(""))
    );
}

fn form(out: &mut String, console: &Console, q: &ListQuery) {
    let _ = write!(
        out,
        "<form class=\"filters card\" method=\"get\" action=\"{BASE}/connections\" role=\"search\" \
         aria-label=\"Filter connections\"><div class=\"fields\">"
    );
    let mut states = vec![("", "any")];
    states.extend(State::ALL.iter().map(|s| (s.as_str(), s.as_str())));
    select(out, "state", "State", given(&q.state), &states);
    let partners: Vec<String> = console
        .workflows
        .partners()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let mut options = vec![("", "any")];
    options.extend(partners.iter().map(|p| (p.as_str(), p.as_str())));
    select(out, "partner", "Partner", given(&q.partner), &options);
    text(out, "user", "User id", given(&q.user), "any");
    let yes_no = [("", "any"), ("true", "yes"), ("false", "no")];
    select(out, "paused", "Paused", given(&q.paused), &yes_no);
    text(out, "error", "Last error code", given(&q.error), "any");
    select(out, "stuck", "Stuck", given(&q.stuck), &yes_no);
    let mut reasons = vec![("", "any")];
    reasons.extend(StuckReason::ALL.iter().map(|r| (r.as_str(), r.as_str())));
    select(out, "reason", "Stuck reason", given(&q.reason), &reasons);
    let _ = write!(
        out,
        "</div><p class=\"buttons\"><button type=\"submit\" id=\"apply-filters\">Apply filters</button> \
         <a class=\"button secondary\" href=\"{BASE}/connections\">Clear</a></p></form>"
    );
}

fn table(out: &mut String, page: &ConnectionPage, q: &ListQuery) {
    if page.connections.is_empty() {
        out.push_str("<p id=\"no-results\">No connection matches these filters.</p>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"connections\"><thead><tr><th scope=\"col\">Connection</th>\
         <th scope=\"col\">User</th><th scope=\"col\">Partner</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Paused</th><th scope=\"col\">Last error</th><th scope=\"col\">Next transfer</th>\
         <th scope=\"col\">Stuck because</th></tr></thead><tbody>",
    );
    for listed in &page.connections {
        let c = &listed.connection;
        let reasons = if listed.stuck.is_empty() {
            "<span class=\"none\">—</span>".to_owned()
        } else {
            listed
                .stuck
                .iter()
                .map(|r| {
                    format!(
                        "<span class=\"badge stuck\" title=\"{}\">{}</span>",
                        esc(r.description()),
                        r.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = write!(
            out,
            "<tr data-id=\"{id}\"><td><a class=\"mono\" href=\"{BASE}/connections/{id}\">{id}</a></td><td>{}</td>\
             <td>{}</td><td><span class=\"badge {state}\">{state}</span></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"reasons\">{reasons}</td></tr>",
            esc(c.user_id.as_str()),
            esc(c.partner.as_str()),
            if c.paused { "yes" } else { "no" },
            c.last_error.as_ref().map_or_else(
                || "<span class=\"none\">—</span>".to_owned(),
                |e| esc(&e.code)
            ),
            opt_time(c.next_sync_at),
            id = c.id,
            state = c.state.as_str(),
        );
    }
    out.push_str("</tbody></table></div>");
    if let Some(next) = page.next {
        let filters = q.filters_query();
        let sep = if filters.is_empty() { "" } else { "&amp;" };
        let _ = write!(
            out,
            "<p><a id=\"next-page\" href=\"{BASE}/connections?{}{sep}cursor={}\">Next page</a></p>",
            esc(&filters),
            query_value(&encode_cursor(&next))
        );
    }
}
