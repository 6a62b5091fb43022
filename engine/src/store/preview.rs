//! What committing a window would do, without committing it (the re-fetch's dry run,
//! docs/coverage.md#refetch): each record is prepared exactly as a commit prepares it
//! (`upsert::prepare`: deduplicated, made storable, hashed) and compared with the stored row of
//! the same partner record id. Reads only.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Statement};

use super::{
    Result, Store,
    rows::{json_param, json_rows},
    transfer::Chunk,
    upsert::prepare,
};
use crate::ids::ConnectionId;

/// Rows per lookup statement.
const IDS_PER_STATEMENT: usize = 1_000;

/// What a window's commit would write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preview {
    /// Records not stored yet.
    pub inserted: u64,
    /// Stored records whose contents would change (not counting retirements).
    pub updated: u64,
    /// Stored records read again unchanged.
    pub unchanged: u64,
    /// Stored live records the partner now marks deleted.
    pub retired: u64,
    /// Records the window could not store (unreadable, unmappable, implausible).
    pub skipped: u64,
}

impl Preview {
    pub fn add(&mut self, other: Preview) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.retired += other.retired;
        self.skipped += other.skipped;
    }
}

#[derive(serde::Serialize)]
struct IdRow<'a> {
    r: &'a str,
}

impl Store {
    /// What committing `chunk` to `connection` would write.
    pub async fn preview_chunk(&self, connection: ConnectionId, chunk: Chunk) -> Result<Preview> {
        let mut records = chunk.records;
        let (hashes, _) = prepare(&mut records)?;
        let backend = self.db.get_database_backend();
        let sql = format!(
            "SELECT d.partner_record_id AS r, d.datum_hash AS h, d.retired AS retired \
             FROM data_records d JOIN {} ON d.partner_record_id = v.r \
             WHERE d.connection_id = $2",
            json_rows(backend, 1, &[("r", "text")])
        );
        let mut stored: HashMap<String, (String, bool)> = HashMap::new();
        for part in records.chunks(IDS_PER_STATEMENT) {
            let ids: Vec<IdRow<'_>> = part
                .iter()
                .map(|r| IdRow {
                    r: &r.partner_record_id,
                })
                .collect();
            let rows = self
                .db
                .query_all_raw(Statement::from_sql_and_values(
                    backend,
                    sql.clone(),
                    [json_param(&ids)?, connection.to_string().into()],
                ))
                .await?;
            for row in rows {
                stored.insert(
                    row.try_get("", "r")?,
                    (row.try_get("", "h")?, row.try_get("", "retired")?),
                );
            }
        }
        let mut preview = Preview {
            skipped: chunk.skipped.len() as u64,
            ..Preview::default()
        };
        for (record, hash) in records.iter().zip(&hashes) {
            match stored.get(&record.partner_record_id) {
                None => preview.inserted += 1,
                Some((h, _)) if *h == hex::encode(hash) => preview.unchanged += 1,
                Some((_, false)) if record.retired => preview.retired += 1,
                Some(_) => preview.updated += 1,
            }
        }
        Ok(preview)
    }
}
