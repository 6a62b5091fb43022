//! Writing a group's records and skipped records: one statement per 5,000 rows of the whole
//! group, the same text on both backends (`rows.rs`). New records are inserted, changed ones
//! (partner corrections, deletions) updated, unchanged ones neither written nor returned; the
//! `revision` each returned row carries tells an insert (1) from an update.

use std::{
    collections::{BTreeMap, HashMap},
    sync::LazyLock,
};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use sha2::{Digest, Sha256};

use super::{
    Result, StoreError,
    rows::{json_param, json_rows, json_time},
    transfer::{ChunkStats, SkippedRecord},
};
use crate::{
    model::MappedRecord,
    text::{bounded, storable, storable_json},
};

/// Rows per statement (one JSON parameter; this bounds its size).
const ROWS_PER_STATEMENT: usize = 5_000;

/// Longest skip reason kept.
const MAX_REASON_CHARS: usize = 200;

/// A mapped record ready to store: the datum serialised once, for both its hash and the row.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    partner_record_id: String,
    datum_type: String,
    time: DateTime<Utc>,
    retired: bool,
    /// Serialised once here, made storable on both backends (no `\u0000`).
    datum: Box<serde_json::value::RawValue>,
    hash: String,
}

/// Deduplicates a chunk by partner record id (the caller counts conflicting duplicates; the
/// last one wins), makes each datum storable on both backends and hashes it.
pub(super) fn prepare(records: Vec<MappedRecord>) -> Result<Vec<Prepared>> {
    let mut unique: BTreeMap<String, MappedRecord> = BTreeMap::new();
    for record in records {
        unique.insert(record.partner_record_id.clone(), record);
    }
    unique
        .into_values()
        .map(|record| {
            let rewritten = match storable_json(record.datum.get()) {
                std::borrow::Cow::Borrowed(_) => None,
                std::borrow::Cow::Owned(text) => Some(text),
            };
            let datum = match rewritten {
                None => record.datum,
                Some(text) => serde_json::value::RawValue::from_string(text)
                    .map_err(|e| StoreError::Corrupt(format!("cannot serialise a datum: {e}")))?,
            };
            let mut hasher = Sha256::new();
            hasher.update(datum.get().as_bytes());
            hasher.update([u8::from(record.retired)]);
            Ok(Prepared {
                partner_record_id: storable(&record.partner_record_id),
                datum_type: storable(&record.datum_type),
                time: record.time,
                retired: record.retired,
                datum,
                hash: hex::encode(hasher.finalize()),
            })
        })
        .collect()
}

/// One connection's writes in a group commit (empty when its lease was lost).
pub(super) struct Writes<'a> {
    pub(super) connection_id: &'a str,
    pub(super) user_id: &'a str,
    pub(super) records: &'a [Prepared],
    pub(super) skipped: &'a [SkippedRecord],
}

#[derive(serde::Serialize)]
struct RecordRow<'a> {
    c: &'a str,
    r: &'a str,
    u: &'a str,
    t: &'a str,
    time: String,
    datum: &'a serde_json::value::RawValue,
    h: &'a str,
    retired: bool,
}

fn upsert_statement(backend: DbBackend) -> String {
    let rows = json_rows(
        backend,
        1,
        &[
            ("c", "text"),
            ("r", "text"),
            ("u", "text"),
            ("t", "text"),
            ("time", "timestamptz"),
            ("datum", "json"),
            ("h", "text"),
            ("retired", "boolean"),
        ],
    );
    // `WHERE true`: SQLite needs it to read `ON CONFLICT` after `INSERT … SELECT`.
    format!(
        "INSERT INTO data_records (connection_id, partner_record_id, user_id, datum_type, time,
            datum, datum_hash, retired, created_at, updated_at, revision)
         SELECT v.c, v.r, v.u, v.t, v.time, v.datum, v.h, v.retired, $2, $3, 1 FROM {rows}
         WHERE true
         ON CONFLICT (connection_id, partner_record_id) DO UPDATE SET
            datum_type = excluded.datum_type, time = excluded.time, datum = excluded.datum,
            datum_hash = excluded.datum_hash, retired = excluded.retired,
            updated_at = excluded.updated_at, revision = data_records.revision + 1
         WHERE data_records.datum_hash <> excluded.datum_hash
         RETURNING connection_id, revision"
    )
}

static PG_UPSERT: LazyLock<String> = LazyLock::new(|| upsert_statement(DbBackend::Postgres));
static SQLITE_UPSERT: LazyLock<String> = LazyLock::new(|| upsert_statement(DbBackend::Sqlite));

/// Inserts new records, updates changed ones, leaves unchanged ones alone, and counts each,
/// per connection.
pub(super) async fn upsert_records(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    writes: &[Writes<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<ChunkStats>> {
    let mut stats = vec![ChunkStats::default(); writes.len()];
    let index: HashMap<&str, usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.records.is_empty())
        .map(|(i, w)| (w.connection_id, i))
        .collect();
    let rows: Vec<(&Writes<'_>, &Prepared)> = writes
        .iter()
        .flat_map(|w| w.records.iter().map(move |r| (w, r)))
        .collect();
    let sql = match backend {
        DbBackend::Postgres => PG_UPSERT.as_str(),
        _ => SQLITE_UPSERT.as_str(),
    };
    for slice in rows.chunks(ROWS_PER_STATEMENT) {
        let encoded: Vec<RecordRow<'_>> = slice
            .iter()
            .map(|(w, r)| RecordRow {
                c: w.connection_id,
                r: &r.partner_record_id,
                u: w.user_id,
                t: &r.datum_type,
                time: json_time(backend, r.time),
                datum: &r.datum,
                h: &r.hash,
                retired: r.retired,
            })
            .collect();
        let written = txn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [json_param(&encoded)?, now.into(), now.into()],
            ))
            .await?;
        for row in written {
            let connection_id: String = row.try_get("", "connection_id")?;
            let revision: i64 = row.try_get("", "revision")?;
            let Some(&i) = index.get(connection_id.as_str()) else {
                continue;
            };
            if revision == 1 {
                stats[i].inserted += 1;
            } else {
                stats[i].updated += 1;
            }
        }
    }
    for (w, s) in writes.iter().zip(&mut stats) {
        s.unchanged = (w.records.len() as u64).saturating_sub(s.inserted + s.updated);
    }
    Ok(stats)
}

#[derive(serde::Serialize)]
struct SkipRow<'a> {
    c: &'a str,
    key: String,
    kind: String,
    pid: Option<String>,
    reason: String,
}

fn skip_statement(backend: DbBackend) -> String {
    let rows = json_rows(
        backend,
        1,
        &[
            ("c", "text"),
            ("key", "text"),
            ("kind", "text"),
            ("pid", "text"),
            ("reason", "text"),
        ],
    );
    format!(
        "INSERT INTO skipped_records (connection_id, record_key, kind, partner_record_id, reason,
            first_seen_at, last_seen_at, seen_count)
         SELECT v.c, v.key, v.kind, v.pid, v.reason, $2, $3, 1 FROM {rows}
         WHERE true
         ON CONFLICT (connection_id, record_key) DO UPDATE SET
            last_seen_at = excluded.last_seen_at, reason = excluded.reason,
            seen_count = skipped_records.seen_count + 1
         RETURNING connection_id, seen_count"
    )
}

fn skip_count_statement(backend: DbBackend) -> String {
    format!(
        "UPDATE connections SET records_skipped = records_skipped + v.n FROM {rows}
         WHERE connections.id = v.k",
        rows = json_rows(backend, 1, &[("k", "text"), ("n", "bigint")]),
    )
}

static PG_SKIP: LazyLock<String> = LazyLock::new(|| skip_statement(DbBackend::Postgres));
static SQLITE_SKIP: LazyLock<String> = LazyLock::new(|| skip_statement(DbBackend::Sqlite));

/// Records each connection's skipped records once per (connection, record key) and adds the
/// ones seen for the first time to the connection's count. Returns those counts.
pub(super) async fn record_skips(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    writes: &[Writes<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<u64>> {
    let mut new = vec![0u64; writes.len()];
    if writes.iter().all(|w| w.skipped.is_empty()) {
        return Ok(new);
    }
    let mut rows = Vec::new();
    for w in writes {
        // One row per key: a statement may not update one row twice.
        let mut unique: BTreeMap<String, &SkippedRecord> = BTreeMap::new();
        for s in w.skipped {
            unique.insert(storable(&s.key), s);
        }
        rows.extend(unique.into_iter().map(|(key, s)| SkipRow {
            c: w.connection_id,
            key: bounded(&key, 160),
            kind: bounded(&s.kind, 32),
            pid: s.partner_record_id.as_deref().map(|p| bounded(p, 160)),
            reason: bounded(&s.reason, MAX_REASON_CHARS),
        }));
    }
    let index: HashMap<&str, usize> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| (w.connection_id, i))
        .collect();
    let sql = match backend {
        DbBackend::Postgres => PG_SKIP.as_str(),
        _ => SQLITE_SKIP.as_str(),
    };
    for slice in rows.chunks(ROWS_PER_STATEMENT) {
        let written = txn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [json_param(&slice)?, now.into(), now.into()],
            ))
            .await?;
        for row in written {
            let connection_id: String = row.try_get("", "connection_id")?;
            let seen: i64 = row.try_get("", "seen_count")?;
            if let (1, Some(&i)) = (seen, index.get(connection_id.as_str())) {
                new[i] += 1;
            }
        }
    }
    #[derive(serde::Serialize)]
    struct CountRow<'a> {
        k: &'a str,
        n: i64,
    }
    let counts: Vec<CountRow<'_>> = writes
        .iter()
        .zip(&new)
        .filter(|(_, n)| **n > 0)
        .map(|(w, n)| CountRow {
            k: w.connection_id,
            n: i64::try_from(*n).unwrap_or(i64::MAX),
        })
        .collect();
    if !counts.is_empty() {
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            skip_count_statement(backend),
            [json_param(&counts)?],
        ))
        .await?;
    }
    Ok(new)
}
