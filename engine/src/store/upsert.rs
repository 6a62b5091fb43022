//! Writing a group's records and skipped records: one statement per 1,000 rows of the whole
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

/// Rows per statement (one JSON parameter; this bounds its size, and what a large window costs
/// while it is written: a group of 64 ordinary transfers is under 1,000 rows).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Longest skip reason kept.
const MAX_REASON_CHARS: usize = 200;

/// Deduplicates a chunk by partner record id (overlapping windows, a partner repeating itself:
/// the last one wins) and counts the repeats whose content differed; makes every string
/// storable on both backends and hashes each datum (SHA-256 of the datum and the retired flag,
/// hex-encoded when written). Works in place: a large window is prepared without a second copy
/// of its records (docs/partner-data.md#memory). Returns the hashes, in the records' order, and
/// the count of conflicting repeats.
pub(super) fn prepare(records: &mut Vec<MappedRecord>) -> Result<(Vec<[u8; 32]>, u64)> {
    // Stable: among equal ids the original order remains, so the last is the latest.
    records.sort_by(|a, b| a.partner_record_id.cmp(&b.partner_record_id));
    let mut conflicting = 0;
    // `dedup_by` keeps the first of a run (`kept`); give it the later one's content.
    records.dedup_by(|later, kept| {
        if later.partner_record_id != kept.partner_record_id {
            return false;
        }
        if later.datum.get() != kept.datum.get() || later.retired != kept.retired {
            conflicting += 1;
        }
        std::mem::swap(later, kept);
        true
    });
    let mut hashes = Vec::with_capacity(records.len());
    for record in records.iter_mut() {
        if record.partner_record_id.contains('\0') {
            record.partner_record_id = storable(&record.partner_record_id);
        }
        if record.datum_type.contains('\0') {
            record.datum_type = storable(&record.datum_type);
        }
        if let std::borrow::Cow::Owned(text) = storable_json(record.datum.get()) {
            record.datum = serde_json::value::RawValue::from_string(text)
                .map_err(|e| StoreError::Corrupt(format!("cannot serialise a datum: {e}")))?;
        }
        let mut hasher = Sha256::new();
        hasher.update(record.datum.get().as_bytes());
        hasher.update([u8::from(record.retired)]);
        hashes.push(hasher.finalize().into());
    }
    Ok((hashes, conflicting))
}

/// One connection's writes in a group commit (empty when its lease was lost).
pub(super) struct Writes<'a> {
    pub(super) connection_id: &'a str,
    pub(super) user_id: &'a str,
    pub(super) records: &'a [MappedRecord],
    /// `records`' hashes ([`prepare`]).
    pub(super) hashes: &'a [[u8; 32]],
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
    h: String,
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
    let rows: Vec<(&Writes<'_>, &MappedRecord, &[u8; 32])> = writes
        .iter()
        .flat_map(|w| w.records.iter().zip(w.hashes).map(move |(r, h)| (w, r, h)))
        .collect();
    let sql = match backend {
        DbBackend::Postgres => PG_UPSERT.as_str(),
        _ => SQLITE_UPSERT.as_str(),
    };
    for slice in rows.chunks(ROWS_PER_STATEMENT) {
        let encoded: Vec<RecordRow<'_>> = slice
            .iter()
            .map(|(w, r, hash)| RecordRow {
                c: w.connection_id,
                r: &r.partner_record_id,
                u: w.user_id,
                t: &r.datum_type,
                time: json_time(backend, r.time),
                datum: &r.datum,
                h: hex::encode(hash),
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
