//! Bulk actions in the console (docs/actions.md#bulk-actions): from the list page, one of the
//! connection actions on every connection its filters match, in two steps as the API has them.
//! `POST /ops/bulk` is the dry run: it answers a page with the count, a sample and a
//! confirmation form; `POST /ops/bulk/confirm` carries the confirmation and acts on exactly the
//! connections the dry run stored, then shows what it did.
//!
//! The dry run's confirmation token never appears in a page: the confirmation form carries it
//! sealed (XOR with an HMAC-SHA256 key stream under the console's key, bound to the session
//! and a fresh nonce), so only a process sharing the JWT secret, for this session, can open it.

use std::fmt::Write as _;

use engine::store::{
    BULK_SAMPLE, BulkAction, BulkError, BulkPlan, BulkResult, BulkSettings, Reason,
};
use hmac::{Hmac, Mac as _};
use poem::{
    Request, Response,
    http::StatusCode,
    web::{Data, Form},
};
use serde::Deserialize;
use sha2::Sha256;

use super::{
    BASE, Console,
    html::{self, esc, opt_time, time},
    list::ListQuery,
    session::{Session, forbidden, to_login},
};

/// The bulk form under the list (its filters as hidden fields).
pub fn form(out: &mut String, session: &Session, query: &ListQuery) {
    let _ = write!(
        out,
        "<form class=\"card bulk\" method=\"post\" action=\"{BASE}/bulk\" id=\"bulk-form\">\
         <h2>Bulk action on every connection matching these filters</h2>\
         <p class=\"help\">First a dry run: it shows how many connections the action would touch and a \
         sample, and stores exactly those; nothing changes until you confirm.</p>{}{}<div class=\"fields\">\
         <p><label for=\"bulk-action\">Action</label><select id=\"bulk-action\" name=\"action\">",
        session.csrf_field(),
        query.hidden_fields(),
    );
    for action in BulkAction::ALL {
        let _ = write!(out, "<option value=\"{0}\">{0}</option>", action.as_str());
    }
    out.push_str(
        "</select></p><p class=\"wide\"><label for=\"bulk-reason\">Reason</label><input id=\"bulk-reason\" \
         name=\"reason\" type=\"text\" required maxlength=\"500\" autocomplete=\"off\"></p></div>\
         <p><button type=\"submit\" id=\"bulk-dry-run\">Dry run</button></p></form>",
    );
}

#[derive(Debug, Deserialize)]
pub struct DryRunForm {
    csrf: Option<String>,
    action: Option<String>,
    reason: Option<String>,
    #[serde(flatten)]
    filters: ListQuery,
}

#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    csrf: Option<String>,
    action: Option<String>,
    reason: Option<String>,
    nonce: Option<String>,
    sealed: Option<String>,
}

fn settings(console: &Console) -> BulkSettings {
    console.workflows.settings().bulk()
}

/// The key stream of `len` bytes for a session and a nonce.
fn key_stream(console: &Console, session: &Session, nonce: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u32;
    while out.len() < len {
        let mut mac = Hmac::<Sha256>::new_from_slice(&console.csrf_key).expect("any key length");
        mac.update(b"ops-console-bulk:");
        mac.update(session.csrf_value().as_bytes());
        mac.update(nonce.as_bytes());
        mac.update(&block.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        block += 1;
    }
    out.truncate(len);
    out
}

fn seal(console: &Console, session: &Session, token: &str) -> (String, String) {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let stream = key_stream(console, session, &nonce, token.len());
    let sealed: Vec<u8> = token.bytes().zip(stream).map(|(a, b)| a ^ b).collect();
    (nonce, hex::encode(sealed))
}

fn open(console: &Console, session: &Session, nonce: &str, sealed: &str) -> Option<String> {
    let sealed = hex::decode(sealed).ok()?;
    let stream = key_stream(console, session, nonce, sealed.len());
    String::from_utf8(sealed.iter().zip(stream).map(|(a, b)| a ^ b).collect()).ok()
}

fn refused(session: &Session, status: StatusCode, text: &str) -> Response {
    html::page(
        status,
        "Bulk action",
        Some(session),
        "connections",
        Some(&html::Flash {
            ok: false,
            text: text.to_owned(),
        }),
        &format!(
            "<h1>Bulk action</h1><p><a href=\"{BASE}/connections\">Back to the connections</a></p>"
        ),
    )
}

fn bulk_error(session: &Session, err: &BulkError) -> Response {
    let status = match err {
        BulkError::TooMany { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        BulkError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::CONFLICT,
    };
    if let BulkError::Store(e) = err {
        tracing::warn!(error = %e, "a console bulk action failed");
        return refused(
            session,
            status,
            "The database could not be read or written; nothing was done.",
        );
    }
    refused(session, status, &format!("Refused ({}): {err}", err.code()))
}

/// Session, CSRF, action and reason of a bulk form, or the answer refusing it.
fn check(
    console: &Console,
    req: &Request,
    csrf: Option<&str>,
    action: Option<&str>,
    reason: Option<&str>,
) -> Result<(Session, BulkAction, Reason), Box<Response>> {
    if !console.origin_ok(req) {
        return Err(Box::new(forbidden(None)));
    }
    let session = console.session(req).ok_or_else(|| Box::new(to_login()))?;
    if !session.csrf_ok(csrf) {
        return Err(Box::new(forbidden(Some(&session))));
    }
    let Some(action) = action.and_then(BulkAction::parse) else {
        return Err(Box::new(refused(
            &session,
            StatusCode::BAD_REQUEST,
            "Choose one of the actions.",
        )));
    };
    let Ok(reason) = Reason::parse(reason.unwrap_or_default()) else {
        return Err(Box::new(refused(
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Refused: the reason must be one line of 1 to 500 characters, without a token, secret or email address.",
        )));
    };
    Ok((session, action, reason))
}

#[poem::handler]
pub async fn dry_run(
    req: &Request,
    Data(console): Data<&Console>,
    Form(form): Form<DryRunForm>,
) -> Response {
    let (session, action, reason) = match check(
        console,
        req,
        form.csrf.as_deref(),
        form.action.as_deref(),
        form.reason.as_deref(),
    ) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let filter = match form.filters.filter() {
        Ok(filter) => filter,
        Err(message) => return refused(&session, StatusCode::BAD_REQUEST, &message),
    };
    let store = console.workflows.store();
    match store
        .plan_bulk(
            action,
            &filter,
            &reason,
            &session.actor(),
            &settings(console),
        )
        .await
    {
        Ok(plan) => confirm_page(console, &session, &plan, &reason, &form.filters),
        Err(err) => bulk_error(&session, &err),
    }
}

fn confirm_page(
    console: &Console,
    session: &Session,
    plan: &BulkPlan,
    reason: &Reason,
    filters: &ListQuery,
) -> Response {
    let (nonce, sealed) = seal(console, session, &plan.token);
    let back = format!("{BASE}/connections?{}", esc(&filters.filters_query()));
    let mut body = format!(
        "<h1>Bulk {action}: dry run</h1><p id=\"bulk-count\" data-count=\"{count}\">This would {action} \
         <strong>{count}</strong> connection{s}: the ones the filters match now, stored with this dry run. \
         A connection that starts matching later is not touched. The confirmation expires at {expires}.</p>",
        action = plan.action.as_str(),
        count = plan.count,
        s = if plan.count == 1 { "" } else { "s" },
        expires = time(plan.expires_at),
    );
    if !plan.sample.is_empty() {
        let _ = write!(
            body,
            "<h2>Sample (the first {BULK_SAMPLE})</h2><div class=\"scroll\"><table><thead><tr><th scope=\"col\">Connection</th>\
             <th scope=\"col\">User</th><th scope=\"col\">Partner</th><th scope=\"col\">State</th><th scope=\"col\">Next transfer</th>\
             </tr></thead><tbody>"
        );
        for c in &plan.sample {
            let _ = write!(
                body,
                "<tr><td><a class=\"mono\" href=\"{BASE}/connections/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
                 <td><span class=\"badge {state}\">{state}</span></td><td>{}</td></tr>",
                esc(c.user_id.as_str()),
                esc(c.partner.as_str()),
                opt_time(c.next_sync_at),
                id = c.id,
                state = c.state.as_str(),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let _ = write!(
        body,
        "<form class=\"card\" method=\"post\" action=\"{BASE}/bulk/confirm\" id=\"bulk-confirm-form\">{csrf}\
         <input type=\"hidden\" name=\"action\" value=\"{action}\"><input type=\"hidden\" name=\"reason\" value=\"{reason}\">\
         <input type=\"hidden\" name=\"nonce\" value=\"{nonce}\"><input type=\"hidden\" name=\"sealed\" value=\"{sealed}\">\
         <p>Reason: “{reason}”</p><p class=\"buttons\"><button type=\"submit\" class=\"danger\" id=\"bulk-confirm\">\
         Confirm: {action} {count} connection{s}</button> <a class=\"button secondary\" href=\"{back}\" id=\"bulk-cancel\">Cancel</a></p></form>",
        csrf = session.csrf_field(),
        action = plan.action.as_str(),
        reason = esc(reason.as_str()),
        count = plan.count,
        s = if plan.count == 1 { "" } else { "s" },
    );
    html::page(
        StatusCode::OK,
        "Bulk dry run",
        Some(session),
        "connections",
        None,
        &body,
    )
}

#[poem::handler]
pub async fn confirm(
    req: &Request,
    Data(console): Data<&Console>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    let (session, action, reason) = match check(
        console,
        req,
        form.csrf.as_deref(),
        form.action.as_deref(),
        form.reason.as_deref(),
    ) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let token = match (form.nonce.as_deref(), form.sealed.as_deref()) {
        (Some(nonce), Some(sealed)) => open(console, &session, nonce, sealed),
        _ => None,
    };
    let Some(token) = token else {
        return refused(
            &session,
            StatusCode::BAD_REQUEST,
            "This confirmation is not one this console made; make a new dry run.",
        );
    };
    let store = console.workflows.store();
    match store
        .execute_bulk(
            &token,
            action,
            &session.actor(),
            Some(&reason),
            &settings(console),
        )
        .await
    {
        Ok(result) => result_page(&session, action, &result),
        Err(err) => bulk_error(&session, &err),
    }
}

fn result_page(session: &Session, action: BulkAction, r: &BulkResult) -> Response {
    let mut body = format!(
        "<h1>Bulk {action}: done</h1><dl class=\"stats\" id=\"bulk-result\">\
         <div class=\"stat\"><dt>Changed</dt><dd id=\"bulk-acted\">{}</dd></div>\
         <div class=\"stat\"><dt>Already so</dt><dd>{}</dd></div>\
         <div class=\"stat\"><dt>Refused</dt><dd>{}</dd></div>\
         <div class=\"stat\"><dt>Gone since the dry run</dt><dd>{}</dd></div></dl>",
        r.acted,
        r.already,
        r.refused,
        r.gone,
        action = action.as_str(),
    );
    if !r.refusals.is_empty() {
        body.push_str("<h2>Refused, by code</h2><ul>");
        for (code, n) in &r.refusals {
            let _ = write!(body, "<li><code>{}</code>: {n}</li>", esc(code));
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<p><a href=\"{BASE}/connections\">Back to the connections</a></p>"
    );
    let flash = html::Flash {
        ok: true,
        text: format!(
            "Bulk {}: {} changed, every change journaled with you as actor.",
            action.as_str(),
            r.acted
        ),
    };
    html::page(
        StatusCode::OK,
        "Bulk result",
        Some(session),
        "connections",
        Some(&flash),
        &body,
    )
}
