//! A user's transferred data, in the Tidepool model: `GET /v1/users/{userId}/data`.
//! Roles `user` (own data only; another user id is 403), `service` and `ops`.
//!
//! Pages are keyset-paged on (time, connection id, partner record id), so records arriving
//! while a client pages never shift a page; the cursor is that key of the page's last datum,
//! as base64url (no padding) of a JSON array. It is opaque to clients and checked strictly:
//! anything that does not decode to such a key is 400 `invalid_cursor`.

use chrono::{DateTime, SecondsFormat, Utc};
use engine::{ids::ConnectionId, model::StoredRecord, store::RecordQuery};
use poem_openapi::{
    OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::Value;
use workflows::Workflows;

use crate::{
    ApiTags,
    models::DataPageJson,
    params::UserIdParam,
    problem::{Problem, endpoint_response},
    security::BearerAuth,
};

/// Datums per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 500;
/// Longest cursor accepted (ours are well under 300 characters).
const MAX_CURSOR_LEN: usize = 1024;

endpoint_response! {
    pub enum DataResponse {
        /// A page of the user's data, oldest first.
        Ok(Json<DataPageJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// The role may not read data, or a user named another user (`forbidden`).
        Forbidden = 403,
    }
}

pub struct DataApi {
    pub workflows: Workflows,
}

// One query parameter per argument is how poem-openapi declares them.
#[allow(clippy::too_many_arguments)]
#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Data")]
impl DataApi {
    /// A user's data from all their connections, in the Tidepool data model, oldest first.
    /// Records the partner deleted are not returned. Each datum carries an `id` (the
    /// partner's, or `<connectionId>:<partnerRecordId>`). Bad parameters are 400
    /// `invalid_parameter` (including `start` not before `end`), a cursor that was not
    /// returned by this endpoint is 400 `invalid_cursor`.
    #[oai(
        path = "/users/:userId/data",
        method = "get",
        operation_id = "listUserData"
    )]
    async fn list(
        &self,
        BearerAuth(caller): BearerAuth,
        /// Tidepool user id.
        #[oai(name = "userId")]
        user_id: Path<UserIdParam>,
        /// Only datums of this Tidepool type (`cbg`, `basal`, `bolus`, `deviceEvent`, …).
        #[oai(name = "type", validator(pattern = "^[a-zA-Z]{1,32}$"))]
        datum_type: Query<Option<String>>,
        /// Only datums at or after this time (RFC 3339).
        start: Query<Option<DateTime<Utc>>>,
        /// Only datums before this time (RFC 3339).
        end: Query<Option<DateTime<Utc>>>,
        /// Datums per page, 1 to 1000 (default 500).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// `nextCursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> DataResponse {
        let result = async {
            let user = caller.user_path(&user_id)?;
            if let (Some(start), Some(end)) = (start.0, end.0)
                && start >= end
            {
                return Err(Problem::bad_request(
                    "invalid_parameter",
                    "`start` must be before `end`",
                ));
            }
            let after = cursor.0.as_deref().map(decode_cursor).transpose()?;
            let limit = limit.0.unwrap_or(DEFAULT_LIMIT);
            let query = RecordQuery {
                user,
                datum_type: datum_type.0.clone(),
                start: start.0,
                end: end.0,
                after,
                // One more than asked, to know whether there is a next page.
                limit: u64::from(limit) + 1,
            };
            let mut records = self.workflows.store().records(&query).await?;
            let more = records.len() > limit as usize;
            records.truncate(limit as usize);
            let next_cursor = more.then(|| records.last().map(encode_cursor)).flatten();
            Ok::<_, Problem>(DataPageJson {
                data: records.into_iter().map(datum_with_id).collect(),
                next_cursor: next_cursor.into(),
            })
        };
        match result.await {
            Ok(page) => DataResponse::Ok(Json(page)),
            Err(problem) => problem.into(),
        }
    }
}

/// The stored datum, with an `id` when it has none.
fn datum_with_id(record: StoredRecord) -> Value {
    let mut datum = record.datum;
    if let Value::Object(map) = &mut datum
        && map.get("id").is_none_or(Value::is_null)
    {
        let id = format!("{}:{}", record.connection_id, record.partner_record_id);
        map.insert("id".to_owned(), Value::String(id));
    }
    datum
}

fn encode_cursor(record: &StoredRecord) -> String {
    let key = (
        record.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        &record.connection_id,
        &record.partner_record_id,
    );
    base64url::encode(serde_json::to_string(&key).unwrap_or_default().as_bytes())
}

fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, String, String), Problem> {
    let invalid =
        || Problem::bad_request("invalid_cursor", "`cursor` is not a cursor of this list");
    if raw.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = base64url::decode(raw).ok_or_else(invalid)?;
    let (time, connection_id, record_id): (String, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let time = DateTime::parse_from_rfc3339(&time).map_err(|_| invalid())?;
    if connection_id.parse::<ConnectionId>().is_err() || record_id.is_empty() {
        return Err(invalid());
    }
    Ok((time.with_timezone(&Utc), connection_id, record_id))
}

/// RFC 4648 §5 base64url without padding, strict: only canonical encodings decode (the
/// base64 crate rejects padding and non-zero trailing bits).
pub(crate) mod base64url {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, datum: Value) -> StoredRecord {
        StoredRecord {
            connection_id: "0190f5e2-7b1c-7d3e-8f00-0123456789ab".into(),
            partner_record_id: id.into(),
            datum_type: "cbg".into(),
            time: "2024-05-01T12:00:00.123456Z".parse().unwrap(),
            retired: false,
            datum,
        }
    }

    #[test]
    fn base64url_round_trips_and_is_strict() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "\u{ff}\u{fe}?>",
        ] {
            let encoded = base64url::encode(text.as_bytes());
            assert!(!encoded.contains(['=', '+', '/']));
            assert_eq!(base64url::decode(&encoded).unwrap(), text.as_bytes());
        }
        assert_eq!(base64url::encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url::encode(&[0xfb, 0xff]), "-_8");
        for bad in ["Zm9vYmF", "Zg==", "Zh", "Zm9v YmFy", "Zm+v", "é"] {
            assert!(base64url::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let r = record("rec-1", serde_json::json!({}));
        let cursor = encode_cursor(&r);
        assert_eq!(
            decode_cursor(&cursor).unwrap(),
            (r.time, r.connection_id.clone(), r.partner_record_id.clone())
        );
        let forged = |json: &str| base64url::encode(json.as_bytes());
        for bad in [
            String::new(),
            "garbage!".to_owned(),
            format!("{cursor}A"),
            forged(r#"["2024-05-01T12:00:00Z","not-a-uuid","x"]"#),
            forged(r#"["yesterday","0190f5e2-7b1c-7d3e-8f00-0123456789ab","x"]"#),
            forged(r#"["2024-05-01T12:00:00Z","0190f5e2-7b1c-7d3e-8f00-0123456789ab",""]"#),
            forged(r#"{"time":"2024-05-01T12:00:00Z"}"#),
            "A".repeat(MAX_CURSOR_LEN + 4),
        ] {
            assert_eq!(
                decode_cursor(&bad).unwrap_err().code,
                "invalid_cursor",
                "{bad}"
            );
        }
    }

    #[test]
    fn datums_get_an_id_unless_they_have_one() {
        let got = datum_with_id(record("rec-1", serde_json::json!({"type": "cbg"})));
        assert_eq!(got["id"], "0190f5e2-7b1c-7d3e-8f00-0123456789ab:rec-1");
        let kept = datum_with_id(record("rec-1", serde_json::json!({"id": "abc"})));
        assert_eq!(kept["id"], "abc");
    }
}
