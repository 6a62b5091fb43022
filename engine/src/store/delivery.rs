//! Recording what a delivery attempt came to (docs/notifications.md#the-outbox): on the
//! message's row, in `delivery_attempts`, and — for emails, and for a webhook given up — in the
//! journal, by a `DeliveryRecorded` transition, so row and journal entry commit together.
//! A webhook sent or retried is not journaled: those happen while the connection transfers
//! data, and a journal entry (a new version) would make its scheduled steps stale.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait, sea_query::Expr,
};

use super::{
    Result, Store, StoreError,
    entities::{delivery_attempt, outbox},
};
use crate::{
    invitation::{DeliveryRecord, DeliveryResult, MessageKind, MessageStatus},
    model::{Actor, Change},
    state::Event,
    text::storable,
};

impl Store {
    /// Records one attempt of `message` (attempts `record.attempt`). Recording it twice (a
    /// step run twice) is a no-op: only a pending message is updated.
    pub async fn record_delivery(
        &self,
        connection_id: crate::ids::ConnectionId,
        record: DeliveryRecord,
    ) -> Result<()> {
        let journaled =
            record.kind.is_email() || matches!(record.result, DeliveryResult::Abandoned { .. });
        if journaled {
            let detail = match &record.result {
                DeliveryResult::Sent { detail } => detail.clone(),
                DeliveryResult::Retry { error, .. } | DeliveryResult::Abandoned { error } => {
                    error.clone()
                }
            };
            let change = Change::new(
                Event::DeliveryRecorded {
                    record: record.clone(),
                },
                Actor::system("deliverer"),
            )
            .details(serde_json::json!({
                "message": record.seq,
                "attempt": record.attempt,
                "detail": detail,
            }));
            return match self.apply(connection_id, None, change).await {
                Ok(_) | Err(StoreError::AlreadyDone) => Ok(()),
                Err(err) => Err(err),
            };
        }
        let txn = self.db.begin().await?;
        let now = self.clock.now();
        match self.record_delivery_in(&txn, &record, now).await {
            Ok(()) => {
                txn.commit().await?;
                Ok(())
            }
            Err(StoreError::AlreadyDone) => {
                txn.rollback().await?;
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The row side of a recorded attempt, in the caller's transaction. `AlreadyDone` when
    /// the message is no longer pending.
    pub(super) async fn record_delivery_in(
        &self,
        txn: &impl ConnectionTrait,
        record: &DeliveryRecord,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let attempts = i32::try_from(record.attempt).unwrap_or(i32::MAX);
        let mut update = outbox::ActiveModel {
            attempts: Set(attempts),
            lease_until: Set(None),
            claimed_until: Set(None),
            ..Default::default()
        };
        let (detail, status) = match &record.result {
            DeliveryResult::Sent { detail } => {
                update.sent_at = Set(Some(now));
                update.last_error = Set(None);
                (detail.as_str(), MessageStatus::Sent)
            }
            DeliveryResult::Retry {
                next_attempt_at,
                error,
            } => {
                update.next_attempt_at = Set(*next_attempt_at);
                update.last_error = Set(Some(storable(error)));
                (error.as_str(), MessageStatus::Pending)
            }
            DeliveryResult::Abandoned { error } => {
                update.last_error = Set(Some(storable(error)));
                (error.as_str(), MessageStatus::Abandoned)
            }
        };
        update.status = Set(status.as_str().to_owned());
        let done = outbox::Entity::update_many()
            .set(update)
            .filter(outbox::Column::Seq.eq(record.seq))
            .filter(outbox::Column::Status.eq(MessageStatus::Pending.as_str()))
            .exec(txn)
            .await?;
        if done.rows_affected != 1 {
            return Err(StoreError::AlreadyDone);
        }
        delivery_attempt::Entity::insert(delivery_attempt::ActiveModel {
            outbox_seq: Set(record.seq),
            attempt: Set(attempts),
            at: Set(now),
            outcome: Set(record.result.outcome().to_owned()),
            detail: Set(Some(storable(detail))),
            ..Default::default()
        })
        .exec(txn)
        .await?;
        // A webhook waiting for a retry holds back the endpoint's later events of the same
        // connection (they are delivered in order): they wait as long, instead of being
        // dispatched again and again meanwhile.
        if let (
            MessageKind::Webhook,
            DeliveryResult::Retry {
                next_attempt_at, ..
            },
        ) = (record.kind, &record.result)
            && let Some(row) = outbox::Entity::find()
                .filter(outbox::Column::Seq.eq(record.seq))
                .one(txn)
                .await?
        {
            outbox::Entity::update_many()
                .col_expr(outbox::Column::NextAttemptAt, Expr::val(*next_attempt_at))
                .filter(outbox::Column::ConnectionId.eq(row.connection_id))
                .filter(outbox::Column::Target.eq(row.target))
                .filter(outbox::Column::Kind.eq(MessageKind::Webhook.as_str()))
                .filter(outbox::Column::Status.eq(MessageStatus::Pending.as_str()))
                .filter(outbox::Column::Seq.gt(record.seq))
                .filter(outbox::Column::NextAttemptAt.lt(*next_attempt_at))
                .exec(txn)
                .await?;
        }
        Ok(())
    }

    /// Deletes delivered and abandoned messages created before `older_than`, with their
    /// attempts (the maintenance loop keeps `delivery.retention`); pending ones are kept
    /// whatever their age. Returns how many messages went.
    pub async fn purge_messages(&self, older_than: DateTime<Utc>) -> Result<u64> {
        let txn = self.db.begin().await?;
        let finished = || {
            outbox::Column::Status.is_in([
                MessageStatus::Sent.as_str(),
                MessageStatus::Abandoned.as_str(),
            ])
        };
        let seqs: Vec<i64> = outbox::Entity::find()
            .filter(finished())
            .filter(outbox::Column::CreatedAt.lt(older_than))
            .select_only()
            .column(outbox::Column::Seq)
            .limit(10_000)
            .into_tuple()
            .all(&txn)
            .await?;
        if seqs.is_empty() {
            txn.rollback().await?;
            return Ok(0);
        }
        delivery_attempt::Entity::delete_many()
            .filter(delivery_attempt::Column::OutboxSeq.is_in(seqs.iter().copied()))
            .exec(&txn)
            .await?;
        let done = outbox::Entity::delete_many()
            .filter(outbox::Column::Seq.is_in(seqs.iter().copied()))
            .filter(finished())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(done.rows_affected)
    }

    /// An operator asks for a message again: pending, due at once, its attempts counted
    /// afresh. Returns the message as it is now.
    pub async fn resend_message(&self, id: &str) -> Result<super::OutboxMessage> {
        let now = self.clock.now();
        outbox::Entity::update_many()
            .set(outbox::ActiveModel {
                status: Set(MessageStatus::Pending.as_str().to_owned()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                claimed_until: Set(None),
                lease_until: Set(None),
                ..Default::default()
            })
            .filter(outbox::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        self.deliveries_queued.notify_one();
        self.outbox_message(id).await
    }
}
