//! Storage and the state machine against a real SQLite file and a real PostgreSQL database.
//!
//! # Layout
//! - `main.rs`: shared helpers.
//! - `lifecycle.rs`: transitions, the journal, authorizations, tokens, revocations.
//! - `columns.rs`: the columns transitions and transfers share: counters by SQL arithmetic,
//!   transfer guards from `State::may_transfer`, refresh and transfer bookkeeping apart.
//! - `transfer.rs`: group commit, failing writes, skipped records, storable text.
//! - `alerts.rs`: folded, bounded operator alerts.

mod alerts;
mod columns;
mod lifecycle;
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
                datum: serde_json::json!({"type": "cbg", "value": i * 100 + k, "note": "a \"quoted\" ✓"}),
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

/// `n` active connections, all due and claimed, their transfers started concurrently.
pub async fn started(store: &Store, prefix: &str, n: usize) -> Vec<SyncLease> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(active(store, &format!("{prefix}{i}"), "a", "r").await.id);
    }
    let claimed = store.claim_due(1000, LEASE).await.unwrap();
    assert_eq!(claimed.len(), n, "every new connection is due at once");
    let starts = claimed.iter().map(|c| {
        let store = store.clone();
        let c = c.clone();
        tokio::spawn(async move { store.start_sync(c.id, c.version, LEASE).await })
    });
    let mut leases: Vec<SyncLease> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().expect("started"))
        .collect();
    leases.sort_by_key(|l| ids.iter().position(|id| *id == l.connection.id));
    leases
}
