//! Operator alerts: configuration faults that must not be charged to users' connections
//! (docs/lifecycle.md#alerts). One way in: [`insert_folded`], used by transitions' effects and by
//! [`Store::raise_alert`] alike. Repeats of one partner and code fold into one row with a count,
//! texts are bounded and sanitised, and only the first occurrence (and each power of ten) is
//! logged at ERROR, so nobody — a user replaying callback errors on their own connection, a
//! partner failing every request — can flood operators or the logs.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, QuerySelect, Statement};

use super::{Result, Store, entities::operator_alert};
use crate::{
    model::{ErrorInfo, OperatorAlert},
    text::bounded,
};

/// Longest alert message kept.
pub const MAX_ALERT_MESSAGE_CHARS: usize = 500;
/// Longest alert code kept (the column's width).
const MAX_ALERT_CODE_CHARS: usize = 64;

/// A code made of the characters codes use; anything else becomes `invalid_code`.
fn alert_code(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= MAX_ALERT_CODE_CHARS
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        code.to_owned()
    } else {
        "invalid_code".to_owned()
    }
}

/// Inserts an alert, or folds it into the open one of the same partner and code. Returns how
/// many occurrences the alert now counts.
pub(super) async fn insert_folded<C: ConnectionTrait>(
    db: &C,
    partner: &str,
    connection_id: Option<&str>,
    alert: &ErrorInfo,
    now: DateTime<Utc>,
) -> Result<u64> {
    let code = alert_code(&alert.code);
    let message = bounded(&alert.message, MAX_ALERT_MESSAGE_CHARS);
    let fold_key = format!("{partner}:{code}");
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO operator_alerts
               (id, partner, connection_id, code, message, created_at, fold_key, count, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8)
             ON CONFLICT (fold_key) DO UPDATE SET
               count = operator_alerts.count + 1,
               last_seen_at = excluded.last_seen_at,
               message = excluded.message,
               connection_id = excluded.connection_id
             RETURNING count",
            [
                uuid::Uuid::now_v7().to_string().into(),
                partner.to_owned().into(),
                connection_id.map(str::to_owned).into(),
                code.clone().into(),
                message.clone().into(),
                now.into(),
                fold_key.into(),
                now.into(),
            ],
        ))
        .await?;
    let count: i64 = match row {
        Some(row) => row.try_get("", "count")?,
        None => 1,
    };
    let count = u64::try_from(count).unwrap_or(1);
    if count == 1 || is_power_of_ten(count) {
        tracing::error!(
            partner,
            connection = connection_id,
            code,
            count,
            "operator alert: {message}"
        );
    } else {
        tracing::debug!(
            partner,
            connection = connection_id,
            code,
            count,
            "operator alert repeated"
        );
    }
    Ok(count)
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

impl Store {
    /// Raises an alert that no transition records (a data API rejecting our requests, a
    /// callback whose issuer does not match the configuration). Returns the folded count.
    pub async fn raise_alert(
        &self,
        partner: &str,
        connection_id: Option<&str>,
        alert: &ErrorInfo,
    ) -> Result<u64> {
        insert_folded(&self.db, partner, connection_id, alert, self.clock.now()).await
    }

    /// The most recently seen alerts, newest first.
    pub async fn alerts(&self, limit: u64) -> Result<Vec<OperatorAlert>> {
        Ok(operator_alert::Entity::find()
            .order_by_desc(operator_alert::Column::LastSeenAt)
            .order_by_desc(operator_alert::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| OperatorAlert {
                id: row.id,
                partner: row.partner,
                connection_id: row.connection_id,
                code: row.code,
                message: row.message,
                created_at: row.created_at,
                count: u64::try_from(row.count).unwrap_or(1),
                last_seen_at: row.last_seen_at.unwrap_or(row.created_at),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_bounded_to_code_characters() {
        assert_eq!(alert_code("invalid_client"), "invalid_client");
        assert_eq!(alert_code(&"x".repeat(65)), "invalid_code");
        assert_eq!(alert_code("<script>"), "invalid_code");
        assert_eq!(alert_code(""), "invalid_code");
    }

    #[test]
    fn powers_of_ten() {
        let logged: Vec<u64> = (1..=1000).filter(|n| is_power_of_ten(*n)).collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
    }
}
