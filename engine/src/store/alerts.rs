//! Operator alerts: configuration faults that must not be charged to users' connections.

use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder, QuerySelect};

use super::{Result, Store, entities::operator_alert};
use crate::model::OperatorAlert;

impl Store {
    /// Records an alert not tied to a transition (e.g. a token endpoint rejecting our client
    /// during a refresh).
    pub async fn raise_alert(
        &self,
        partner: &str,
        connection_id: Option<&str>,
        code: &str,
        message: &str,
    ) -> Result<()> {
        tracing::error!(
            partner,
            connection = connection_id,
            code,
            "operator alert: {message}"
        );
        operator_alert::Entity::insert(operator_alert::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            partner: Set(partner.to_owned()),
            connection_id: Set(connection_id.map(str::to_owned)),
            code: Set(code.to_owned()),
            message: Set(message.to_owned()),
            created_at: Set(self.clock.now()),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The most recent alerts, newest first.
    pub async fn alerts(&self, limit: u64) -> Result<Vec<OperatorAlert>> {
        Ok(operator_alert::Entity::find()
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
            })
            .collect())
    }
}
