//! The ops console (docs/console.md#console), on both backends, with the whole service
//! running (workers and dispatcher included):
//! - in Debian's headless Chromium (`tests/console/drive.mjs`, puppeteer-core): an operator
//!   signs in, finds a connection made stuck on purpose (its fetch job lost after the
//!   dispatcher's claim) in the stuck list, replays it with the
//!   keyboard and sees it recover; the store then shows the transfer after the replay and the
//!   journal names the operator. Screenshots of each page go to
//!   `target/console-screenshots/<backend>/` (or `$CONSOLE_SCREENSHOTS/<backend>/`);
//! - over plain HTTP: sign-in and its cookie, the headers, and that a form without the
//!   session's CSRF token, or from another origin, is refused (403) and changes nothing.
//!
//! Needs `node`, `npm ci --prefix tests/console` (run here when `node_modules` is missing) and
//! Chromium (`apt-get install -y chromium`); `.ci/run` provides both.

#[path = "flows/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::{path::PathBuf, process::Stdio, time::Duration};

use api::auth::Role;
use chrono::{TimeDelta, Utc};
use engine::{
    ids::ConnectionId,
    store::{ConnectionFilter, StuckFilter, StuckReason},
    testing::TestDb,
};
use reqwest::{StatusCode, header, redirect::Policy};
use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::{TestApp, eventually, test_config};

engine::backend_tests!(
    an_operator_replays_a_stuck_connection_in_chromium,
    console_forms_need_a_session_the_csrf_token_and_our_origin,
);

const OPERATOR: &str = "console-carol";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn backend(db: &TestDb) -> &'static str {
    if db.url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    }
}

/// Long enough that a claim left behind stays stuck for the whole test (it would be claimed
/// again once it expires).
const DISPATCH_LEASE_SECS: u64 = 900;

/// A connected user whose first transfer by the workers has completed, then made stuck on
/// purpose: its fetch job lost between the dispatcher's claim (made 100 s ago, when it was due)
/// and the worker's start, so nothing will run it until the claim expires
/// (`claim_without_job`).
async fn stuck_connection(app: &TestApp, user: &str) -> ConnectionId {
    let connection = app.connect_fully(user, "sandbox-cgm").await;
    let id = TestApp::id(&connection);
    let store = app.workflows.store();
    eventually("the first transfer by the workers", || async {
        store.get(id).await.unwrap().last_sync_at.is_some()
    })
    .await;
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(
            store.db().get_database_backend(),
            "UPDATE connections SET sync_lease_until = $1, sync_lease_token = NULL, \
             next_sync_at = $2 WHERE id = $3",
            vec![
                (Utc::now() + TimeDelta::seconds(DISPATCH_LEASE_SECS as i64 - 100)).into(),
                (Utc::now() - TimeDelta::seconds(110)).into(),
                id.to_string().into(),
            ],
        ))
        .await
        .unwrap();
    let filter = ConnectionFilter {
        stuck: Some(StuckFilter::Reason(StuckReason::ClaimWithoutJob)),
        ..ConnectionFilter::default()
    };
    // Listed once the first transfer's job has left the queue (its acknowledgement may trail
    // the transfer's commit); the claim itself holds for minutes.
    eventually("listed as claim_without_job", || async {
        let page = store
            .list_connections(
                &filter,
                None,
                10,
                Utc::now(),
                &app.workflows.settings().stuck(),
            )
            .await
            .unwrap();
        page.connections.iter().any(|l| l.connection.id == id)
    })
    .await;
    id
}

/// `npm ci --prefix tests/console`, once per test binary, when its `node_modules` is missing.
async fn node_modules() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let dir = repo().join("tests/console");
            if dir.join("node_modules/puppeteer-core").is_dir() {
                return;
            }
            let status = tokio::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .status()
                .await;
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "tests/console/node_modules is missing and `npm ci --prefix tests/console` \
                 failed ({status:?}): install Node.js and npm, then run it"
            );
        })
        .await;
}

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "no Chromium at {}: run `apt-get update && apt-get install -y chromium` (or set CHROMIUM)",
        path.display()
    );
    path
}

async fn spawn(db: &TestDb) -> TestApp {
    let mut config = test_config(db);
    config.workers.dispatch_lease_secs = DISPATCH_LEASE_SECS;
    TestApp::spawn_with(config).await
}

async fn an_operator_replays_a_stuck_connection_in_chromium(db: &TestDb) {
    let browser = chromium();
    node_modules().await;
    let app = spawn(db).await;
    let id = stuck_connection(&app, "cora").await;
    let store = app.workflows.store();
    let before = store.get(id).await.unwrap();

    let shots = std::env::var_os("CONSOLE_SCREENSHOTS")
        .map_or_else(|| repo().join("target/console-screenshots"), PathBuf::from)
        .join(backend(db));
    let token = app.token(Role::Ops, OPERATOR);
    let run = tokio::process::Command::new("node")
        .arg(repo().join("tests/console/drive.mjs"))
        .arg(&app.base)
        .arg(&token)
        .arg(id.to_string())
        .arg(&shots)
        .env("CHROMIUM", &browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("drive.mjs finishes within 3 minutes")
        .expect("`node` runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "drive.mjs failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        !stdout.contains(&token) && !stderr.contains(&token),
        "the token is never printed"
    );
    for shot in [
        "01-sign-in",
        "03-stuck-list",
        "04-bulk-dry-run",
        "06-replayed",
        "07-recovered",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).is_file(),
            "screenshot {shot}"
        );
    }

    // The store agrees with what the browser saw.
    let journal = store.journal(id).await.unwrap();
    let replay = journal
        .iter()
        .find(|e| e.event == "ops_replay")
        .expect("the replay is journaled");
    assert_eq!(replay.actor, format!("ops:{OPERATOR}"));
    assert_eq!(
        replay.reason.as_deref(),
        Some("console test: lost fetch job")
    );
    let after = store.get(id).await.unwrap();
    assert!(
        after.last_sync_at > before.last_sync_at && after.last_sync_at.unwrap() > replay.at,
        "a transfer ran after the replay"
    );
    let runs = store.step_runs(&id, None, 1).await.unwrap();
    let (_, newest) = runs.first().expect("a run");
    assert_eq!(
        (newest.step.as_str(), newest.outcome.as_str()),
        ("fetch", "completed")
    );
    assert!(newest.finished_at > replay.at);
    app.stop().await;
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..].split('"').next().unwrap().to_owned()
}

async fn console_forms_need_a_session_the_csrf_token_and_our_origin(db: &TestDb) {
    let app = spawn(db).await;
    let id = stuck_connection(&app, "cyd").await;
    let store = app.workflows.store();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let url = |path: &str| format!("{}{path}", app.base);

    // Without a session: pages send to the sign-in page, forms change nothing.
    let response = http.get(url("/ops")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/ops/login");
    let response = http.get(url("/ops/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");

    // A valid token of another role is not an operator's.
    let response = http
        .post(url("/ops/login"))
        .form(&[("token", app.user_token("cyd"))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    assert!(response.text().await.unwrap().contains("not an operator"));

    // Signing in sets the cookie, and no page ever shows the token.
    let token = app.token(Role::Ops, OPERATOR);
    let response = http
        .post(url("/ops/login"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ops"] {
        assert!(cookie.contains(part), "{part} in the cookie's attributes");
    }
    // The summary, its charts from both sources: the throughput series (an aggregate of
    // step_runs by hour and partner) counts the first transfer's records.
    let response = http.get(url("/ops")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary = response.text().await.unwrap();
    for chart in [
        "chart-states",
        "chart-throughput",
        "chart-lag",
        "chart-errors",
    ] {
        assert!(summary.contains(&format!("id=\"{chart}\"")), "{chart}");
    }
    let throughput = &summary[summary.find("id=\"chart-throughput\"").unwrap()..];
    let legend = &throughput[throughput.find("class=\"legend\"").unwrap()..];
    let stored: u64 = legend
        .split("sandbox-cgm ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("a throughput figure for sandbox-cgm");
    assert!(stored > 0, "the first transfer's records are counted");

    let path = format!("/ops/connections/{id}");
    let page = http
        .get(url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("claim_without_job"),
        "the page shows it stuck"
    );
    assert!(!page.contains(&token), "the token is never in a page");
    let csrf = csrf_of(&page);

    // Refused: no CSRF token, a wrong one, another origin. Nothing changes.
    let version = store.get(id).await.unwrap().version;
    let replay = url(&format!("{path}/replay"));
    let reason = ("reason", "should not happen");
    for (form, origin) in [
        (vec![reason], None),
        (vec![reason, ("csrf", "00ff")], None),
        (
            vec![reason, ("csrf", &csrf[..])],
            Some("http://evil.example"),
        ),
    ] {
        let mut request = http.post(&replay).form(&form);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{form:?} {origin:?}"
        );
    }
    assert_eq!(
        store.get(id).await.unwrap().version,
        version,
        "nothing changed"
    );
    assert!(
        store
            .journal(id)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event != "ops_replay")
    );

    // A form with a reason that looks like a secret is refused by the engine's rule.
    let response = http
        .post(&replay)
        .form(&[("reason", "carol@example.org"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .ends_with("?refused=invalid_reason")
    );
    assert_eq!(
        store.get(id).await.unwrap().version,
        version,
        "nothing changed"
    );

    // The session's own form, from our origin, works and says so.
    let response = http
        .post(&replay)
        .header(header::ORIGIN, &app.base)
        .form(&[("reason", "lost fetch job"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(location, format!("{path}?done=replay-transfer&changed=1"));
    let page = http
        .get(url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Replayed: the transfer is due now"),
        "the flash says so"
    );
    let replayed = store.journal(id).await.unwrap();
    let entry = replayed
        .iter()
        .find(|e| e.event == "ops_replay")
        .expect("journaled");
    assert_eq!(entry.actor, format!("ops:{OPERATOR}"));

    // A bulk pause from the list: the dry run shows the count and changes nothing; the
    // confirmation acts on exactly what it showed.
    let response = http
        .post(url("/ops/bulk"))
        .form(&[
            ("csrf", &csrf[..]),
            ("action", "pause"),
            ("reason", "bulk test"),
            ("user", "cyd"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let dry_run = response.text().await.unwrap();
    assert!(
        dry_run.contains("data-count=\"1\""),
        "one connection matches"
    );
    assert!(
        !store.get(id).await.unwrap().paused,
        "a dry run changes nothing"
    );
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = dry_run.find(&marker).expect(name) + marker.len();
        dry_run[start..].split('"').next().unwrap().to_owned()
    };
    let (nonce, sealed) = (field("nonce"), field("sealed"));
    let confirm = |sealed: String| {
        http.post(url("/ops/bulk/confirm")).form(&[
            ("csrf", csrf.clone()),
            ("action", "pause".to_owned()),
            ("reason", "bulk test".to_owned()),
            ("nonce", nonce.clone()),
            ("sealed", sealed),
        ])
    };
    let first = u8::from_str_radix(&sealed[..2], 16).unwrap() ^ 1;
    let tampered = format!("{first:02x}{}", &sealed[2..]);
    let response = confirm(tampered).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(
        !store.get(id).await.unwrap().paused,
        "a tampered confirmation does nothing"
    );
    let response = confirm(sealed).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("id=\"bulk-acted\">1<")
    );
    assert!(
        store.get(id).await.unwrap().paused,
        "paused by the bulk action"
    );

    // Signing out clears the cookie: pages send to the sign-in page again.
    let response = http
        .post(url("/ops/logout"))
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = http.get(url("/ops")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}
