//! Storage and the state machine against a real SQLite file and a real PostgreSQL database.
//!
//! # Layout
//! - `main.rs`: shared helpers.
//! - `lifecycle.rs`: transitions, the journal, one live connection, reconnecting, counters,
//!   migrations.
//! - `credentials.rs`: authorizations, tokens at rest, revocations.
//! - `columns.rs`: the columns transitions and transfers share: counters by SQL arithmetic,
//!   transfer guards from `State::may_transfer`, refresh and transfer bookkeeping apart.
//! - `transfer.rs`: group commit, failing writes, skipped records, storable text.
//! - `alerts.rs`: folded, bounded operator alerts.
//! - `breaker.rs`: the partners' circuit breakers, two processes on one database.
//! - `outbox.rs`: what transitions queue (emails, notices, webhook events).
//! - `runs.rs`: step runs written with the commits that end them, `idle_runs`, paging, purge.
//! - `stuck.rs`: stuck reasons made by hand, the filtered list and its pages, the summary.
//! - `doctor.rs`: the doctor finds and repairs violations made by hand (docs/operations.md).
//! - `doctor_reports.rs`: the report-only violations, reported and left alone.
//! - `actions.rs`: operators' actions: replay, pauses and the claims, fail, clear an error.
//! - `bulk.rs`: bulk actions: the dry run's plan, the confirmed call acting on it alone.

mod actions;
mod alerts;
mod breaker;
mod bulk;
mod columns;
mod credentials;
mod doctor;
mod doctor_reports;
mod lifecycle;
mod outbox;
mod runs;
mod stuck;
mod transfer;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use engine::{
    ids::{PartnerName, UserId},
    model::{Actor, Change, Connection, MappedRecord, NewAuthorization, TokenSet},
    secret::SecretString,
    state::Event,
    store::{Store, SyncLease},
};

pub const LEASE: Duration = Duration::from_secs(120);

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

pub fn partner() -> PartnerName {
    PartnerName::parse("sandbox-cgm").unwrap()
}

pub fn start(state_hash: &str, expires_in: TimeDelta) -> Change {
    let authorization = NewAuthorization {
        state_hash: state_hash.to_owned(),
        pkce_verifier: SecretString::from(format!("verifier-{state_hash}")),
        expires_at: Utc::now() + expires_in,
    };
    Change::new(
        Event::StartAuthorization { authorization },
        Actor::new("user", "u1"),
    )
}

pub fn tokens(access: &str, refresh: &str) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(access),
        refresh_token: Some(SecretString::from(refresh)),
        expires_at: Some(Utc::now() + TimeDelta::hours(2)),
        scope: Some("offline_access".to_owned()),
    }
}

pub fn authorized(access: &str, refresh: &str) -> Change {
    Change::new(
        Event::Authorized {
            tokens: tokens(access, refresh),
        },
        Actor::system("test"),
    )
}

/// A connection of user `u`, connected (active, tokens stored).
pub async fn active(store: &Store, u: &str, access: &str, refresh: &str) -> Connection {
    let (applied, _) = store
        .open_connection(
            &user(u),
            &partner(),
            start(&format!("h-{u}"), TimeDelta::minutes(10)),
        )
        .await
        .unwrap();
    store
        .apply(
            applied.connection.id,
            Some(applied.connection.version),
            authorized(access, refresh),
        )
        .await
        .unwrap()
        .connection
}

/// `n` records of connection `i` (ids unique per connection, shared across connections).
pub fn records(i: usize, n: usize) -> Vec<MappedRecord> {
    (0..n)
        .map(|k| {
            let time = Utc::now() - TimeDelta::minutes(5 * k as i64);
            MappedRecord {
                partner_record_id: format!("r{k}"),
                datum_type: "cbg".to_owned(),
                time,
                retired: false,
                datum: MappedRecord::datum_of(&serde_json::json!({"type": "cbg", "value": i * 100 + k, "note": "a \"quoted\" ✓"})),
            }
        })
        .collect()
}

/// Makes the database refuse `event`s on `table` whose new row matches `when` (a trigger on
/// either backend): a write failure of our choosing, for one row.
pub async fn refuse(store: &Store, event: &str, table: &str, when: &str) {
    use sea_orm::ConnectionTrait;
    let statements = match store.backend() {
        engine::store::Backend::Sqlite => vec![format!(
            "CREATE TRIGGER refuse BEFORE {event} ON {table} WHEN {when} \
             BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )],
        engine::store::Backend::Postgres => vec![
            format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF {when} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
            ),
            format!(
                "CREATE TRIGGER refuse BEFORE {event} ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION refuse()"
            ),
        ],
    };
    for sql in statements {
        store.db().execute_unprepared(&sql).await.unwrap();
    }
}

/// Every stored (live) record of `u`.
pub async fn user_data(store: &Store, u: &str) -> Vec<engine::model::StoredRecord> {
    store
        .records(&engine::store::RecordQuery {
            user: user(u),
            datum_type: None,
            start: None,
            end: None,
            after: None,
            limit: 100,
        })
        .await
        .unwrap()
}

/// Runs raw SQL with bound values.
pub async fn sql(store: &Store, text: &str, values: Vec<sea_orm::Value>) {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = store.db().get_database_backend();
    store
        .db()
        .execute_raw(Statement::from_sql_and_values(backend, text, values))
        .await
        .unwrap();
}

/// One connection of user `u`, claimed and started.
pub async fn leased(store: &Store, u: &str) -> SyncLease {
    let conn = active(store, u, "a", "r").await;
    let claimed = store.claim_due(1000, LEASE).await.unwrap();
    let c = claimed.iter().find(|c| c.id == conn.id).expect("due");
    store
        .start_sync(c.id, c.version, LEASE)
        .await
        .unwrap()
        .expect("started")
}

/// `n` active connections, all due and claimed, their transfers started concurrently as one
/// group (behind two more, `<prefix>-x0` and `-x1`, which take the group-commit slots first
/// and are returned second: they can take the slots again for the next group).
pub async fn started(
    db: &engine::testing::TestDb,
    store: &Store,
    prefix: &str,
    n: usize,
) -> (Vec<SyncLease>, Vec<SyncLease>) {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(active(store, &format!("{prefix}{i}"), "a", "r").await.id);
    }
    let mut extra_ids = Vec::new();
    for i in 0..2 {
        extra_ids.push(active(store, &format!("{prefix}-x{i}"), "a", "r").await.id);
    }
    let claimed = store.claim_due(1000, LEASE).await.unwrap();
    assert_eq!(claimed.len(), n + 2, "every new connection is due at once");
    let start = |c: &engine::store::Claimed| {
        let (store, c) = (store.clone(), c.clone());
        let started: futures::future::BoxFuture<'static, _> =
            Box::pin(async move { store.start_sync(c.id, c.version, LEASE).await });
        started
    };
    let (extra, main): (Vec<_>, Vec<_>) = claimed.iter().partition(|c| extra_ids.contains(&c.id));
    let first: Vec<_> = extra.iter().map(|c| start(c)).collect();
    let rest: Vec<_> = main.iter().map(|c| start(c)).collect();
    let (extras, leases) = as_one_group(db, store, first, rest).await;
    let lease = |r: Result<Option<SyncLease>, engine::StoreError>| r.unwrap().expect("started");
    let mut leases: Vec<SyncLease> = leases.into_iter().map(lease).collect();
    leases.sort_by_key(|l| ids.iter().position(|id| *id == l.connection.id));
    (leases, extras.into_iter().map(lease).collect())
}

/// Holds the database's write lock on `connections` (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a
/// table lock) from another connection until released, so that concurrent writes queue up:
/// the way to make group commit form a group of a known size, whatever the machine's speed.
pub struct WriteBlock {
    release: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteBlock {
    pub async fn hold(db: &engine::testing::TestDb) -> Self {
        use sqlx::Connection as _;
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let url = db.url.clone();
        let task = tokio::spawn(async move {
            if url.starts_with("sqlite:") {
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let _ = locked_tx.send(());
                let _ = released.await;
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            } else {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE connections IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let _ = locked_tx.send(());
                let _ = released.await;
                sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        });
        locked.await.unwrap();
        Self {
            release: Some(release),
            task,
        }
    }

    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

/// Polls the store's group-commit counters until `done` holds (bounded: well inside the SQLite
/// busy timeout the blocked writers wait under).
async fn wait_for(
    store: &engine::Store,
    what: &str,
    done: impl Fn(engine::store::GroupStats) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done(store.group_stats()) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `first` (enough to take every group-commit slot, where they wait on a [`WriteBlock`]),
/// then `rest` once the slots are taken, and releases the block when every one of `rest` has
/// queued its request: `rest` then runs as one group. Returns the results of `first` and of
/// `rest`.
pub async fn as_one_group<A: Send + 'static, B: Send + 'static>(
    db: &engine::testing::TestDb,
    store: &engine::Store,
    first: Vec<futures::future::BoxFuture<'static, A>>,
    rest: Vec<futures::future::BoxFuture<'static, B>>,
) -> (Vec<A>, Vec<B>) {
    let block = WriteBlock::hold(db).await;
    // One at a time, so that each takes a slot of its own with its own request; takers beyond
    // the backend's slots (SQLite has one) queue with `rest`.
    let slots = store.group_stats().slots;
    let (mut takers, mut late) = (Vec::new(), Vec::new());
    for (k, taker) in first.into_iter().enumerate() {
        if k < slots {
            takers.push(tokio::spawn(taker));
            wait_for(store, "a slot taker", |g| g.running > k && g.queued == 0).await;
        } else {
            late.push(taker);
        }
    }
    let expected = rest.len() + late.len();
    let rest: Vec<_> = rest.into_iter().map(tokio::spawn).collect();
    takers.extend(late.into_iter().map(tokio::spawn));
    let first = takers;
    // Every one of `rest` queued behind the held slots.
    wait_for(store, "the rest to queue", |g| g.queued >= expected).await;
    block.release().await;
    let mut firsts = Vec::new();
    for t in first {
        firsts.push(t.await.unwrap());
    }
    let mut out = Vec::new();
    for t in rest {
        out.push(t.await.unwrap());
    }
    (firsts, out)
}
