//! One window's records as they arrive (docs/partner-data.md): each is mapped the moment the
//! data client hands it over, so only its compact datum waits for the window's commit; what
//! cannot be read, mapped or believed is skipped with a stable key and its reason. (Repeated
//! ids are resolved and counted by the store when it prepares the window: one place, and no
//! second copy of every id here.)

use chrono::{DateTime, Utc};
use engine::{
    ids::ConnectionId,
    store::{Chunk, SkippedRecord},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::plausible::Plausible;
use crate::{
    mapping::{MappingContext, map_record},
    records::{MappedRecord, RawRecord, RecordKind, Unreadable},
};

/// The records of one window so far.
pub(super) struct WindowBatch<'a> {
    id: ConnectionId,
    ctx: &'a MappingContext,
    plausible: Plausible,
    records: Vec<MappedRecord>,
    skipped: Vec<SkippedRecord>,
}

fn kind_name(kind: RecordKind) -> String {
    format!("{kind:?}").to_lowercase()
}

impl<'a> WindowBatch<'a> {
    pub(super) fn new(id: ConnectionId, ctx: &'a MappingContext, plausible: Plausible) -> Self {
        Self {
            id,
            ctx,
            plausible,
            records: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Takes one record from the data client.
    pub(super) fn take(&mut self, kind: RecordKind, item: Result<Value, Unreadable>) {
        let value = match item {
            Ok(value) => value,
            Err(Unreadable { key, reason }) => {
                return self.skip(key, kind_name(kind), None, reason);
            }
        };
        let raw = RawRecord { kind, value };
        let mapped = match map_record(self.ctx, &raw) {
            Ok(mapped) => mapped,
            Err(skipped) => {
                // A record without an id is named by its content, the same on every re-read.
                let key = skipped.partner_record_id.clone().unwrap_or_else(|| {
                    let text = serde_json::to_string(&raw.value).unwrap_or_default();
                    format!("unidentified:{}", hex::encode(&Sha256::digest(text)[..12]))
                });
                return self.skip(
                    key,
                    kind_name(kind),
                    skipped.partner_record_id,
                    skipped.reason,
                );
            }
        };
        drop(raw);
        if let Some(reason) = self.plausible.check(&mapped) {
            let id = mapped.partner_record_id;
            return self.skip(id.clone(), mapped.datum_type, Some(id), reason.to_owned());
        }
        self.records.push(mapped);
    }

    fn skip(&mut self, key: String, kind: String, id: Option<String>, reason: String) {
        self.skipped.push(SkippedRecord {
            key,
            kind,
            partner_record_id: id,
            reason,
        });
    }

    /// The window as a chunk to commit, with one log line per skipped record naming its kind,
    /// key and reason (never a value).
    /// The window's records and skips, for the window that began at `window_start`.
    pub(super) fn into_chunk(self, window_start: DateTime<Utc>) -> Chunk {
        for s in &self.skipped {
            tracing::warn!(connection = %self.id, kind = %s.kind, record = %s.key, reason = %s.reason, "partner record skipped");
        }
        Chunk {
            records: self.records,
            skipped: self.skipped,
            window_start: Some(window_start),
        }
    }
}
