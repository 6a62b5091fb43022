//! The group's lease checks and cursor advances, in one statement for a group of window
//! commits (`commit.rs`): each request's lease is checked on its own row; the rows whose lease
//! held come back. A run's last window also ends the run here (`fin`).

use std::{collections::HashMap, sync::LazyLock};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseTransaction, DbBackend, EntityTrait, Statement};

use super::{
    Result, Store,
    commit::CommitRequest,
    entities::connection,
    rows::{CONNECTION_COLUMNS, json_param, json_rows, json_time},
    transfer::{Tail, delta},
};
use crate::state::State;

#[derive(serde::Serialize)]
struct AdvanceRow<'a> {
    k: &'a str,
    tok: &'a str,
    thru: Option<String>,
    since: Option<String>,
    newest: Option<String>,
    oldest: Option<String>,
    conflicting: i64,
    until: Option<String>,
    fin: bool,
    next: Option<String>,
    reread: bool,
    /// An earlier window of the run moved `latest_data_time`.
    moved: bool,
}

/// Every request's lease check and cursor advance, in one statement for the group. The columns
/// a completed run writes (`fin`) are listed here once: streak and error cleared, next run
/// planned, lease released, `last_sync_at` set, `idle_runs` counted (0 when the run moved the
/// newest data time, else one more).
fn advance_statement(backend: DbBackend) -> String {
    let rows = json_rows(
        backend,
        1,
        &[
            ("k", "text"),
            ("tok", "text"),
            ("thru", "timestamptz"),
            ("since", "timestamptz"),
            ("newest", "timestamptz"),
            ("oldest", "timestamptz"),
            ("conflicting", "bigint"),
            ("until", "timestamptz"),
            ("fin", "boolean"),
            ("next", "timestamptz"),
            ("reread", "boolean"),
            ("moved", "boolean"),
        ],
    );
    let when_fin =
        |then: &str, column: &str| format!("CASE WHEN v.fin THEN {then} ELSE {column} END");
    format!(
        "UPDATE connections SET
            fetched_through = COALESCE(v.thru, fetched_through),
            fetched_from = CASE WHEN v.since IS NOT NULL
                AND (fetched_from IS NULL OR v.since < fetched_from)
                THEN v.since ELSE fetched_from END,
            latest_data_time = CASE WHEN v.newest IS NOT NULL
                AND (latest_data_time IS NULL OR v.newest > latest_data_time)
                THEN v.newest ELSE latest_data_time END,
            earliest_data_time = CASE WHEN v.oldest IS NOT NULL
                AND (earliest_data_time IS NULL OR v.oldest < earliest_data_time)
                THEN v.oldest ELSE earliest_data_time END,
            records_conflicting = records_conflicting + v.conflicting,
            sync_lease_until = {lease_until},
            sync_lease_token = {lease_token},
            next_sync_at = {next},
            last_sync_at = {last_sync},
            failure_count = {failures},
            failing_since = {failing},
            last_error_code = {error_code},
            last_error = {error},
            reread_at = CASE WHEN v.reread THEN $2 ELSE reread_at END,
            idle_runs = CASE WHEN NOT v.fin THEN idle_runs
                WHEN v.moved OR (v.newest IS NOT NULL
                    AND (latest_data_time IS NULL OR v.newest > latest_data_time)) THEN 0
                ELSE idle_runs + 1 END
         FROM {rows}
         WHERE connections.id = v.k AND connections.sync_lease_token = v.tok
           AND connections.state IN {states}
         RETURNING {columns}",
        lease_until = when_fin("NULL", "v.until"),
        lease_token = when_fin("NULL", "sync_lease_token"),
        next = when_fin("v.next", "next_sync_at"),
        last_sync = when_fin("$3", "last_sync_at"),
        failures = when_fin("0", "failure_count"),
        failing = when_fin("NULL", "failing_since"),
        error_code = when_fin("NULL", "last_error_code"),
        error = when_fin("NULL", "last_error"),
        states = State::transfer_guard_sql(),
        columns = *CONNECTION_COLUMNS,
    )
}

static PG_ADVANCE: LazyLock<String> = LazyLock::new(|| advance_statement(DbBackend::Postgres));
static SQLITE_ADVANCE: LazyLock<String> = LazyLock::new(|| advance_statement(DbBackend::Sqlite));

impl Store {
    /// The group's lease checks and cursor advances: the rows whose lease held, by id.
    pub(super) async fn advance_cursors(
        &self,
        txn: &DatabaseTransaction,
        group: &[CommitRequest],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, connection::Model>> {
        let backend = self.db.get_database_backend();
        let time = |t: DateTime<Utc>| json_time(backend, t);
        let rows: Vec<AdvanceRow<'_>> = group
            .iter()
            .map(|r| {
                let (until, fin, next, reread) = match r.tail {
                    Tail::Extend { lease, reread } => {
                        (Some(time(now + delta(lease))), false, None, reread)
                    }
                    Tail::Finish {
                        next_sync_at,
                        reread,
                        ..
                    } => (None, true, Some(time(next_sync_at)), reread),
                };
                AdvanceRow {
                    k: &r.id,
                    tok: &r.token,
                    thru: r.fetched_through.map(time),
                    since: r.window_start.map(time),
                    newest: r.newest.map(time),
                    oldest: r.oldest.map(time),
                    conflicting: i64::try_from(r.conflicting).unwrap_or(i64::MAX),
                    until,
                    fin,
                    next,
                    reread,
                    moved: r.moved,
                }
            })
            .collect();
        let sql = match backend {
            DbBackend::Postgres => PG_ADVANCE.as_str(),
            _ => SQLITE_ADVANCE.as_str(),
        };
        Ok(connection::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(
                backend,
                sql,
                [json_param(&rows)?, now.into(), now.into()],
            ))
            .all(txn)
            .await?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect())
    }
}
