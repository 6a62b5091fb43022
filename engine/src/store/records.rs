//! Reading stored data back: a user's records in the Tidepool model (keyset-paged), and the
//! records a connection could not store.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    Result, Store,
    entities::{data_record, skipped_record},
    transfer::{RecordQuery, SkippedRecord},
};
use crate::{ids::ConnectionId, model::StoredRecord};

impl Store {
    /// Stored records of a user in the Tidepool model, oldest first, keyset-paged by
    /// (time, connection, partner record id) after `after`.
    pub async fn records(&self, query: &RecordQuery) -> Result<Vec<StoredRecord>> {
        let mut select = data_record::Entity::find()
            .filter(data_record::Column::UserId.eq(query.user.as_str()))
            .filter(data_record::Column::Retired.eq(false));
        if let Some(t) = &query.datum_type {
            select = select.filter(data_record::Column::DatumType.eq(t.as_str()));
        }
        if let Some(start) = query.start {
            select = select.filter(data_record::Column::Time.gte(start));
        }
        if let Some(end) = query.end {
            select = select.filter(data_record::Column::Time.lt(end));
        }
        if let Some((time, connection_id, record_id)) = &query.after {
            use sea_orm::sea_query::Condition;
            select = select.filter(
                Condition::any()
                    .add(data_record::Column::Time.gt(*time))
                    .add(
                        Condition::all()
                            .add(data_record::Column::Time.eq(*time))
                            .add(
                                Condition::any()
                                    .add(
                                        data_record::Column::ConnectionId
                                            .gt(connection_id.as_str()),
                                    )
                                    .add(
                                        Condition::all()
                                            .add(
                                                data_record::Column::ConnectionId
                                                    .eq(connection_id.as_str()),
                                            )
                                            .add(
                                                data_record::Column::PartnerRecordId
                                                    .gt(record_id.as_str()),
                                            ),
                                    ),
                            ),
                    ),
            );
        }
        Ok(select
            .order_by_asc(data_record::Column::Time)
            .order_by_asc(data_record::Column::ConnectionId)
            .order_by_asc(data_record::Column::PartnerRecordId)
            .limit(query.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| StoredRecord {
                connection_id: row.connection_id,
                partner_record_id: row.partner_record_id,
                datum_type: row.datum_type,
                time: row.time,
                retired: row.retired,
                datum: row.datum,
            })
            .collect())
    }

    /// All partner record ids stored for a connection, including retired ones (tests, ops).
    pub async fn record_ids(&self, id: ConnectionId, include_retired: bool) -> Result<Vec<String>> {
        let mut select = data_record::Entity::find()
            .filter(data_record::Column::ConnectionId.eq(id.to_string()));
        if !include_retired {
            select = select.filter(data_record::Column::Retired.eq(false));
        }
        Ok(select
            .order_by_asc(data_record::Column::PartnerRecordId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| r.partner_record_id)
            .collect())
    }

    /// The records a connection could not store, most recently seen first.
    pub async fn skipped_records(
        &self,
        id: ConnectionId,
        limit: u64,
    ) -> Result<Vec<SkippedRecord>> {
        Ok(skipped_record::Entity::find()
            .filter(skipped_record::Column::ConnectionId.eq(id.to_string()))
            .order_by_desc(skipped_record::Column::LastSeenAt)
            .order_by_asc(skipped_record::Column::RecordKey)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| SkippedRecord {
                key: row.record_key,
                kind: row.kind,
                partner_record_id: row.partner_record_id,
                reason: row.reason,
            })
            .collect())
    }
}
