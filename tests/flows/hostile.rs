//! Transfers against the hostile partner (`sandbox::hostile`): records no honest partner
//! sends, statuses and headers meant to stall us, token responses that break the rules. Each
//! test connects through the real OAuth flow, runs transfers cycle by cycle and checks what
//! was stored, counted, shown and told to operators, on both backends.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    ids::{ConnectionId, UserId},
    model::{Connection, StoredRecord},
    state::State,
    store::RecordQuery,
    testing::TestDb,
};
use reqwest::StatusCode;
use sandbox::hostile::{Hostile, Reply, TokenReply};
use tributary::bench::hostile::{HOSTILE, connect, hostile_partner};
use workflows::{fetch::FetchReport, partner::PartnerConfig};

use crate::{
    harness::{Harness, t0},
    helpers::test_config,
};

engine::backend_tests!(
    one_bad_record_costs_only_itself,
    implausible_times_are_skipped_and_data_times_stay_right,
    one_id_twice_with_different_content_is_counted,
    a_body_over_the_partner_cap_is_refused_and_told,
    a_long_retry_after_is_capped_counted_and_shown,
    fresh_tokens_refused_back_off_and_alert_once,
    unusable_token_responses_never_connect,
    a_partner_without_refresh_tokens_ends_failed_with_its_reason,
);

const USER: &str = "hank";

struct Setup {
    h: Harness,
    hostile: Hostile,
}

async fn setup(db: &TestDb, change: impl FnOnce(&mut PartnerConfig)) -> Setup {
    let hostile = Hostile::spawn().await.unwrap();
    let mut partner = hostile_partner(&hostile.base);
    change(&mut partner);
    let mut config = test_config(db);
    config.partners.insert(HOSTILE.to_owned(), partner);
    let h = Harness::with_config(config).await;
    Setup { h, hostile }
}

impl Setup {
    /// Connects through the hostile partner's OAuth flow: (callback status, connection id).
    async fn connect(&self) -> (StatusCode, ConnectionId) {
        connect(&self.h.app.base, &self.h.app.jwt, USER)
            .await
            .unwrap()
    }

    async fn connected(&self) -> ConnectionId {
        let (status, id) = self.connect().await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(self.get(id).await.state, State::Active);
        id
    }

    async fn get(&self, id: ConnectionId) -> Connection {
        self.h.app.workflows.store().get(id).await.unwrap()
    }

    /// The user's stored `cbg` records.
    async fn cbg_records(&self) -> Vec<StoredRecord> {
        let query = RecordQuery {
            user: UserId::parse(USER).unwrap(),
            datum_type: Some("cbg".to_owned()),
            start: None,
            end: None,
            after: None,
            limit: 100,
        };
        self.h.app.workflows.store().records(&query).await.unwrap()
    }

    async fn alert_codes(&self) -> Vec<(String, u64)> {
        let alerts = self.h.app.workflows.store().alerts(100).await.unwrap();
        alerts.into_iter().map(|a| (a.code, a.count)).collect()
    }
}

fn dexcom_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A valid EGV as raw JSON text; `transmitter` is JSON string content (escapes allowed).
fn egv(id: &str, at: &str, value: &str, transmitter: &str) -> String {
    format!(
        r#"{{"recordId":"{id}","systemTime":"{at}","displayTime":"{at}","transmitterId":"{transmitter}","transmitterTicks":5400,"value":{value},"status":null,"trend":"flat","trendRate":0.1,"unit":"mg/dL","rateUnit":"mg/dL/min","displayDevice":"iOS","transmitterGeneration":"g7"}}"#
    )
}

fn egv_at(id: &str, minutes_before_t0: i64, value: &str) -> String {
    egv(
        id,
        &dexcom_time(t0() - TimeDelta::minutes(minutes_before_t0)),
        value,
        "80AB12",
    )
}

async fn one_bad_record_costs_only_itself(db: &TestDb) {
    let s = setup(db, |_| {}).await;
    let id = s.connected().await;
    let mut egvs: Vec<Vec<u8>> = (1..=25)
        .map(|i| egv_at(&format!("egv-{i}"), 5 * i, "120").into_bytes())
        .collect();
    // Valid JSON that PostgreSQL text cannot hold: stored all the same (as U+FFFD).
    egvs[3] = egv(
        "egv-4",
        &dexcom_time(t0() - TimeDelta::minutes(20)),
        "120",
        r"ab\u0000cd",
    )
    .into_bytes();
    // Three records no parser accepts, each among good ones.
    egvs.insert(2, egv_at("bad-number", 200, "1e309").into_bytes());
    let mut invalid_utf8 = egv_at("bad-utf8", 210, "120").into_bytes();
    let at = invalid_utf8.len() - 10;
    invalid_utf8.splice(at..at, [0xff, 0xfe]);
    egvs.insert(10, invalid_utf8);
    egvs.insert(
        20,
        egv(
            "bad-surrogate",
            &dexcom_time(t0() - TimeDelta::minutes(220)),
            "120",
            r"\ud83d",
        )
        .into_bytes(),
    );
    let event = format!(
        r#"{{"recordId":"ev-1","systemTime":"{t}","displayTime":"{t}","eventStatus":"created","eventType":"carbs","eventSubType":null,"value":30,"unit":"grams","transmitterId":"80AB12","transmitterGeneration":"g7","displayDevice":"iOS"}}"#,
        t = dexcom_time(t0() - TimeDelta::minutes(30))
    );
    s.hostile.script(|script| {
        script.data.insert("egvs".into(), Reply::records(&egvs));
        script
            .data
            .insert("events".into(), Reply::records([event.as_bytes()]));
    });

    let reports = s.h.cycle().await;
    assert!(
        matches!(&reports[..], [FetchReport::Completed { .. }]),
        "{reports:?}"
    );
    let stored = s.h.stored(id).await;
    assert_eq!(
        stored.len(),
        26,
        "25 readable EGVs and the event: {stored:?}"
    );
    assert!(stored.contains("egv-4") && stored.contains("ev-1"));
    let seen = s.hostile.seen();
    for endpoint in ["egvs", "calibrations", "events", "alerts", "devices"] {
        assert_eq!(
            seen.data.get(endpoint),
            Some(&1),
            "{endpoint} asked once: {seen:?}"
        );
    }
    let c = s.get(id).await;
    assert_eq!((c.records_skipped, c.failure_count), (3, 0));
    assert!(c.last_error.is_none(), "{:?}", c.last_error);
    assert_eq!(c.fetched_through, Some(t0()), "the cursor moved");
    let skipped =
        s.h.app
            .workflows
            .store()
            .skipped_records(id, 10)
            .await
            .unwrap();
    let mut reasons: Vec<&str> = skipped.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "record is not valid JSON: invalid unicode code point",
            "record is not valid JSON: number out of range",
            "record is not valid JSON: unexpected end of hex escape",
        ]
    );
    let records = s.cbg_records().await;
    let odd = records
        .iter()
        .find(|r| r.partner_record_id == "egv-4")
        .unwrap();
    assert_eq!(odd.datum["payload"]["transmitterId"], "ab\u{FFFD}cd");

    // The same bad records read again are not counted again.
    let reports = s.h.next_cycle(id).await;
    assert!(
        matches!(&reports[..], [FetchReport::Completed { .. }]),
        "{reports:?}"
    );
    let c = s.get(id).await;
    assert_eq!((c.records_skipped, s.h.stored(id).await.len()), (3, 26));
}

async fn implausible_times_are_skipped_and_data_times_stay_right(db: &TestDb) {
    let s = setup(db, |_| {}).await;
    let id = s.connected().await;
    let good = t0() - TimeDelta::minutes(10);
    let egvs = [
        egv("good", &dexcom_time(good), "120", "80AB12"),
        egv("far-future", "9999-12-31T00:00:00", "120", "80AB12"),
        egv("far-past", "0001-01-01T00:00:00", "120", "80AB12"),
        egv(
            "next-week",
            &dexcom_time(t0() + TimeDelta::days(3)),
            "120",
            "80AB12",
        ),
    ];
    s.hostile
        .script(|script| drop(script.data.insert("egvs".into(), Reply::records(egvs))));
    s.h.cycle().await;
    let c = s.get(id).await;
    assert_eq!(c.records_skipped, 3);
    assert_eq!(
        (c.earliest_data_time, c.latest_data_time),
        (Some(good), Some(good))
    );
    assert_eq!(
        s.h.stored(id).await.into_iter().collect::<Vec<_>>(),
        ["good"]
    );
}

async fn one_id_twice_with_different_content_is_counted(db: &TestDb) {
    let s = setup(db, |_| {}).await;
    let id = s.connected().await;
    let egvs = [
        egv_at("twice", 10, "100"),
        egv_at("same", 15, "90"),
        egv_at("same", 15, "90"),
        egv_at("twice", 10, "140"),
    ];
    s.hostile
        .script(|script| drop(script.data.insert("egvs".into(), Reply::records(egvs))));
    s.h.cycle().await;
    let c = s.get(id).await;
    assert_eq!(
        c.records_conflicting, 1,
        "an identical repeat is no conflict"
    );
    let records = s.cbg_records().await;
    let twice = records
        .iter()
        .find(|r| r.partner_record_id == "twice")
        .unwrap();
    assert_eq!(twice.datum["value"], 140, "the later one wins");
}

async fn a_body_over_the_partner_cap_is_refused_and_told(db: &TestDb) {
    let s = setup(db, |p| p.max_response_bytes = 4096).await;
    let id = s.connected().await;
    let egvs: Vec<String> = (1..=40)
        .map(|i| egv_at(&format!("e{i}"), i, "120"))
        .collect();
    s.hostile
        .script(|script| drop(script.data.insert("egvs".into(), Reply::records(egvs))));
    let reports = s.h.cycle().await;
    assert!(
        matches!(&reports[..], [FetchReport::Failed { code }] if code == "partner_configuration"),
        "{reports:?}"
    );
    assert!(
        s.h.stored(id).await.is_empty(),
        "nothing of a refused window is stored"
    );
    assert!(
        s.alert_codes()
            .await
            .iter()
            .any(|(code, _)| code == "partner_configuration")
    );
}

async fn a_long_retry_after_is_capped_counted_and_shown(db: &TestDb) {
    let s = setup(db, |_| {}).await;
    let id = s.connected().await;
    s.hostile.script(|script| {
        let reply = Reply::status(429, Some(("retry-after", "315360000")));
        script.data.insert("egvs".into(), reply);
    });
    let reports = s.h.cycle().await;
    assert!(
        matches!(&reports[..], [FetchReport::Failed { code }] if code == "retry_after_capped"),
        "{reports:?}"
    );
    let c = s.get(id).await;
    assert_eq!((c.state, c.failure_count), (State::Active, 1));
    let wait = c.next_sync_at.unwrap() - s.h.now();
    assert!(
        wait >= TimeDelta::hours(6) - TimeDelta::seconds(1) && wait <= TimeDelta::hours(8),
        "waits the 6 h cap (out of any blackout), not ten years: {wait}"
    );
    assert!(c.last_error.unwrap().message.contains("315360000s"));
    assert!(
        s.alert_codes()
            .await
            .iter()
            .any(|(code, _)| code == "retry_after_capped")
    );

    // A Retry-After that is no delay is counted and backs off; it cannot retry every minute.
    s.hostile.script(|script| {
        let reply = Reply::status(429, Some(("retry-after", "soon")));
        script.data.insert("egvs".into(), reply);
    });
    s.h.next_cycle(id).await;
    let c = s.get(id).await;
    assert_eq!(c.failure_count, 2);
    assert_eq!(
        c.last_error.unwrap().code,
        "rate_limited_without_retry_after"
    );
    assert!(c.next_sync_at.unwrap() - s.h.now() >= TimeDelta::seconds(300));
}

async fn fresh_tokens_refused_back_off_and_alert_once(db: &TestDb) {
    let s = setup(db, |_| {}).await;
    let id = s.connected().await;
    s.hostile.script(|script| script.data_unauthorized = true);
    let mut waits = Vec::new();
    for cycle in 1..=3u64 {
        let reports = if cycle == 1 {
            s.h.cycle().await
        } else {
            s.h.next_cycle(id).await
        };
        assert!(
            matches!(&reports[..], [FetchReport::Failed { code }] if code == "fresh_token_refused"),
            "cycle {cycle}: {reports:?}"
        );
        let c = s.get(id).await;
        assert_eq!(
            (c.state, u64::from(c.failure_count)),
            (State::Active, cycle)
        );
        assert_eq!(
            s.hostile.seen().refreshes,
            cycle,
            "one refresh per cycle, not a loop"
        );
        waits.push(c.next_sync_at.unwrap() - s.h.now());
    }
    assert!(waits[2] > waits[0], "the backoff grows: {waits:?}");
    let alerts = s.alert_codes().await;
    let refused: Vec<_> = alerts
        .iter()
        .filter(|(c, _)| c == "fresh_token_refused")
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one alert, its repeats folded: {alerts:?}"
    );
    assert_eq!(refused[0].1, 3);
}

async fn unusable_token_responses_never_connect(db: &TestDb) {
    for (reply, code) in [
        (
            TokenReply::TokenType("mac".to_owned()),
            "unsupported_token_type",
        ),
        (TokenReply::HugeAccessToken(100_000), "token_too_large"),
        (TokenReply::HugeAccessToken(1 << 20), "token_too_large"),
    ] {
        let s = setup(db, |_| {}).await;
        s.hostile.script(|script| script.token = reply.clone());
        let (_, id) = s.connect().await;
        let c = s.get(id).await;
        assert_ne!(c.state, State::Active, "{reply:?}");
        assert!(
            s.h.app
                .workflows
                .store()
                .tokens(id)
                .await
                .unwrap()
                .is_none(),
            "{reply:?}"
        );
        let text = format!("{:?} {:?}", c.last_error, s.alert_codes().await);
        assert!(text.contains(code), "{reply:?}: {text}");
    }
}

async fn a_partner_without_refresh_tokens_ends_failed_with_its_reason(db: &TestDb) {
    let s = setup(db, |_| {}).await;
    s.hostile
        .script(|script| script.token = TokenReply::NoRefreshToken);
    let id = s.connected().await;
    s.h.cycle().await;
    assert_eq!(s.h.stored(id).await.len(), 0);
    // Past the access token's lifetime the connection cannot go on: it fails, saying why.
    s.h.set_now(t0() + TimeDelta::hours(3));
    s.h.cycle().await;
    let c = s.get(id).await;
    assert_eq!(c.state, State::Failed);
    assert_eq!(c.last_error.unwrap().code, "no_refresh_token");
}
