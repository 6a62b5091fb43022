//! The OAuth callback: where the partner sends the user's browser after the consent page.
//!
//! No bearer token here (the browser arrives from the partner); the single-use `state` is the
//! credential, checked by `workflows`. The answer is for a person: when a `return_url` is
//! configured, a 303 to that URL (and only that URL: the destination never comes from the
//! request) with `outcome`, `partner`, `connectionId` and `code` appended; otherwise a small
//! self-contained HTML page. Nothing the partner sent is echoed unescaped, and the page loads
//! nothing (its CSP forbids it), so the URL with the code leaks nowhere.

use poem::http::{HeaderValue, header};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::{Html, Response},
};
use url::Url;
use workflows::{CallbackOutcome, CallbackParams, Workflows};

use crate::ApiTags;

/// The callback pages need inline styles and nothing else.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_callback")]
pub enum CallbackResponse {
    /// A page saying what happened: connected, declined, or a partner-side error (the
    /// connection records it). Only without a configured `return_url`.
    #[oai(status = 200)]
    Page(Html<String>),
    /// Back to the configured `return_url`, with `outcome` (`connected`, `declined`, `error`),
    /// `partner`, `connectionId` (when known) and `code` (when an error) appended.
    #[oai(status = 303)]
    SeeOther(#[oai(header = "Location")] String),
    /// Not a valid callback: unknown, expired or reused `state`, issuer mismatch, missing
    /// parameters. Nothing changed. Only without a configured `return_url`.
    #[oai(status = 400)]
    Rejected(Html<String>),
    /// No such partner.
    #[oai(status = 404)]
    UnknownPartner(Html<String>),
    /// The callback could not be processed; the user may try again. Only without a configured
    /// `return_url`.
    #[oai(status = 500)]
    Internal(Html<String>),
}

fn bad_callback(err: poem::Error) -> CallbackResponse {
    tracing::info!(error = %err, "malformed OAuth callback");
    CallbackResponse::Rejected(page(
        "This link is not valid",
        "The authorization response could not be read. Please start connecting again from Tidepool.",
        "error",
        Some("invalid_callback"),
    ))
}

pub struct OAuthApi {
    pub workflows: Workflows,
    /// Where browsers go after a callback; `None` shows a page instead.
    pub return_url: Option<Url>,
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::OAuth")]
impl OAuthApi {
    /// The partner's redirect after consent (RFC 6749 §4.1.2). Called by browsers, not by API
    /// clients: no bearer token.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/oauth/:partner/callback",
        method = "get",
        operation_id = "oauthCallback"
    )]
    async fn callback(
        &self,
        /// The partner's name.
        partner: Path<String>,
        /// The `state` issued with the authorize URL.
        state: Query<Option<String>>,
        /// The authorization code (on success).
        code: Query<Option<String>>,
        /// The OAuth error (`access_denied`, `server_error`, …).
        error: Query<Option<String>>,
        /// The partner's description of the error.
        error_description: Query<Option<String>>,
        /// The partner's issuer identifier (RFC 9207).
        iss: Query<Option<String>>,
    ) -> Response<CallbackResponse> {
        let Some(client) = self.workflows.partners().get(&partner) else {
            return with_page_headers(CallbackResponse::UnknownPartner(page(
                "Unknown partner",
                "This address does not belong to any partner Tidepool connects to.",
                "error",
                Some("unknown_partner"),
            )));
        };
        let display_name = client.config().display_name.clone();
        let params = CallbackParams {
            state: state.0,
            code: code.0,
            error: error.0,
            error_description: error_description.0,
            iss: iss.0,
        };
        let outcome = self.workflows.callback(&partner, params).await;
        tracing::info!(
            partner = %partner.as_str(),
            outcome = outcome.outcome(),
            code = outcome.code(),
            connection = ?outcome.connection().map(|c| c.id),
            "OAuth callback"
        );
        match &self.return_url {
            Some(return_url) => {
                let location = return_location(return_url, &partner, &outcome);
                Response::new(CallbackResponse::SeeOther(location.to_string()))
            }
            None => with_page_headers(outcome_page(&display_name, &outcome)),
        }
    }
}

/// The configured return URL with the outcome appended (its own query is kept).
pub fn return_location(return_url: &Url, partner: &str, outcome: &CallbackOutcome) -> Url {
    let mut url = return_url.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("outcome", outcome.outcome());
        query.append_pair("partner", partner);
        if let Some(connection) = outcome.connection() {
            query.append_pair("connectionId", &connection.id.to_string());
        }
        if let Some(code) = outcome.code() {
            query.append_pair("code", code);
        }
    }
    url
}

fn outcome_page(partner: &str, outcome: &CallbackOutcome) -> CallbackResponse {
    let code = outcome.code();
    match outcome {
        CallbackOutcome::Connected { .. } => CallbackResponse::Page(page(
            &format!("Connected to {partner}"),
            &format!(
                "Your {partner} account is connected. Tidepool will start receiving your data shortly. You can close this window."
            ),
            "connected",
            None,
        )),
        CallbackOutcome::AlreadyConnected { .. } => CallbackResponse::Page(page(
            &format!("Already connected to {partner}"),
            &format!(
                "Your {partner} account is already connected; there is nothing more to do. You can close this window."
            ),
            "connected",
            None,
        )),
        CallbackOutcome::Declined { .. } => CallbackResponse::Page(page(
            &format!("{partner} was not connected"),
            &format!(
                "You declined to share your {partner} data, so nothing was connected. You can connect again from Tidepool at any time."
            ),
            "declined",
            code,
        )),
        CallbackOutcome::Failed { .. } => CallbackResponse::Page(page(
            &format!("{partner} could not be connected"),
            &format!(
                "The connection to {partner} could not be completed. Our team has been notified; please try again later."
            ),
            "error",
            code,
        )),
        CallbackOutcome::Interrupted { .. } => CallbackResponse::Page(page(
            &format!("{partner} had a temporary problem"),
            &format!(
                "{partner} could not complete the connection right now. Please try connecting again from Tidepool."
            ),
            "error",
            code,
        )),
        CallbackOutcome::Rejected {
            code: "internal", ..
        } => CallbackResponse::Internal(page(
            "Something went wrong",
            "We could not process this response. Please try connecting again from Tidepool.",
            "error",
            code,
        )),
        CallbackOutcome::Rejected { message, .. } => CallbackResponse::Rejected(page(
            "This link is not valid",
            &format!(
                "This authorization response is not valid ({message}). It may have expired or been used already. Please start connecting again from Tidepool."
            ),
            "error",
            code,
        )),
    }
}

fn with_page_headers(response: CallbackResponse) -> Response<CallbackResponse> {
    Response::new(response).header(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    )
}

/// A self-contained page; every interpolated value is escaped.
fn page(title: &str, message: &str, outcome: &str, code: Option<&str>) -> Html<String> {
    let title = escape(title);
    let message = escape(message);
    let outcome = escape(outcome);
    let code = code
        .map(|code| format!("<p class=\"code\">Code: <code>{}</code></p>", escape(code)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; color: #1f2937; }}
h1 {{ font-size: 1.5rem; }}
.code {{ color: #6b7280; font-size: 0.875rem; }}
</style>
</head>
<body data-outcome="{outcome}">
<h1>{title}</h1>
<p>{message}</p>
{code}
</body>
</html>
"#
    ))
}

/// HTML text and attribute escaping.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#x27;y&#x27;)&lt;/script&gt;"
        );
    }

    #[test]
    fn pages_escape_everything_interpolated() {
        let outcome = CallbackOutcome::Rejected {
            code: "invalid_state",
            message: "<img src=x onerror=alert(1)>".to_owned(),
        };
        let CallbackResponse::Rejected(Html(html)) = outcome_page("<b>Acme</b>", &outcome) else {
            panic!("rejected page expected");
        };
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("invalid_state"));
    }

    #[test]
    fn return_location_keeps_the_configured_url_and_appends() {
        let base = Url::parse("https://web.example/connected?from=tributary#top").unwrap();
        let outcome = CallbackOutcome::Rejected {
            code: "invalid_state",
            message: String::new(),
        };
        let url = return_location(&base, "sandbox-cgm", &outcome);
        assert_eq!(url.host_str(), Some("web.example"));
        assert_eq!(url.path(), "/connected");
        assert_eq!(
            url.query(),
            Some("from=tributary&outcome=error&partner=sandbox-cgm&code=invalid_state")
        );
    }
}
