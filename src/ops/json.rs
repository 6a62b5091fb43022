//! Reading the API's JSON answers for the `ops` tables: every table is rendered from it, against
//! a server or a database alike.

use serde_json::Value;

/// A field for a table: a string as it is, `-` for null or absent, anything else as JSON.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The elements of an array field (none when absent or not an array).
pub(super) fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A count field (0 when absent).
pub(super) fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}
