//! Opaque, stable paging cursors for the pump API.
//!
//! A cursor carries the query it belongs to, the position (last key served) and the snapshot
//! time `as_of` of the first page. Every page of one paging run is computed as of that
//! snapshot, so the same query and cursor always return the same page and a run never skips or
//! repeats a record even while new records are being published; what was published meanwhile
//! is picked up by the client's next run. A checksum rejects edited or foreign cursors.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Keyed into the checksum so a client cannot forge a cursor by re-encoding one.
const SALT: &[u8] = b"tributary-sandbox-cursor-v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// `basal` or `bolus`.
    kind: String,
    /// Partner user the run is for.
    user: String,
    start: String,
    end: String,
    /// Snapshot time of the run, RFC 3339.
    as_of: String,
    /// Key (`time`, `id`) of the last record served.
    after_time: String,
    after_id: String,
}

/// The query a cursor must match.
pub(crate) struct Query<'a> {
    pub kind: &'a str,
    pub user: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl Cursor {
    pub fn new(q: &Query<'_>, as_of: DateTime<Utc>, after: (String, String)) -> Self {
        Cursor {
            kind: q.kind.to_owned(),
            user: q.user.to_owned(),
            start: ts(q.start),
            end: ts(q.end),
            as_of: ts(as_of),
            after_time: after.0,
            after_id: after.1,
        }
    }

    pub fn encode(&self) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursor serializes"));
        let sum = checksum(&payload);
        format!("{payload}.{sum}")
    }

    /// Decodes a cursor for `q`; `None` if malformed, tampered with, or from another query.
    pub fn decode(raw: &str, q: &Query<'_>) -> Option<Self> {
        let (payload, sum) = raw.split_once('.')?;
        if checksum(payload) != sum {
            return None;
        }
        let cursor: Cursor = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let matches = cursor.kind == q.kind
            && cursor.user == q.user
            && cursor.start == ts(q.start)
            && cursor.end == ts(q.end);
        matches.then_some(cursor)
    }

    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.as_of)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn after(&self) -> (&str, &str) {
        (&self.after_time, &self.after_id)
    }
}

fn checksum(payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(SALT);
    h.update(payload.as_bytes());
    hex::encode(&h.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let q = Query {
            kind: "basal",
            user: "u",
            start,
            end: start + chrono::Duration::days(1),
        };
        let c = Cursor::new(&q, start, ("2026-01-01T00:30:00Z".into(), "id".into()));
        let raw = c.encode();
        assert_eq!(Cursor::decode(&raw, &q), Some(c));
        let other = Query { kind: "bolus", ..q };
        assert_eq!(Cursor::decode(&raw, &other), None);
        let q = Query {
            kind: "basal",
            ..other
        };
        let tampered = format!("x{raw}");
        assert_eq!(Cursor::decode(&tampered, &q), None);
        assert_eq!(Cursor::decode("garbage", &q), None);
    }
}
