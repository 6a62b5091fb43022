//! Coverage and re-fetch over HTTP against the sandbox (docs/coverage.md#coverage,
//! #refetch): a stretch the partner withheld shows as empty inside the fetched range, a range
//! not fetched because transfers fail shows as pending with the failure, a dry run counts what
//! a re-fetch would insert and writes nothing, and the re-fetch itself rewinds the cursor once
//! and stores what the partner has since published.

use std::collections::BTreeSet;

use api::auth::Role;
use chrono::{DateTime, TimeDelta, Utc};
use engine::{store::REFETCH_EVENT, testing::TestDb};
use reqwest::StatusCode;
use sandbox::data;
use serde_json::{Value, json};

use crate::{
    harness::{Harness, expected, t0},
    helpers::{TestApp, cli, test_config},
};

engine::backend_tests!(
    coverage_tells_a_partner_gap_from_a_failing_fetch,
    refetch_previews_then_rewinds_once,
    the_cli_shows_and_refetches_through_the_server,
);

const USER: &str = "cora-at-partner";

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// A connection of "cora" that fetched its 30-day backfill at t0 with every daily gap withheld.
async fn with_gaps_withheld(db: &TestDb) -> (Harness, String) {
    let h = Harness::with_config(test_config(db)).await;
    h.app.sandbox.faults().update(|f| {
        f.backfill = true;
        f.backfill_delay_secs = 60 * 86_400;
    });
    let id = TestApp::id(&h.app.connect_fully("cora", "sandbox-cgm").await).to_string();
    assert_eq!(h.cycle().await.len(), 1);
    (h, id)
}

async fn coverage_tells_a_partner_gap_from_a_failing_fetch(db: &TestDb) {
    let (h, id) = with_gaps_withheld(db).await;
    let ops = h.app.token(Role::Ops, "olga");
    let day = t0().date_naive() - chrono::Days::new(3);
    let (gap_start, gap_end) = data::gap_on(USER, day);
    let path = format!("/v1/connections/{id}/coverage");
    let (status, c) = h.app.get(&path, &ops).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    // The default range, the last 14 days, is fetched through now.
    assert_eq!(time(&c["range"]["end"]), h.now());
    assert_eq!(time(&c["fetched"]["end"]), h.now(), "{c}");
    assert_eq!(c["unfetched"], json!([]), "{c}");
    let cbg = c["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "cbg")
        .unwrap_or_else(|| panic!("{c}"));
    assert!(cbg["records"].as_u64().unwrap() > 3000, "{cbg}");
    let empty: Vec<(DateTime<Utc>, DateTime<Utc>)> = cbg["empty"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (time(&s["start"]), time(&s["end"])))
        .collect();
    assert!(
        empty
            .iter()
            .any(|(s, e)| *s <= gap_start && *e >= gap_end - TimeDelta::minutes(5)),
        "the withheld gap {gap_start}..{gap_end} is an empty stretch: {empty:?}"
    );
    // One withheld gap a day, nothing else: the partner's own gaps only.
    assert!((13..=15).contains(&empty.len()), "{empty:?}");

    // The user sees their own connection's coverage; another user does not.
    let (status, _) = h.app.get(&path, &h.app.user_token("cora")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.app.get(&path, &h.app.user_token("someone")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = h
        .app
        .get(
            &format!("{path}?start=2026-03-10T00:00:00Z&end=2026-03-01T00:00:00Z"),
            &ops,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_range"))
    );

    // The partner goes down: the part after the cursor is pending, with the failure.
    let cursor = h.now();
    h.app.sandbox.faults().update(|f| f.maintenance_now = true);
    h.set_now(h.now() + TimeDelta::hours(2));
    assert_eq!(h.cycle().await.len(), 1);
    h.set_now(h.now() + TimeDelta::hours(4));
    let (_, c) = h.app.get(&path, &ops).await;
    assert_eq!(time(&c["fetched"]["end"]), cursor, "{c}");
    let pending = &c["unfetched"][0];
    assert_eq!(pending["reason"], "pending", "{c}");
    assert_eq!(time(&pending["start"]), cursor);
    assert_eq!(time(&pending["end"]), h.now());
    assert_eq!(pending["lastErrorCode"], "partner_unavailable", "{c}");
    assert!(pending["failingSince"].is_string(), "{c}");
    h.app.stop().await;
}

async fn refetch_previews_then_rewinds_once(db: &TestDb) {
    let (h, id) = with_gaps_withheld(db).await;
    let ops = h.app.token(Role::Ops, "olga");
    let store = h.app.workflows.store().clone();
    let cid = id.parse().unwrap();
    // The partner has published the withheld gaps since.
    h.app.sandbox.faults().update(|f| f.backfill_delay_secs = 0);
    h.set_now(h.now() + TimeDelta::minutes(5));
    let start = t0() - TimeDelta::days(4);
    let end = t0() - TimeDelta::days(3);
    let body = |dry: bool| json!({"start": start, "end": end, "reason": "gaps backfilled late", "dryRun": dry});
    let path = format!("/v1/ops/connections/{id}/refetch");
    let before = h.stored(cid).await;
    let journal = h.app.events(&id).await.len();
    let cursor = store.get(cid).await.unwrap().fetched_through;

    let (status, dry) = h.app.post_json(&path, &ops, body(true)).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    let preview = &dry["preview"];
    let missing: BTreeSet<_> = expected(USER, start, end - TimeDelta::seconds(1), &h.app)
        .difference(&before)
        .cloned()
        .collect();
    assert!(!missing.is_empty());
    assert_eq!(preview["inserted"], missing.len() as u64, "{dry}");
    assert_eq!(preview["retired"], 0, "{dry}");
    assert!(preview["unchanged"].as_u64().unwrap() > 200, "{dry}");
    assert_eq!(
        (dry["dryRun"].as_bool(), dry["changed"].as_bool()),
        (Some(true), Some(false))
    );
    // Nothing written.
    assert_eq!(h.stored(cid).await, before);
    assert_eq!(h.app.events(&id).await.len(), journal);
    assert_eq!(store.get(cid).await.unwrap().fetched_through, cursor);

    // Refused: a user, a bad range, a claimed transfer.
    let (status, _) = h
        .app
        .post_json(&path, &h.app.user_token("cora"), body(false))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bad = json!({"start": end, "end": start, "reason": "oops"});
    let (status, problem) = h.app.post_json(&path, &ops, bad).await;
    assert_eq!(problem["code"], "invalid_range", "{status} {problem}");
    store
        .request_sync(cid, std::time::Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let claimed = store
        .claim_due(10, std::time::Duration::from_secs(120))
        .await
        .unwrap();
    assert!(claimed.iter().any(|c| c.id == cid));
    let (status, problem) = h.app.post_json(&path, &ops, body(false)).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("step_in_flight"))
    );
    assert_eq!(store.get(cid).await.unwrap().fetched_through, cursor);
    // The claim's job never comes (no dispatcher here): it expires.
    h.set_now(h.now() + TimeDelta::minutes(3));

    // The re-fetch: cursor rewound once, journaled; asked again, nothing more.
    let (status, done) = h.app.post_json(&path, &ops, body(false)).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["changed"], true);
    assert_eq!(time(&done["connection"]["fetchedThrough"]), start, "{done}");
    let (_, again) = h.app.post_json(&path, &ops, body(false)).await;
    assert_eq!(again["changed"], false, "{again}");
    let events = h.app.events(&id).await;
    let refetches: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == REFETCH_EVENT)
        .collect();
    assert_eq!(refetches.len(), 1, "{events:?}");
    assert_eq!(refetches[0]["reason"], "gaps backfilled late");
    assert!(
        refetches[0]["actor"].to_string().contains("olga"),
        "{events:?}"
    );

    // The next transfer reads the range again and stores what was missing.
    assert_eq!(h.cycle().await.len(), 1);
    let after = h.stored(cid).await;
    assert!(
        missing.iter().all(|r| after.contains(r)),
        "the gap is stored now"
    );
    assert!(before.iter().all(|r| after.contains(r)));
    h.app.stop().await;
}

/// `ops show` and `ops refetch` against a running server (URL and an ops token): the same
/// tables as against the database, the dry run only this way (the partner is the server's).
async fn the_cli_shows_and_refetches_through_the_server(db: &TestDb) {
    let (h, id) = with_gaps_withheld(db).await;
    h.app.sandbox.faults().update(|f| f.backfill_delay_secs = 0);
    let ops = h.app.token(Role::Ops, "olga");
    let server = |mut args: Vec<String>| {
        args.extend([
            "--server".to_owned(),
            h.app.base.clone(),
            "--token".to_owned(),
            ops.clone(),
        ]);
        args
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let (ok, out, err) = cli(server(words(&format!("ops show {id}")))).await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("connection {id}")), "{out}");
    assert!(out.contains("state active"), "{out}");
    assert!(
        out.contains("JOURNAL") && out.contains("authorized"),
        "{out}"
    );
    assert!(out.contains("fetch") && out.contains("completed"), "{out}");
    assert!(out.contains("cbg"), "{out}");
    assert!(
        !out.contains(&ops) && !err.contains(&ops),
        "the token is not echoed"
    );
    let (ok, out, err) = cli(server(words("ops summary"))).await;
    assert!(ok, "{err}");
    assert!(out.contains("1 connections, 0 paused, 0 stuck"), "{out}");
    let (ok, out, err) = cli(server(words("ops list --state active"))).await;
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(id.as_str()) && l.contains(" active ")),
        "{out}"
    );
    assert!(out.contains("1 connection(s)"), "{out}");
    let (ok, json, _) = cli(server(words(&format!("ops show {id} --json")))).await;
    assert!(ok);
    let view: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(view["connection"]["id"], id.as_str());
    assert_eq!(view["stuck"], json!([]));

    let range = format!(
        "--start {} --end {}",
        (t0() - TimeDelta::days(4)).to_rfc3339(),
        (t0() - TimeDelta::days(3)).to_rfc3339()
    );
    let (ok, out, err) = cli(server(words(&format!(
        "ops refetch {id} {range} --reason backfilled --dry-run"
    ))))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("dry run of") && out.contains("Nothing was written"),
        "{out}"
    );
    assert!(
        !out.contains("would insert 0,"),
        "the withheld gap would be inserted: {out}"
    );
    let (ok, out, err) = cli(server(words(&format!(
        "ops refetch {id} {range} --reason backfilled"
    ))))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("cursor rewound"), "{out}");
    // An action through the server: the token's subject is the actor.
    let (ok, out, err) = cli(server(words(&format!(
        "ops pause {id} --reason maintenance"
    ))))
    .await;
    assert!(ok, "{err}");
    assert!(out.contains(&format!("connection {id} is paused")), "{out}");
    let events = h.app.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "ops_pause" && e["actor"] == "ops:olga"),
        "{events:?}"
    );
    let (ok, out, _) = cli(server(words("ops pauses"))).await;
    assert!(
        ok && out.contains("1 connection(s) paused on their own"),
        "{out}"
    );
    // Refused by the server: its code, and a failure exit.
    let (ok, _, err) = cli(server(words(&format!(
        "ops refetch {id} --start 2026-03-09T00:00:00Z --end 2026-03-01T00:00:00Z --reason x"
    ))))
    .await;
    assert!(!ok);
    assert!(err.contains("invalid_range"), "{err}");
    h.app.stop().await;
}
