//! The browser-facing OAuth callback: pages, redirects (only to the configured URL), no auth.

use std::collections::HashMap;

use poem::http::StatusCode;
use url::Url;

use crate::helpers::{CGM, DOWN, PUMP, Reply, TestApi};

fn location(reply: &Reply) -> Url {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
    Url::parse(reply.header("location").unwrap()).unwrap()
}

fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

#[tokio::test]
async fn connected_page() {
    let app = TestApi::spawn().await;
    let (id, state) = app.start("alice", CGM).await;
    let page = app.callback(CGM, &format!("state={state}&code=abc")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.content_type().starts_with("text/html"));
    assert!(
        page.text.contains("Connected to Test sandbox-cgm"),
        "{}",
        page.text
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let connection = app
        .get(&format!("/v1/connections/{id}"), &app.ops())
        .await
        .json();
    assert_eq!(connection["state"], "active");

    // The state is single use: a replay (the user went Back and consented again) changes
    // nothing, and tells the user what is true: they are connected.
    let version = connection["version"].clone();
    let replay = app.callback(CGM, &format!("state={state}&code=abc")).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert!(replay.text.contains("Already connected"), "{}", replay.text);
    assert!(replay.text.contains("data-outcome=\"connected\""));
    let after = app
        .get(&format!("/v1/connections/{id}"), &app.ops())
        .await
        .json();
    assert_eq!(after["version"], version, "nothing changed");
}

#[tokio::test]
async fn declined_and_interrupted_pages() {
    let app = TestApi::spawn().await;
    let (id, state) = app.start("alice", CGM).await;
    let page = app
        .callback(
            CGM,
            &format!("state={state}&error=access_denied&error_description=no%20thanks"),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("data-outcome=\"declined\""),
        "{}",
        page.text
    );
    assert!(page.text.contains("authorization_declined"));
    let connection = app
        .get(&format!("/v1/connections/{id}"), &app.ops())
        .await
        .json();
    assert_eq!(connection["state"], "failed");

    // The partner's token endpoint is unreachable: still authorizing, the user may retry.
    let (id, state) = app.start("bob", DOWN).await;
    let page = app.callback(DOWN, &format!("state={state}&code=abc")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("data-outcome=\"error\""));
    assert!(page.text.contains("partner_unavailable"), "{}", page.text);
    let connection = app
        .get(&format!("/v1/connections/{id}"), &app.ops())
        .await
        .json();
    assert_eq!(connection["state"], "authorizing");
    assert_eq!(connection["lastError"]["code"], "partner_unavailable");
}

#[tokio::test]
async fn rejected_callbacks_are_400_pages_and_change_nothing() {
    let app = TestApi::spawn().await;
    let (id, state) = app.start("alice", CGM).await;
    for (query, code) in [
        ("code=abc", "invalid_state"),
        ("", "invalid_state"),
        ("state=forged&code=abc", "invalid_state"),
        (&format!("state={state}") as &str, "invalid_callback"),
    ] {
        let page = app.callback(CGM, query).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            page.text
        );
        assert!(page.content_type().starts_with("text/html"));
        assert!(page.text.contains(code), "{query}: {}", page.text);
    }
    // A state issued for one partner is refused on another's callback path (mix-up defence).
    let page = app
        .callback(
            PUMP,
            &format!("state={state}&code=abc&iss=https%3A%2F%2Fpump.example"),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    let connection = app
        .get(&format!("/v1/connections/{id}"), &app.ops())
        .await
        .json();
    assert_eq!(connection["state"], "authorizing");
    assert_eq!(connection["version"], 1);
}

#[tokio::test]
async fn unknown_partner_is_404() {
    let app = TestApi::spawn().await;
    for partner in ["nope", "NOPE", "a%3Cb"] {
        let page = app.callback(partner, "state=x&code=y").await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text);
        assert!(page.text.contains("unknown_partner"));
    }
}

#[tokio::test]
async fn pages_escape_what_the_request_carries() {
    let app = TestApi::spawn().await;
    let evil = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    for query in [
        format!("state={evil}&code={evil}"),
        format!("state={evil}&error={evil}&error_description={evil}"),
        format!("state=x&code=y&iss={evil}"),
    ] {
        let page = app.callback(CGM, &query).await;
        assert!(page.status.is_client_error(), "{}", page.text);
        assert!(!page.text.contains("<script>"), "{}", page.text);
    }
}

#[tokio::test]
async fn redirects_go_only_to_the_configured_return_url() {
    let return_url = Url::parse("https://web.example/connected?from=tributary").unwrap();
    let app = TestApi::spawn_with(Some(return_url), 4096).await;

    let (id, state) = app.start("alice", CGM).await;
    let reply = app.callback(CGM, &format!("state={state}&code=abc")).await;
    let to = location(&reply);
    assert_eq!(
        (to.scheme(), to.host_str(), to.path()),
        ("https", Some("web.example"), "/connected")
    );
    let q = query(&to);
    assert_eq!(q["from"], "tributary");
    assert_eq!(q["outcome"], "connected");
    assert_eq!(q["partner"], CGM);
    assert_eq!(q["connectionId"], id);
    assert!(!q.contains_key("code"));
    assert!(
        !to.as_str().contains("abc"),
        "the authorization code never travels on"
    );

    let (id, state) = app.start("bob", CGM).await;
    let reply = app
        .callback(CGM, &format!("state={state}&error=access_denied"))
        .await;
    let q = query(&location(&reply));
    assert_eq!(
        (q["outcome"].as_str(), q["code"].as_str()),
        ("declined", "authorization_declined")
    );
    assert_eq!(q["connectionId"], id);

    // Forged or broken callbacks, whatever they ask for, go to the configured URL too.
    for forged in [
        "state=forged&code=x&redirect=https://evil.example/",
        "state=forged&code=x&return_url=https%3A%2F%2Fevil.example%2F&redirect_uri=https://evil.example/",
        "",
    ] {
        let to = location(&app.callback(CGM, forged).await);
        assert!(
            to.as_str()
                .starts_with("https://web.example/connected?from=tributary&"),
            "{to}"
        );
        let q = query(&to);
        assert_eq!(
            (q["outcome"].as_str(), q["code"].as_str()),
            ("error", "invalid_state")
        );
        assert!(!q.contains_key("connectionId"));
        assert!(!to.as_str().contains("evil"));
    }
    // Unknown partners are not redirected anywhere.
    let reply = app.callback("nope", "state=x&code=y").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.header("location").is_none());
}
