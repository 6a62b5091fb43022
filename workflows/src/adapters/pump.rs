//! The pump cloud: `GET <base>/v1/users/self/{basal,bolus}?start&end&cursor&limit` (RFC 3339,
//! `[start, end)`) → `{"records": […], "nextCursor": "…" | null}`, followed to the end.

use chrono::{DateTime, SecondsFormat, Utc};
use engine::secret::SecretString;
use serde_json::Value;

use super::{FetchError, Inner, WindowShare};
use crate::records::{RecordKind, RecordSink};

const LISTS: [(&str, RecordKind); 2] = [("basal", RecordKind::Basal), ("bolus", RecordKind::Bolus)];

pub(super) async fn fetch(
    inner: &Inner,
    token: &SecretString,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    kinds: Option<&[RecordKind]>,
    share: &mut WindowShare,
    sink: &mut RecordSink<'_>,
) -> Result<(), FetchError> {
    let start = start.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let end = end.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let limit = inner.page_size.to_string();
    for (endpoint, kind) in LISTS {
        if kinds.is_some_and(|k| !k.contains(&kind)) {
            continue;
        }
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = inner.url(&["v1", "users", "self", endpoint]);
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("start", &start)
                    .append_pair("end", &end)
                    .append_pair("limit", &limit);
                if let Some(cursor) = &cursor {
                    query.append_pair("cursor", cursor);
                }
            }
            let rest = inner
                .transport
                .get_records(token, endpoint, url, kind, (&inner.budget, share), sink)
                .await?;
            pages += 1;
            let Some(next) = next_cursor(rest.get("nextCursor"), endpoint)? else {
                break;
            };
            if pages >= inner.max_pages {
                return Err(FetchError::configuration(
                    format!(
                        "{endpoint}: more than {pages} pages of {limit} records in one window; \
                         raise max_pages_per_fetch or shorten the window"
                    ),
                    None,
                ));
            }
            cursor = Some(next);
        }
    }
    Ok(())
}

/// `nextCursor`: a non-empty string continues; absent, `null` or `""` ends the run.
fn next_cursor(value: Option<&Value>, endpoint: &str) -> Result<Option<String>, FetchError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FetchError::transient(
            format!("{endpoint}: malformed body: nextCursor is not a string"),
            Some(200),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(next_cursor(None, "basal").unwrap(), None);
        assert_eq!(next_cursor(Some(&json!(null)), "basal").unwrap(), None);
        assert_eq!(next_cursor(Some(&json!("")), "basal").unwrap(), None);
        assert_eq!(
            next_cursor(Some(&json!("abc")), "basal").unwrap(),
            Some("abc".to_owned())
        );
        assert!(next_cursor(Some(&json!(3)), "basal").is_err());
    }
}
