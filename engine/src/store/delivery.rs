//! Recording what a delivery attempt came to (docs/notifications.md#the-outbox): on the
//! message's row, in `delivery_attempts`, and — for emails, and for a webhook given up — in the
//! journal, by a `DeliveryRecorded` transition, so row and journal entry commit together.
//! A webhook sent or retried is not journaled: those happen while the connection transfers
//! data, and a journal entry (a new version) would make its scheduled steps stale.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait as _},
};

use super::{
    Result, Store, StoreError,
    entities::{delivery_attempt, outbox},
    rows::{json_param, json_rows},
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
        if record.journaled() {
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

    /// Records attempts that are not journaled (webhooks sent or retrying: see
    /// [`DeliveryRecord::journaled`]) in one transaction. An attempt whose message is no longer
    /// pending (recorded by a step run twice) is skipped.
    pub async fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(record) = records.iter().find(|r| r.journaled()) {
            return Err(StoreError::Corrupt(format!(
                "delivery of message {} must be journaled",
                record.seq
            )));
        }
        let txn = self.db.begin().await?;
        let now = self.clock.now();
        let (sent, others): (Vec<&DeliveryRecord>, Vec<&DeliveryRecord>) = records
            .iter()
            .partition(|r| matches!(r.result, DeliveryResult::Sent { .. }));
        self.record_sent_in(&txn, &sent, now).await?;
        for record in others {
            match self.record_delivery_in(&txn, record, now).await {
                Ok(()) | Err(StoreError::AlreadyDone) => {}
                Err(err) => return Err(err),
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Sent messages, set-based: one statement marks the pending ones sent, one writes their
    /// attempts (the busy path: every transfer that stores data sends one event per endpoint).
    async fn record_sent_in(
        &self,
        txn: &DatabaseTransaction,
        sent: &[&DeliveryRecord],
        now: DateTime<Utc>,
    ) -> Result<()> {
        #[derive(serde::Serialize)]
        struct Row {
            s: i64,
            n: i64,
        }
        if sent.is_empty() {
            return Ok(());
        }
        let backend = self.db.get_database_backend();
        let rows: Vec<Row> = sent
            .iter()
            .map(|r| Row {
                s: r.seq,
                n: i64::from(r.attempt),
            })
            .collect();
        let sql = format!(
            "UPDATE outbox SET status = 'sent', attempts = v.n, sent_at = $2, last_error = NULL, \
                 lease_until = NULL, claimed_until = NULL \
             FROM {rows} WHERE outbox.seq = v.s AND outbox.status = 'pending' RETURNING seq",
            rows = json_rows(backend, 1, &[("s", "bigint"), ("n", "bigint")]),
        );
        let updated: HashSet<i64> = txn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [json_param(&rows)?, now.into()],
            ))
            .await?
            .iter()
            .map(|row| row.try_get::<i64>("", "seq"))
            .collect::<std::result::Result<_, _>>()?;
        let attempts: Vec<delivery_attempt::ActiveModel> = sent
            .iter()
            .filter(|r| updated.contains(&r.seq))
            .map(|r| {
                let detail = match &r.result {
                    DeliveryResult::Sent { detail } => storable(detail),
                    _ => String::new(),
                };
                delivery_attempt::ActiveModel {
                    outbox_seq: Set(r.seq),
                    attempt: Set(i32::try_from(r.attempt).unwrap_or(i32::MAX)),
                    at: Set(now),
                    outcome: Set(r.result.outcome().to_owned()),
                    detail: Set(Some(detail)),
                    ..Default::default()
                }
            })
            .collect();
        if !attempts.is_empty() {
            delivery_attempt::Entity::insert_many(attempts)
                .exec(txn)
                .await?;
        }
        Ok(())
    }

    /// The pending messages of `ids`, in order (due or not: a webhook waits for the endpoint's
    /// earlier events).
    pub async fn pending_messages_of(
        &self,
        ids: &[crate::ids::ConnectionId],
    ) -> Result<Vec<super::OutboxMessage>> {
        outbox::Entity::find()
            .filter(outbox::Column::ConnectionId.is_in(ids.iter().map(ToString::to_string)))
            .filter(outbox::Column::Status.eq(MessageStatus::Pending.as_str()))
            .order_by_asc(outbox::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(super::outbox::message_to_domain)
            .collect()
    }

    /// Takes the sending lease of the messages `seqs` that are pending, due and not held by
    /// another step, in one statement; returns those taken.
    pub async fn lease_messages(
        &self,
        seqs: &[i64],
        lease: std::time::Duration,
    ) -> Result<HashSet<i64>> {
        if seqs.is_empty() {
            return Ok(Default::default());
        }
        let now = self.clock.now();
        let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::minutes(2));
        Ok(outbox::Entity::update_many()
            .col_expr(outbox::Column::LeaseUntil, Expr::val(Some(until)))
            .filter(outbox::Column::Seq.is_in(seqs.iter().copied()))
            .filter(outbox::Column::Status.eq(MessageStatus::Pending.as_str()))
            .filter(outbox::Column::NextAttemptAt.lte(now))
            .filter(
                outbox::Column::LeaseUntil
                    .is_null()
                    .or(outbox::Column::LeaseUntil.lte(now)),
            )
            .exec_with_returning(&self.db)
            .await?
            .into_iter()
            .map(|row| row.seq)
            .collect())
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
                .col_expr(
                    outbox::Column::LeaseUntil,
                    Expr::val(Option::<DateTime<Utc>>::None),
                )
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
