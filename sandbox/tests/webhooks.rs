//! The webhook receiver over real HTTP. Deliveries are signed here with `hmac` directly,
//! independently of both the receiver and Tributary's signer, and checked against the
//! Standard Webhooks specification's published test vector.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use sandbox::webhooks::WebhookReceiver;
use serde_json::{Value, json};
use sha2::Sha256;

// The specification's test vector.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// A second secret (32 bytes of 0x2a), for signatures the receiver must refuse.
const OTHER_SECRET: &str = "whsec_KioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// Posts `body` with the given headers (`None` leaves one out) and returns the status.
async fn post(
    receiver: &WebhookReceiver,
    id: Option<&str>,
    timestamp: Option<i64>,
    signature: Option<&str>,
    body: &str,
) -> u16 {
    let mut request = reqwest::Client::new()
        .post(receiver.url())
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(id) = id {
        request = request.header("webhook-id", id);
    }
    if let Some(timestamp) = timestamp {
        request = request.header("webhook-timestamp", timestamp.to_string());
    }
    if let Some(signature) = signature {
        request = request.header("webhook-signature", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Posts the specification's test vector as is.
async fn post_spec(receiver: &WebhookReceiver) -> u16 {
    post(
        receiver,
        Some(SPEC_ID),
        Some(SPEC_TIMESTAMP),
        Some(SPEC_SIGNATURE),
        SPEC_BODY,
    )
    .await
}

/// Posts `body` signed now with the specification's secret.
async fn post_signed(receiver: &WebhookReceiver, id: &str, body: &Value) -> u16 {
    let body = body.to_string();
    let ts = now();
    let signature = sign(SPEC_SECRET, id, ts, &body);
    post(receiver, Some(id), Some(ts), Some(&signature), &body).await
}

#[tokio::test]
async fn accepts_the_specification_test_vector() {
    // Our own signer agrees with the published vector, so the two are interchangeable below.
    assert_eq!(
        sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
        SPEC_SIGNATURE
    );
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    assert!(receiver.url().starts_with("http://127.0.0.1:"));
    assert!(receiver.url().ends_with("/hooks"));
    // The vector was signed in 2021: only a receiver whose clock is then accepts it.
    receiver.set_now(DateTime::from_timestamp(SPEC_TIMESTAMP + 60, 0));
    assert_eq!(post_spec(&receiver).await, 204);
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].id, SPEC_ID);
    assert_eq!(deliveries[0].timestamp, SPEC_TIMESTAMP);
    assert_eq!(deliveries[0].body, json!({"test": 2432232314_u64}));
    assert!(deliveries[0].signature_valid);
    assert_eq!(deliveries[0].status, 204);
    assert_eq!(receiver.events(), vec![json!({"test": 2432232314_u64})]);
}

#[tokio::test]
async fn tolerates_five_minutes_of_clock_difference_either_way() {
    // The bare base64 of a secret is accepted too, as the specification's libraries do.
    let receiver = WebhookReceiver::start("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .await
        .unwrap();
    for (offset, expected) in [(-301, 401), (-300, 204), (300, 204), (301, 401)] {
        receiver.set_now(DateTime::from_timestamp(SPEC_TIMESTAMP + offset, 0));
        assert_eq!(
            post_spec(&receiver).await,
            expected,
            "clock offset {offset}"
        );
    }
    // Back on the system clock, a 2021 timestamp is stale.
    receiver.set_now(None);
    assert_eq!(post_spec(&receiver).await, 401);
    assert_eq!(receiver.events().len(), 1, "one id, accepted twice");
    assert_eq!(receiver.deliveries().len(), 5);
}

#[tokio::test]
async fn refuses_bad_signatures_missing_headers_and_stale_timestamps() {
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    let body = r#"{"type":"connection.created"}"#;
    let ts = now();
    let good = sign(SPEC_SECRET, "msg_1", ts, body);
    let cases = [
        // Another key.
        (
            Some("msg_1"),
            Some(ts),
            Some(sign(OTHER_SECRET, "msg_1", ts, body)),
        ),
        // Signed for another id, or another timestamp.
        (Some("msg_2"), Some(ts), Some(good.clone())),
        (Some("msg_1"), Some(ts + 1), Some(good.clone())),
        // An unknown version, a signature that is not base64, none at all.
        (
            Some("msg_1"),
            Some(ts),
            Some(good.replacen("v1,", "v9,", 1)),
        ),
        (Some("msg_1"), Some(ts), Some("v1,???".to_owned())),
        (Some("msg_1"), Some(ts), None),
        (None, Some(ts), Some(good.clone())),
        (Some("msg_1"), None, Some(good.clone())),
        // Correctly signed, but more than 5 minutes away from the receiver's clock.
        (
            Some("msg_1"),
            Some(ts - 400),
            Some(sign(SPEC_SECRET, "msg_1", ts - 400, body)),
        ),
        (
            Some("msg_1"),
            Some(ts + 400),
            Some(sign(SPEC_SECRET, "msg_1", ts + 400, body)),
        ),
    ];
    for (id, timestamp, signature) in &cases {
        let status = post(&receiver, *id, *timestamp, signature.as_deref(), body).await;
        assert_eq!(status, 401, "{id:?} {timestamp:?} {signature:?}");
    }
    // A tampered body, under the signature of the original.
    let tampered = r#"{"type":"connection.deleted"}"#;
    assert_eq!(
        post(&receiver, Some("msg_1"), Some(ts), Some(&good), tampered).await,
        401
    );
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), cases.len() + 1);
    assert!(
        deliveries
            .iter()
            .all(|d| !d.signature_valid && d.status == 401)
    );
    assert_eq!(deliveries[6].id, "");
    assert_eq!(deliveries[7].timestamp, 0);
    assert!(receiver.events().is_empty());

    // A signature list with one good entry among others (key rotation) is accepted.
    let rotating = format!("{} {good}", sign(OTHER_SECRET, "msg_1", ts, body));
    assert_eq!(
        post(&receiver, Some("msg_1"), Some(ts), Some(&rotating), body).await,
        204
    );
    assert_eq!(
        receiver.events(),
        vec![json!({"type": "connection.created"})]
    );
}

#[tokio::test]
async fn non_json_bodies_are_recorded_as_null() {
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    let ts = now();
    let signature = sign(SPEC_SECRET, "msg_text", ts, "not json");
    let status = post(
        &receiver,
        Some("msg_text"),
        Some(ts),
        Some(&signature),
        "not json",
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(receiver.deliveries()[0].body, Value::Null);
    assert!(receiver.deliveries()[0].signature_valid);
}

#[tokio::test]
async fn scripted_failures_answer_their_status_then_recover() {
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    receiver.fail_next(2, 503);
    receiver.fail_next(1, 500);
    let event = json!({"type": "transfer.failed", "connectionId": "c1", "sequence": 1});
    // A badly signed delivery is refused but does not use up a scripted failure.
    assert_eq!(
        post(&receiver, Some("m"), Some(now()), Some("v1,AAAA"), "{}").await,
        401
    );
    let statuses = [
        post_signed(&receiver, "msg_1", &event).await,
        post_signed(&receiver, "msg_1", &event).await,
        post_signed(&receiver, "msg_1", &event).await,
        post_signed(&receiver, "msg_1", &event).await,
    ];
    assert_eq!(statuses, [503, 503, 500, 204]);
    let recorded: Vec<(bool, u16)> = receiver
        .deliveries()
        .iter()
        .map(|d| (d.signature_valid, d.status))
        .collect();
    assert_eq!(
        recorded,
        [
            (false, 401),
            (true, 503),
            (true, 503),
            (true, 500),
            (true, 204)
        ]
    );
    assert_eq!(receiver.events(), vec![event.clone()]);

    receiver.fail_all(Some(502));
    assert_eq!(post_signed(&receiver, "msg_2", &event).await, 502);
    assert_eq!(post_signed(&receiver, "msg_2", &event).await, 502);
    receiver.fail_all(None);
    assert_eq!(post_signed(&receiver, "msg_2", &event).await, 204);
    assert_eq!(receiver.events().len(), 2);
}

#[tokio::test]
async fn redeliveries_count_once() {
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    let first = json!({"type": "connection.created", "n": 1});
    let second = json!({"type": "connection.created", "n": 2});
    assert_eq!(post_signed(&receiver, "msg_a", &first).await, 204);
    // Same id again (even with another body): answered, recorded, not a new event.
    assert_eq!(post_signed(&receiver, "msg_a", &second).await, 204);
    assert_eq!(post_signed(&receiver, "msg_b", &second).await, 204);
    assert_eq!(receiver.deliveries().len(), 3);
    assert_eq!(receiver.events(), vec![first, second]);
}

#[tokio::test]
async fn ordering_is_checked_per_connection() {
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    let event = |connection: &str, sequence: u64| json!({"type": "transfer.completed", "connectionId": connection, "sequence": sequence});
    assert!(receiver.in_order_per_connection());
    // Interleaved connections, each in order; an event without the fields takes no part.
    post_signed(&receiver, "1", &event("a", 1)).await;
    post_signed(&receiver, "2", &event("b", 5)).await;
    post_signed(&receiver, "3", &event("a", 2)).await;
    post_signed(&receiver, "4", &json!({"type": "ping"})).await;
    post_signed(&receiver, "5", &event("b", 6)).await;
    assert!(receiver.in_order_per_connection());
    // A failed attempt out of order does not count: only accepted events do.
    receiver.fail_next(1, 500);
    post_signed(&receiver, "6", &event("a", 0)).await;
    assert!(receiver.in_order_per_connection());
    // An accepted one does.
    post_signed(&receiver, "7", &event("b", 4)).await;
    assert!(!receiver.in_order_per_connection());
}

#[tokio::test]
async fn waits_for_events_without_polling_and_gives_up_on_timeout() {
    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    let url = receiver.url();
    let sender = tokio::spawn(async move {
        for n in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let body = json!({"n": n}).to_string();
            let ts = now();
            let id = format!("msg_{n}");
            reqwest::Client::new()
                .post(&url)
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(SPEC_SECRET, &id, ts, &body))
                .body(body)
                .send()
                .await
                .unwrap();
        }
    });
    let events = receiver.wait_for_events(3, Duration::from_secs(10)).await;
    assert_eq!(
        events,
        vec![json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
    );
    sender.await.unwrap();

    let started = std::time::Instant::now();
    let events = receiver
        .wait_for_events(4, Duration::from_millis(100))
        .await;
    assert_eq!(events.len(), 3);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn start_refuses_a_malformed_secret_and_drop_stops_the_server() {
    assert!(WebhookReceiver::start("whsec_%%%").await.is_err());
    assert!(WebhookReceiver::start("whsec_").await.is_err());

    let receiver = WebhookReceiver::start(SPEC_SECRET).await.unwrap();
    let url = receiver.url();
    assert_eq!(post_signed(&receiver, "msg_1", &json!({})).await, 204);
    drop(receiver);
    // The server stops asynchronously; a fresh connection is refused once it has.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let refused = reqwest::Client::new().post(&url).send().await.is_err();
        if refused {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still serving after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
