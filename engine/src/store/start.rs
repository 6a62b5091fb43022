//! Starting a claimed transfer: swapping a fresh lease token in. Concurrent starts share one
//! statement (group commit, `group.rs`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::LazyLock,
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{DbErr, EntityTrait, Statement};
use tokio::sync::oneshot;

use super::{
    Result, Store, StoreError,
    connections::to_domain,
    entities::connection,
    rows::{CONNECTION_COLUMNS, json_param, json_rows},
    runs::FetchRun,
    transfer::{SyncLease, delta},
};
use crate::{ids::ConnectionId, state::State};

/// A transfer start waiting for its group.
pub(super) struct StartRequest {
    id: String,
    version: i64,
    lease: Duration,
    reply: oneshot::Sender<Result<Option<(connection::Model, String)>>>,
}

#[derive(serde::Serialize)]
struct StartRow<'a> {
    k: &'a str,
    ver: i64,
}

/// Takes the leases of a group: each requested connection still claimable at the requested
/// version gets the token and its row back; a stale or duplicate request matches nothing.
fn start_statement(backend: sea_orm::DbBackend) -> String {
    format!(
        "UPDATE connections SET sync_lease_token = $1, sync_lease_until = $2 \
         FROM {rows} \
         WHERE connections.id = v.k AND connections.version = v.ver \
           AND connections.state IN {states} \
           AND connections.sync_lease_token IS NULL AND connections.sync_lease_until > $4 \
         RETURNING {columns}",
        rows = json_rows(backend, 3, &[("k", "text"), ("ver", "bigint")]),
        states = State::transfer_guard_sql(),
        columns = *CONNECTION_COLUMNS,
    )
}

static PG_START: LazyLock<String> = LazyLock::new(|| start_statement(sea_orm::DbBackend::Postgres));
static SQLITE_START: LazyLock<String> =
    LazyLock::new(|| start_statement(sea_orm::DbBackend::Sqlite));

impl Store {
    /// Starts a claimed transfer. `None`: the job is stale (version moved, no longer able to
    /// transfer, claim expired) or another worker already started it — do nothing.
    pub async fn start_sync(
        &self,
        id: ConnectionId,
        version: i64,
        lease: Duration,
    ) -> Result<Option<SyncLease>> {
        let (reply, answer) = oneshot::channel();
        let request = StartRequest {
            id: id.to_string(),
            version,
            lease,
            reply,
        };
        let store = self.clone();
        let started = self
            .groups
            .starts
            .submit(request, answer, move |group| {
                store.clone().start_group(group)
            })
            .await
            .ok_or_else(super::commit::group_failed)??;
        let Some((row, token)) = started else {
            return Ok(None);
        };
        let tokens = self.decrypt_tokens(&row)?;
        let connection = to_domain(row)?;
        let run = FetchRun::new(self.clock.now(), connection.latest_data_time);
        Ok(Some(SyncLease {
            connection,
            tokens,
            token,
            run,
        }))
    }

    /// One statement per lease length (in practice one) for the whole group.
    async fn start_group(self, group: Vec<StartRequest>) {
        let now = self.clock.now();
        let mut by_lease: BTreeMap<Duration, Vec<StartRequest>> = BTreeMap::new();
        for request in group {
            by_lease.entry(request.lease).or_default().push(request);
        }
        for (lease, requests) in by_lease {
            self.groups.stats.started(requests.len());
            let until = now + delta(lease);
            match self.start_rows(&requests, until, now).await {
                Ok(answers) => {
                    for (r, answer) in requests.into_iter().zip(answers) {
                        let _ = r.reply.send(Ok(answer));
                    }
                }
                // A multi-row statement can deadlock with another multi-row write over the
                // same rows (PostgreSQL aborts one of them); a single-row one cannot.
                Err(err) if requests.len() > 1 => {
                    tracing::warn!(error = %err, size = requests.len(), "group start failed; starting its transfers one by one");
                    self.groups.stats.start_fell_back();
                    for r in requests {
                        let answer = self
                            .start_rows(std::slice::from_ref(&r), until, now)
                            .await
                            .map(|mut answers| answers.pop().flatten());
                        let _ = r.reply.send(answer);
                    }
                }
                Err(err) => {
                    for r in requests {
                        let _ = r
                            .reply
                            .send(Err(StoreError::Db(DbErr::Custom(err.to_string()))));
                    }
                }
            }
        }
    }

    /// For each request, its row and the token, or `None` (stale, or started by someone else).
    async fn start_rows(
        &self,
        requests: &[StartRequest],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<(connection::Model, String)>>> {
        let token = uuid::Uuid::new_v4().to_string();
        let wanted: Vec<StartRow<'_>> = requests
            .iter()
            .map(|r| StartRow {
                k: &r.id,
                ver: r.version,
            })
            .collect();
        let backend = self.db.get_database_backend();
        let sql = match self.backend() {
            super::Backend::Postgres => PG_START.as_str(),
            super::Backend::Sqlite => SQLITE_START.as_str(),
        };
        let rows = connection::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(
                backend,
                sql,
                [
                    token.clone().into(),
                    until.into(),
                    json_param(&wanted)?,
                    now.into(),
                ],
            ))
            .all(&self.db)
            .await?;
        let mut rows: HashMap<String, connection::Model> =
            rows.into_iter().map(|row| (row.id.clone(), row)).collect();
        // Two requests for one connection (a duplicated job): the row goes to the first.
        Ok(requests
            .iter()
            .map(|r| rows.remove(&r.id).map(|row| (row, token.clone())))
            .collect())
    }

    /// Re-reads the leased connection and its tokens (after an inline refresh changed them).
    pub async fn reload_lease(&self, lease: &mut SyncLease) -> Result<()> {
        let row = connection::Entity::find_by_id(lease.connection.id.to_string())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        lease.tokens = self.decrypt_tokens(&row)?;
        lease.connection = to_domain(row)?;
        Ok(())
    }
}
