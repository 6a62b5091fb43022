//! HTML building: escaping, the page frame every console page shares, and small formatters.
//! Every piece of text that does not come from this file goes through [`esc`] (or [`attr`]),
//! so nothing an operator, a partner or a user typed can become markup.

use std::{fmt::Write as _, time::Duration};

use chrono::{DateTime, Utc};
use poem::{
    Response,
    http::{StatusCode, header},
};

use super::{BASE, session::Session};

/// `text` escaped for an element's content or a quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query string value, percent-encoded (RFC 3986 unreserved characters kept).
pub fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A time as people read it, in a `<time>` element.
pub fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339(),
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// An optional time, or a dash.
pub fn opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "<span class=\"none\">—</span>".to_owned(), time)
}

/// A duration in its largest sensible unit: `42 s`, `7 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 if s % 3600 < 60 => format!("{} h", s / 3600),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ if s % 86400 < 3600 => format!("{} d", s / 86400),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// A page's flash message: what the last action did (`ok`) or why it was refused.
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// A whole page: the frame (skip link, navigation, the operator and sign-out) around `body`.
/// `current` is the navigation entry to mark as the current page.
pub fn page(
    status: StatusCode,
    title: &str,
    session: Option<&Session>,
    current: &str,
    flash: Option<&Flash>,
    body: &str,
) -> Response {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Tributary ops</title>\
         <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{BASE}/static/console.css\"></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\">\
         <a class=\"brand\" href=\"{BASE}\">Tributary ops</a>",
        title = esc(title),
    );
    if let Some(session) = session {
        out.push_str("<nav aria-label=\"Console\"><ul>");
        for (key, href, label) in [
            ("summary", BASE.to_owned(), "Summary"),
            ("connections", format!("{BASE}/connections"), "Connections"),
            ("stuck", format!("{BASE}/connections?stuck=true"), "Stuck"),
        ] {
            let mark = if key == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{href}\"{mark}>{label}</a></li>");
        }
        let _ = write!(
            out,
            "</ul></nav><form class=\"signout\" method=\"post\" action=\"{BASE}/logout\">\
             <span class=\"who\">Signed in as <strong>{who}</strong></span>{csrf}\
             <button type=\"submit\" class=\"secondary\">Sign out</button></form>",
            who = esc(session.subject()),
            csrf = session.csrf_field(),
        );
    }
    out.push_str("</header><main id=\"main\" tabindex=\"-1\">");
    if let Some(flash) = flash {
        let (class, role) = if flash.ok {
            ("flash ok", "status")
        } else {
            ("flash refused", "alert")
        };
        let _ = write!(
            out,
            "<p class=\"{class}\" role=\"{role}\" id=\"flash\">{}</p>",
            esc(&flash.text)
        );
    }
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(out)
}

/// A redirect after a form (303: the browser follows with a `GET`).
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(query_value("a b&c=d/€"), "a%20b%26c%3Dd%2F%E2%82%AC");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_secs(42)), "42 s");
        assert_eq!(duration(Duration::from_secs(420)), "7 min");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 300)), "3 h 5 min");
        assert_eq!(duration(Duration::from_secs(3600)), "1 h");
        assert_eq!(duration(Duration::from_secs(2 * 86400)), "2 d");
        assert_eq!(
            duration(Duration::from_secs(2 * 86400 + 4 * 3600)),
            "2 d 4 h"
        );
    }
}
