//! Every malformed request is a 4xx `application/problem+json` with a stable code.

use poem::http::Method;

use crate::helpers::{CGM, TestApi};

#[tokio::test]
async fn malformed_bodies() {
    let app = TestApi::spawn().await;
    let alice = app.user("alice");
    let path = "/v1/users/alice/connections";
    for body in [
        "{",
        "not json",
        "[]",
        "{}",
        r#"{"partner": 42}"#,
        r#"{"partner":"sandbox-cgm","extra":true}"#,
    ] {
        let problem = app
            .post_json(path, &alice, body)
            .await
            .assert_problem(400, "invalid_body");
        assert!(problem["detail"].as_str().unwrap().len() > 10, "{problem}");
    }
    // No body at all, or the wrong media type.
    app.send(Method::POST, path, Some(&alice), None)
        .await
        .assert_problem(415, "unsupported_media_type");
    app.send(
        Method::POST,
        path,
        Some(&alice),
        Some(("text/plain", r#"{"partner":"sandbox-cgm"}"#)),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
}

#[tokio::test]
async fn unknown_partners_are_422() {
    let app = TestApi::spawn().await;
    for partner in ["nope", "Sandbox-CGM", "", "<script>"] {
        let problem = app
            .connect("alice", partner)
            .await
            .assert_problem(422, "unknown_partner");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn bad_ids_in_paths() {
    let app = TestApi::spawn().await;
    let ops = app.ops();
    for id in [
        "not-a-uuid",
        "42",
        "0190f5e27b1c7d3e8f000123456789ab",
        "%20",
    ] {
        for suffix in ["", "/events", "/revocations"] {
            app.get(&format!("/v1/connections/{id}{suffix}"), &ops)
                .await
                .assert_problem(400, "invalid_connection_id");
        }
        for suffix in ["/authorize", "/disconnect", "/refresh"] {
            app.post(&format!("/v1/connections/{id}{suffix}"), &ops)
                .await
                .assert_problem(400, "invalid_connection_id");
        }
    }
    for user in ["a%20b", "x.y", &"u".repeat(65)] {
        app.get(&format!("/v1/users/{user}/connections"), &ops)
            .await
            .assert_problem(400, "invalid_user_id");
    }
    app.get("/v1/ops/alerts?limit=0", &ops)
        .await
        .assert_problem(400, "invalid_parameter");
    app.get("/v1/ops/alerts?limit=many", &ops)
        .await
        .assert_problem(400, "invalid_parameter");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = TestApi::spawn_with(None, 64).await;
    let big = format!(r#"{{"partner":"{}"}}"#, "x".repeat(100));
    app.post_json("/v1/users/alice/connections", &app.user("alice"), &big)
        .await
        .assert_problem(413, "payload_too_large");
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks = futures_stream(big.into_bytes());
    let reply = app
        .client
        .post("/v1/users/alice/connections")
        .header("authorization", format!("Bearer {}", app.user("alice")))
        .content_type("application/json")
        .body(poem::Body::from_bytes_stream(chunks))
        .send()
        .await;
    assert_eq!(reply.0.status(), 413);
    // Small bodies still pass.
    let ok = app.connect("alice", CGM).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::iter(bytes.chunks(16).map(|c| Ok(c.to_vec())).collect::<Vec<_>>())
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let app = TestApi::spawn().await;
    let ops = app.ops();
    for path in [
        "/nope",
        "/v1",
        "/v1/nope",
        "/v2/partners",
        "/v1/connections",
    ] {
        app.get(path, &ops).await.assert_problem(404, "not_found");
    }
    // Unknown routes answer the same without a token: nothing about the API leaks.
    app.send(Method::GET, "/v1/nope", None, None)
        .await
        .assert_problem(404, "not_found");
    app.send(Method::DELETE, "/v1/partners", Some(&ops), None)
        .await
        .assert_problem(405, "method_not_allowed");
    app.send(
        Method::GET,
        "/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab/disconnect",
        Some(&ops),
        None,
    )
    .await
    .assert_problem(405, "method_not_allowed");
}
