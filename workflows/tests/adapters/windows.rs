//! What a window returns: exactly the sandbox's records, each once; limits refused locally.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use sandbox::{Flavor, config::default_history_start, data};
use workflows::{
    adapters::{DataRange, FetchError},
    records::RecordKind,
};

use crate::helpers::{FetchAll, TestSandbox, USER, assert_same, ctx, ids, of_kind, t0, values};

#[tokio::test]
async fn dexcom_window_is_exactly_the_sandbox_records() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let client = sb.client(Flavor::Cgm, |_| {});
    let (start, end) = (t0() - Duration::days(3), t0());
    let records = client.fetch_all(&token, start, end, None).await.unwrap();
    let now = sb.sandbox.now();
    let c = ctx();

    // Untouched JSON, in the order served.
    let egvs = of_kind(&records, RecordKind::Egv);
    assert_same(
        &egvs,
        &values(data::egvs(&c, USER, start, end, now)),
        "egvs",
    );
    assert_eq!(egvs.len(), 3 * 288 + 1, "inclusive at both ends");
    let calibrations = of_kind(&records, RecordKind::Calibration);
    let want = values(data::calibrations(&c, USER, start, end, now));
    assert_same(&calibrations, &want, "calibrations");
    let events = of_kind(&records, RecordKind::Event);
    assert_same(
        &events,
        &values(data::events(&c, USER, start, end, now)),
        "events",
    );
    let alerts = of_kind(&records, RecordKind::Alert);
    assert_same(
        &alerts,
        &values(data::alerts(&c, USER, start, end, now)),
        "alerts",
    );
    let devices = of_kind(&records, RecordKind::Device);
    assert_same(&devices, &values(data::devices(&c, USER, now)), "devices");

    // The ids are those of everything eventually published in the window.
    let expected = [
        (
            egvs,
            ids(
                &values(data::expected_egvs(&c, USER, start, end)),
                "recordId",
            ),
        ),
        (
            calibrations,
            ids(
                &values(data::expected_calibrations(&c, USER, start, end)),
                "recordId",
            ),
        ),
        (
            events,
            ids(
                &values(data::expected_events(&c, USER, start, end)),
                "recordId",
            ),
        ),
        (
            alerts,
            ids(
                &values(data::expected_alerts(&c, USER, start, end)),
                "recordId",
            ),
        ),
    ];
    for (got, want) in expected {
        assert!(!want.is_empty());
        assert_same(&ids(&got, "recordId"), &want, "recordIds");
    }
    assert_eq!(sb.data_requests(Flavor::Cgm), 5, "one request per endpoint");
}

#[tokio::test]
async fn dexcom_accepts_the_full_window_and_sub_second_bounds() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let client = sb.client(Flavor::Cgm, |_| {});
    assert_eq!(client.max_window(), Duration::days(30));
    let (start, end) = (t0() - Duration::days(30), t0());
    let records = client.fetch_all(&token, start, end, None).await.unwrap();
    assert_eq!(of_kind(&records, RecordKind::Egv).len(), 30 * 288 + 1);

    // Fractions are floored: the same records, and the span never exceeds the limit.
    let ms = Duration::milliseconds(700);
    let records = client
        .fetch_all(&token, start + ms, end + ms, None)
        .await
        .unwrap();
    let egvs = of_kind(&records, RecordKind::Egv);
    let want = data::expected_egvs(&ctx(), USER, start + Duration::seconds(1), end);
    assert_same(
        &ids(&egvs, "recordId"),
        &ids(&values(want), "recordId"),
        "egvs",
    );
}

/// Follows `nextCursor` across many pages: every record once, exactly the expected set.
#[tokio::test]
async fn pump_paging_returns_each_record_once() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Pump).await;
    let client = sb.client(Flavor::Pump, |c| c.max_records_per_page = 37);
    let (start, end) = (t0() - Duration::days(30), t0());
    let records = client.fetch_all(&token, start, end, None).await.unwrap();
    let c = ctx();

    let basal = of_kind(&records, RecordKind::Basal);
    assert_same(
        &basal,
        &values(data::expected_basal(&c, USER, start, end)),
        "basal",
    );
    assert_eq!(basal.len(), 30 * 48);
    let bolus = of_kind(&records, RecordKind::Bolus);
    assert_same(
        &bolus,
        &values(data::expected_bolus(&c, USER, start, end)),
        "bolus",
    );
    let all: Vec<String> = ids(&basal, "id")
        .into_iter()
        .chain(ids(&bolus, "id"))
        .collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "no duplicates"
    );
    assert_eq!(records.len(), basal.len() + bolus.len());

    let pages = basal.len().div_ceil(37) + bolus.len().div_ceil(37);
    assert!(pages > 40);
    assert_eq!(sb.data_requests(Flavor::Pump), pages as u64);
}

#[tokio::test]
async fn pump_page_bound_is_an_error_not_a_truncation() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Pump).await;
    // One day: 48 basal segments, 5 pages of 10; boluses fit in one page.
    let (start, end) = (t0() - Duration::days(1), t0());
    let enough = sb.client(Flavor::Pump, |c| {
        c.max_records_per_page = 10;
        c.max_pages_per_fetch = 5;
    });
    let records = enough.fetch_all(&token, start, end, None).await.unwrap();
    assert_eq!(of_kind(&records, RecordKind::Basal).len(), 48);

    let short = sb.client(Flavor::Pump, |c| {
        c.max_records_per_page = 10;
        c.max_pages_per_fetch = 4;
    });
    let err = short.fetch_all(&token, start, end, None).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::Configuration { reason, status: None } if reason.contains("max_pages_per_fetch")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn windows_beyond_the_limit_are_refused_locally() {
    let sb = TestSandbox::spawn().await;
    let cgm = sb.client(Flavor::Cgm, |_| {});
    let pump = sb.client(Flavor::Pump, |_| {});
    let week = sb.client(Flavor::Cgm, |c| c.max_window_days = 7);
    assert_eq!(week.max_window(), Duration::days(7));
    let token = "never-sent".into();
    let cases = [
        (&cgm, t0() - Duration::days(30) - Duration::seconds(1), t0()),
        (&pump, t0() - Duration::days(31), t0()),
        (&week, t0() - Duration::days(8), t0()),
        (&cgm, t0(), t0()),
        (&pump, t0(), t0() - Duration::hours(1)),
    ];
    for (client, start, end) in cases {
        let err = client
            .fetch_all(&token, start, end, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "data_configuration", "{start} {end}");
    }
    assert_eq!(sb.data_requests(Flavor::Cgm), 0);
    assert_eq!(sb.data_requests(Flavor::Pump), 0);
    assert_eq!(sb.sandbox.stats().faults_injected, 0);
}

fn parse(t: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S")
        .unwrap()
        .and_utc()
}

/// The sandbox's own answer, reduced the way `DataClient::data_range` reduces it.
fn expected_range(last_sync: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DataRange {
    let r = data::data_range(&ctx(), USER, now, last_sync);
    let spans: Vec<_> = [r.egvs, r.calibrations, r.events]
        .into_iter()
        .flatten()
        .collect();
    DataRange {
        start: spans.iter().map(|s| parse(&s.start.system_time)).min(),
        end: spans.iter().map(|s| parse(&s.end.system_time)).max(),
    }
}

#[tokio::test]
async fn data_range_with_and_without_last_sync() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let client = sb.client(Flavor::Cgm, |_| {});
    let now = t0();

    let all = client.data_range(&token, None, now).await.unwrap().unwrap();
    assert_eq!(all, expected_range(None, now));
    assert_eq!(all.start, Some(default_history_start()));
    assert_eq!(all.end, Some(t0()), "an EGV every 5 minutes, one at t0");

    // A recent last sync is sent: the range starts where new data landed.
    let last = now - Duration::hours(3);
    let recent = client
        .data_range(&token, Some(last), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent, expected_range(Some(last), now));
    assert!(recent.start.unwrap() > last);
    assert_eq!(recent.end, Some(t0()));

    // A last sync 30 days old or more is not sent (Tidepool): the full range comes back.
    let old = client
        .data_range(&token, Some(now - Duration::days(30)), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old, all);

    // Nothing new since the last sync: no kinds, no times.
    let none = client
        .data_range(&token, Some(now), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        none,
        DataRange {
            start: None,
            end: None
        }
    );
}

#[tokio::test]
async fn pump_has_no_data_range() {
    let sb = TestSandbox::spawn().await;
    let client = sb.client(Flavor::Pump, |_| {});
    let got = client.data_range(&"t".into(), None, t0()).await.unwrap();
    assert_eq!(got, None);
    assert_eq!(sb.data_requests(Flavor::Pump), 0);
}
