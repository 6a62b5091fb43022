//! Statements written once for both backends: a group of rows travels as ONE JSON parameter and
//! is read back as a table (`json_to_recordset` on PostgreSQL, `json_each` on SQLite), so
//! `UPDATE … FROM`, `INSERT … SELECT … ON CONFLICT … DO UPDATE … WHERE` and `RETURNING` have one
//! text per statement on both backends, and the text never depends on the group's size (parsed
//! once per database connection, not once per size; BENCHMARKS.md, session 3).

use std::sync::LazyLock;

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{DbBackend, Iterable};

use super::{Result, StoreError, entities::connection};

/// A column of a JSON row source: its name in the JSON objects and its PostgreSQL type.
pub(super) type RowColumn = (&'static str, &'static str);

/// `FROM`-able table of the JSON array bound as parameter `$param`, aliased `v`, with `columns`.
pub(super) fn json_rows(backend: DbBackend, param: usize, columns: &[RowColumn]) -> String {
    match backend {
        DbBackend::Postgres => {
            let typed: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
            format!(
                "json_to_recordset(${param}::json) AS v({})",
                typed.join(", ")
            )
        }
        _ => {
            let extracted: Vec<String> = columns
                .iter()
                .map(|(n, _)| format!("json_extract(value, '$.{n}') AS {n}"))
                .collect();
            format!(
                "(SELECT {} FROM json_each(${param})) AS v",
                extracted.join(", ")
            )
        }
    }
}

/// A timestamp inside a JSON row, in the form the backend stores and compares: PostgreSQL reads
/// RFC 3339 into `timestamptz` (microseconds, as sqlx binds them); SQLite keeps text, which must
/// be exactly what sqlx writes for a bound `DateTime<Utc>` so that comparisons stay textual and
/// right.
pub(super) fn json_time(backend: DbBackend, t: DateTime<Utc>) -> String {
    match backend {
        DbBackend::Postgres => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        _ => t.to_rfc3339_opts(SecondsFormat::AutoSi, false),
    }
}

pub(super) fn json_param<T: serde::Serialize>(rows: &T) -> Result<sea_orm::Value> {
    serde_json::to_string(rows)
        .map(Into::into)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a statement's rows: {e}")))
}

/// Every column of `connections`, for `RETURNING` lists (never `*`: with `UPDATE … FROM`,
/// PostgreSQL's `*` also returns the row source's columns).
pub(super) static CONNECTION_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    use sea_orm::IdenStatic;
    connection::Column::iter()
        .map(|c| c.as_str().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
});

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn sqlite_times_are_what_sqlx_binds() {
        let t = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        assert_eq!(json_time(DbBackend::Sqlite, t), "2026-03-10T12:00:00+00:00");
        assert_eq!(
            json_time(DbBackend::Postgres, t),
            "2026-03-10T12:00:00.000000Z"
        );
    }

    #[test]
    fn row_sources_name_every_column() {
        let cols = [("k", "text"), ("n", "bigint")];
        assert_eq!(
            json_rows(DbBackend::Postgres, 1, &cols),
            "json_to_recordset($1::json) AS v(k text, n bigint)"
        );
        assert_eq!(
            json_rows(DbBackend::Sqlite, 2, &cols),
            "(SELECT json_extract(value, '$.k') AS k, json_extract(value, '$.n') AS n \
             FROM json_each($2)) AS v"
        );
        assert!(CONNECTION_COLUMNS.starts_with("id, user_id, partner, state, version"));
    }
}
