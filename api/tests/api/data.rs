//! `POST /v1/connections/{id}/sync` and `GET /v1/users/{userId}/data`.

use std::{collections::HashSet, time::Duration};

use api::auth::Role;
use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    model::MappedRecord,
    store::{Chunk, Claimed, SkippedRecord},
};
use poem::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{CGM, PUMP, TestApi};

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sync_now_then_rate_limited() {
    let app = TestApi::spawn().await;
    let id = app.connect_fully("carol").await;
    let carol = app.user("carol");
    let path = format!("/v1/connections/{id}/sync");

    let before = Utc::now();
    let reply = app.post(&path, &carol).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert!(reply.content_type().starts_with("application/json"));
    let body = reply.json();
    assert_eq!(
        (body["id"].as_str(), body["state"].as_str()),
        (Some(id.as_str()), Some("active"))
    );
    let next: DateTime<Utc> = body["nextSyncAt"].as_str().unwrap().parse().unwrap();
    assert!(
        next >= before - TimeDelta::seconds(1) && next <= Utc::now(),
        "{body}"
    );
    for field in [
        "fetchedThrough",
        "failingSince",
        "lastSyncAt",
        "earliestDataTime",
    ] {
        assert!(body[field].is_null(), "{field}: {body}");
    }

    // Again within the interval, by anyone: 429 with Retry-After in seconds.
    for token in [carol, app.ops()] {
        let reply = app.post(&path, &token).await;
        reply.assert_problem(429, "sync_rate_limited");
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
}

#[tokio::test]
async fn sync_refusals() {
    let app = TestApi::spawn().await;
    let active = app.connect_fully("carol").await;
    let (authorizing, _) = app.start("dave", CGM).await;
    let dave = app.user("dave");

    let problem = app
        .post(&format!("/v1/connections/{authorizing}/sync"), &dave)
        .await
        .assert_problem(409, "invalid_transition");
    assert!(
        problem["detail"].as_str().unwrap().contains("authorizing"),
        "{problem}"
    );

    // Someone else's connection looks exactly like a missing one.
    app.post(&format!("/v1/connections/{active}/sync"), &dave)
        .await
        .assert_problem(404, "not_found");
    app.post(
        "/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab/sync",
        &app.ops(),
    )
    .await
    .assert_problem(404, "not_found");
    app.post("/v1/connections/42/sync", &app.ops())
        .await
        .assert_problem(400, "invalid_connection_id");
    app.post(
        &format!("/v1/connections/{active}/sync"),
        &app.token(Role::Clinician, "dr"),
    )
    .await
    .assert_problem(403, "forbidden");

    // Disconnected: no longer syncable.
    let carol = app.user("carol");
    app.post(&format!("/v1/connections/{active}/disconnect"), &carol)
        .await;
    app.post(&format!("/v1/connections/{active}/sync"), &carol)
        .await
        .assert_problem(409, "invalid_transition");
}

fn t0() -> DateTime<Utc> {
    "2024-05-01T00:00:00Z".parse().unwrap()
}

fn record(id: &str, datum_type: &str, minutes: i64, datum_id: bool) -> MappedRecord {
    let time = t0() + TimeDelta::minutes(minutes);
    let mut datum = json!({
        "type": datum_type, "time": time.to_rfc3339(), "value": minutes, "origin": {"id": id},
    });
    if datum_id {
        datum["id"] = json!(format!("tidepool-{id}"));
    }
    MappedRecord {
        partner_record_id: id.to_owned(),
        datum_type: datum_type.to_owned(),
        time,
        retired: false,
        datum: MappedRecord::datum_of(&datum),
    }
}

/// Stores `chunks` for the claimed connection `id` as one transfer would.
async fn transfer(app: &TestApi, claimed: &[Claimed], id: &str, chunks: &[Chunk]) {
    let store = app.workflows.store();
    let claim = claimed
        .iter()
        .find(|c| c.id.to_string() == id)
        .expect("due");
    let mut lease = store
        .start_sync(claim.id, claim.version, LEASE)
        .await
        .unwrap()
        .expect("lease");
    let through = t0() + TimeDelta::days(1);
    for chunk in chunks {
        store
            .commit_chunk(&mut lease, chunk.clone(), Some(through), LEASE)
            .await
            .unwrap();
    }
    let next_sync_at = Utc::now() + TimeDelta::hours(1);
    store
        .commit_last_chunk(&mut lease, Chunk::default(), through, next_sync_at, false)
        .await
        .expect("finished");
}

/// Connects `user` to the pump partner (which sends `iss`) through the fake partner.
async fn connect_pump(app: &TestApi, user: &str) -> String {
    let (id, state) = app.start(user, PUMP).await;
    let query = format!("state={state}&code=c&iss=https%3A%2F%2Fpump.example");
    let page = app.callback(PUMP, &query).await;
    assert!(
        page.text.contains("data-outcome=\"connected\""),
        "{}",
        page.text
    );
    id
}

/// Alice: 30 `cbg` (every 5 min, one later retired) on the CGM, 10 `basal` and 10 `bolus` on
/// the pump at times that collide with the CGM's. Bob: 3 `cbg`. Returns the connections.
async fn seed(app: &TestApi) -> (String, String, String) {
    let cgm = app.connect_fully("alice").await;
    let pump = connect_pump(app, "alice").await;
    let bob = app.connect_fully("bob").await;
    // All three are due at once after connecting.
    let claimed = app.workflows.store().claim_due(100, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let cbg: Vec<_> = (0..30)
        .map(|i| record(&format!("egv-{i:02}"), "cbg", i * 5, i % 3 == 0))
        .collect();
    let mut retired = record("egv-07", "cbg", 35, false);
    retired.retired = true;
    transfer(app, &claimed, &cgm, &[cbg.into(), vec![retired].into()]).await;
    let pump_records: Vec<_> = (0..10)
        .flat_map(|i| {
            [
                record(&format!("b-{i}"), "basal", i * 10, false),
                record(&format!("x-{i}"), "bolus", i * 15, true),
            ]
        })
        .collect();
    // Two pump records the mapping could not understand were skipped.
    let chunk = Chunk {
        records: pump_records,
        skipped: ["p-bad-1", "p-bad-2"]
            .map(|key| SkippedRecord {
                key: key.to_owned(),
                kind: "bolus".to_owned(),
                partner_record_id: Some(key.to_owned()),
                reason: "normal is not a number".to_owned(),
            })
            .to_vec(),
        window_start: None,
    };
    transfer(app, &claimed, &pump, &[chunk]).await;
    let bob_records: Vec<_> = (0..3)
        .map(|i| record(&format!("egv-{i:02}"), "cbg", i, false))
        .collect();
    transfer(app, &claimed, &bob, &[bob_records.into()]).await;
    (cgm, pump, bob)
}

/// Follows `nextCursor` from `query`; returns every datum and the number of pages.
async fn all_pages(app: &TestApi, token: &str, user: &str, query: &str) -> (Vec<Value>, usize) {
    let (mut data, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut path = format!("/v1/users/{user}/data?{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let reply = app.get(&path, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        let page = reply.json();
        data.extend(page["data"].as_array().unwrap().iter().cloned());
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["nextCursor"].is_null() && page.get("nextCursor").is_some());
                return (data, pages);
            }
        }
        assert!(pages < 100, "paging does not end");
    }
}

fn time_of(datum: &Value) -> DateTime<Utc> {
    datum["time"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn skipped_records_are_counted_on_the_connection() {
    let app = TestApi::spawn().await;
    let (cgm, pump, _) = seed(&app).await;
    let alice = app.user("alice");
    for (id, skipped) in [(&cgm, 0), (&pump, 2)] {
        let reply = app.get(&format!("/v1/connections/{id}"), &alice).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(
            reply.json()["recordsSkipped"],
            json!(skipped),
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn pages_cover_the_data_once_in_time_order() {
    let app = TestApi::spawn().await;
    let (cgm, pump, bob) = seed(&app).await;
    let alice = app.user("alice");

    let (data, pages) = all_pages(&app, &alice, "alice", "limit=7").await;
    assert_eq!(data.len(), 29 + 20);
    assert_eq!(
        pages, 7,
        "49 datums by 7: the full last page says it is the last"
    );
    let ids: Vec<&str> = data.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
    assert!(data.windows(2).all(|w| time_of(&w[0]) <= time_of(&w[1])));
    assert!(
        !ids.contains(&format!("{cgm}:egv-07").as_str()),
        "retired records stay hidden"
    );
    // Stored ids are kept; datums without one get `<connectionId>:<partnerRecordId>`.
    assert!(ids.contains(&"tidepool-egv-03") && ids.contains(&format!("{cgm}:egv-01").as_str()));
    assert!(ids.contains(&format!("{pump}:b-3").as_str()) && ids.contains(&"tidepool-x-3"));
    let first = &data[0];
    assert_eq!(first["type"], "cbg");
    assert_eq!(
        first["origin"],
        json!({"id": "egv-00"}),
        "datums as stored: {first}"
    );
    assert!(
        ids.iter().all(|id| !id.starts_with(bob.as_str())),
        "only alice's data"
    );

    // One big page is the same sequence.
    let whole = app.get("/v1/users/alice/data", &alice).await.json();
    assert_eq!(whole["data"].as_array().unwrap(), &data);
    assert!(whole["nextCursor"].is_null());
    // Operators and services read any user's data; bob sees only his own.
    let (bobs, _) = all_pages(&app, &app.ops(), "bob", "limit=2").await;
    assert_eq!(bobs.len(), 3);
    let service = app.token(Role::Service, "tidepool");
    assert_eq!(
        all_pages(&app, &service, "alice", "limit=1000").await.0,
        data
    );
}

#[tokio::test]
async fn filters_by_type_and_time() {
    let app = TestApi::spawn().await;
    seed(&app).await;
    let alice = app.user("alice");

    let (basal, _) = all_pages(&app, &alice, "alice", "type=basal&limit=3").await;
    assert_eq!(basal.len(), 10);
    assert!(basal.iter().all(|d| d["type"] == "basal"));
    let (none, pages) = all_pages(&app, &alice, "alice", "type=smbg").await;
    assert_eq!((none.len(), pages), (0, 1));

    // [00:30, 01:00): cbg at 30..55 step 5 minus the retired 35 (5), basal at 30, 40, 50
    // (3), bolus at 30, 45 (2).
    let window = "start=2024-05-01T00:30:00Z&end=2024-05-01T01:00:00Z";
    let (data, _) = all_pages(&app, &alice, "alice", &format!("{window}&limit=4")).await;
    assert_eq!(data.len(), 10, "{data:#?}");
    let (start, end) = (t0() + TimeDelta::minutes(30), t0() + TimeDelta::hours(1));
    assert!(data.iter().all(|d| (start..end).contains(&time_of(d))));
    assert_eq!(time_of(&data[0]), start, "start is inclusive");
    let (cbg, _) = all_pages(&app, &alice, "alice", &format!("{window}&type=cbg")).await;
    assert_eq!(cbg.len(), 5);
    // An offset other than Z, percent-encoded.
    let (late, _) = all_pages(&app, &alice, "alice", "start=2024-05-01T04:20:00%2B02:00").await;
    assert_eq!(late.len(), 2, "cbg at 140 and 145 min: {late:#?}");
}

#[tokio::test]
async fn who_may_read_data() {
    let app = TestApi::spawn().await;
    app.get("/v1/users/bob/data", &app.user("alice"))
        .await
        .assert_problem(403, "forbidden");
    app.get("/v1/users/alice/data", &app.token(Role::Clinician, "dr"))
        .await
        .assert_problem(403, "forbidden");
    app.send(poem::http::Method::GET, "/v1/users/alice/data", None, None)
        .await
        .assert_problem(401, "unauthenticated");
    let empty = app.get("/v1/users/alice/data", &app.user("alice")).await;
    assert_eq!(empty.json(), json!({"data": [], "nextCursor": null}));
}

#[tokio::test]
async fn bad_parameters_are_problems() {
    let app = TestApi::spawn().await;
    seed(&app).await;
    let alice = app.user("alice");
    let get = |query: String| {
        let alice = alice.clone();
        let app = &app;
        async move {
            app.get(&format!("/v1/users/alice/data?{query}"), &alice)
                .await
        }
    };
    for query in [
        "type=",
        "type=cbg2",
        "type=c%20bg",
        &format!("type={}", "a".repeat(33)),
        "start=yesterday",
        "end=2024-05-01",
        "start=2024-05-01T01:00:00Z&end=2024-05-01T01:00:00Z",
        "start=2024-05-01T02:00:00Z&end=2024-05-01T01:00:00Z",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=many",
    ] {
        let problem = get(query.to_owned())
            .await
            .assert_problem(400, "invalid_parameter");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{query}");
    }
    app.get("/v1/users/a%20b/data", &app.ops())
        .await
        .assert_problem(400, "invalid_user_id");

    let page = get("limit=5".to_owned()).await.json();
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        if cursor.starts_with('W') { "X" } else { "W" },
        &cursor[1..]
    );
    for bad in [
        "",
        "not-a-cursor!",
        "eyJhIjoxfQ",
        &cursor[..cursor.len() - 2],
        &format!("{cursor}x"),
        &flipped,
    ] {
        get(format!("cursor={bad}"))
            .await
            .assert_problem(400, "invalid_cursor");
    }
    let again = get(format!("limit=5&cursor={cursor}")).await;
    assert_eq!(again.status, StatusCode::OK, "the real cursor still works");
}
