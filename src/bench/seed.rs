//! Seeding: connections inserted in bulk (sealed tokens per row, grants registered in the
//! sandbox without the browser flow), as if N users had connected an hour ago.

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    Store,
    crypto::Keyring,
    ids::ConnectionId,
    store::entities::{connection, data_record},
};
use sandbox::{Flavor, Sandbox};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};

/// Which part of the benchmark a seeded connection belongs to (its user id prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Due at once: the saturated backlog measured for cycles/s.
    Throughput,
    /// Not due; given paced due times for the lag phase.
    Lag,
    /// Not due; written by the raw-SQL floor loop.
    Floor,
}

impl Group {
    pub fn prefix(self) -> &'static str {
        match self {
            Group::Throughput => "bench-t-",
            Group::Lag => "bench-l-",
            Group::Floor => "bench-f-",
        }
    }

    pub fn user(self, i: usize) -> String {
        format!("{}{i:07}", self.prefix())
    }
}

/// Inserts `count` active connections of `group` for partner `partner`, each with its own
/// sandbox grant and sealed tokens, `fetched_through = through`. Returns their ids in order.
#[allow(clippy::too_many_arguments)]
pub async fn seed(
    store: &Store,
    keyring: &Keyring,
    sandbox: &Sandbox,
    partner: &str,
    group: Group,
    count: usize,
    through: DateTime<Utc>,
    due: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<String>> {
    let now = Utc::now();
    let expires = now + TimeDelta::days(30);
    let mut ids = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(500) {
        let end = (chunk_start + 500).min(count);
        let mut rows = Vec::with_capacity(end - chunk_start);
        for i in chunk_start..end {
            let user = group.user(i);
            let (access, refresh) = sandbox.seed_grant(Flavor::Cgm, &user, TimeDelta::days(30));
            let id = ConnectionId::new().to_string();
            let plain = serde_json::json!({ "a": access, "r": refresh }).to_string();
            let sealed = keyring.seal(format!("tokens:{id}").as_bytes(), plain.as_bytes());
            rows.push(connection::ActiveModel {
                id: Set(id.clone()),
                user_id: Set(user),
                partner: Set(partner.to_owned()),
                state: Set("active".to_owned()),
                version: Set(1),
                created_at: Set(now),
                updated_at: Set(now),
                state_changed_at: Set(now),
                last_error_code: Set(None),
                last_error: Set(None),
                failure_count: Set(0),
                records_skipped: Set(0),
                paused: Set(false),
                token_ciphertext: Set(Some(sealed.blob)),
                token_key_id: Set(Some(sealed.key_id)),
                token_expires_at: Set(Some(expires)),
                scope: Set(Some(sandbox::OFFLINE_ACCESS.to_owned())),
                earliest_data_time: Set(None),
                latest_data_time: Set(None),
                last_sync_at: Set(None),
                next_sync_at: Set(due),
                fetched_through: Set(Some(through)),
                fetched_from: Set(Some(through - chrono::TimeDelta::days(30))),
                failing_since: Set(None),
                sync_lease_until: Set(None),
                sync_lease_token: Set(None),
                sync_requested_at: Set(None),
                refresh_failures: Set(0),
                refresh_due_at: Set(Some(expires)),
                refresh_outcome_unknown_at: Set(None),
                records_conflicting: Set(0),
                // Steady state: the daily late-change re-read happened recently (a 7-day
                // re-read on every first cycle would measure something else).
                reread_at: Set(Some(now)),
                contact_ciphertext: Set(None),
                contact_key_id: Set(None),
                idle_runs: Set(0),
            });
            ids.push(id);
        }
        connection::Entity::insert_many(rows)
            .exec_without_returning(store.db())
            .await?;
    }
    Ok(ids)
}

/// Gives the lag-group connections `due[i]` as their next sync time (one transaction).
pub async fn schedule(store: &Store, due: &[(String, DateTime<Utc>)]) -> anyhow::Result<()> {
    let txn = store.db().begin().await?;
    for (id, at) in due {
        connection::Entity::update_many()
            .set(connection::ActiveModel {
                next_sync_at: Set(Some(*at)),
                ..Default::default()
            })
            .filter(connection::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Stops the remaining throughput backlog from being claimed (those not yet claimed).
pub async fn park_backlog(store: &Store) -> anyhow::Result<()> {
    use sea_orm::QuerySelect as _;
    let unclaimed = connection::Entity::find()
        .select_only()
        .column(connection::Column::Id)
        .filter(connection::Column::UserId.starts_with(Group::Throughput.prefix()))
        .filter(connection::Column::LastSyncAt.is_null())
        .filter(connection::Column::SyncLeaseUntil.is_null());
    let mut unclaimed = sea_orm::QueryTrait::into_query(unclaimed);
    // Workers are still busy: lock only rows nobody holds (a row being claimed right now is
    // left to its claimer), so this mass write cannot deadlock with a worker's group writes.
    if store.backend() == engine::store::Backend::Postgres {
        unclaimed.lock_with_behavior(
            sea_orm::sea_query::LockType::Update,
            sea_orm::sea_query::LockBehavior::SkipLocked,
        );
    }
    connection::Entity::update_many()
        .set(connection::ActiveModel {
            next_sync_at: Set(None),
            ..Default::default()
        })
        .filter(connection::Column::Id.in_subquery(unclaimed))
        .exec(store.db())
        .await?;
    // Parking rewrites up to N rows at once, which no real fleet does: without a vacuum the
    // due-index scans of the lag phase wade through the dead versions and the planner works
    // from statistics of an all-due table. Put the table back into a steady state first.
    if store.backend() == engine::store::Backend::Postgres {
        use sea_orm::ConnectionTrait as _;
        store
            .db()
            .execute_unprepared("VACUUM (ANALYZE) connections")
            .await?;
    }
    Ok(())
}

/// `(user_id, last_sync_at)` of a group's connections.
pub async fn last_syncs(
    store: &Store,
    group: Group,
) -> anyhow::Result<Vec<(String, Option<DateTime<Utc>>)>> {
    Ok(connection::Entity::find()
        .filter(connection::Column::UserId.starts_with(group.prefix()))
        .all(store.db())
        .await?
        .into_iter()
        .map(|c| (c.id, c.last_sync_at))
        .collect())
}

/// Stored data records (all connections).
pub async fn record_count(store: &Store) -> anyhow::Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(data_record::Entity::find().count(store.db()).await?)
}

/// Step runs written (docs/operations.md#step-runs).
pub async fn run_count(store: &Store) -> anyhow::Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(engine::store::entities::step_run::Entity::find()
        .count(store.db())
        .await?)
}

/// Completed cycles of the throughput group and how many of them recorded an error.
pub async fn progress(store: &Store) -> anyhow::Result<(u64, u64)> {
    use sea_orm::PaginatorTrait;
    let done = connection::Entity::find()
        .filter(connection::Column::UserId.starts_with(Group::Throughput.prefix()))
        .filter(connection::Column::LastSyncAt.is_not_null())
        .count(store.db())
        .await?;
    let errors = connection::Entity::find()
        .filter(connection::Column::LastErrorCode.is_not_null())
        .count(store.db())
        .await?;
    Ok((done, errors))
}
