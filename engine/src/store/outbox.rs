//! The outbox (docs/notifications.md#the-outbox): messages a transition owes are written in the
//! transition's transaction (`queue_*`, called from `effects.rs` and `connections.rs`); the
//! dispatcher claims connections with due messages; the deliver step leases each message,
//! sends it and records the outcome (`delivery.rs`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::json;

use super::{
    Result, Store, StoreError,
    entities::{connection, delivery_attempt, invitation, outbox},
};
use crate::{
    ids::ConnectionId,
    invitation::{
        InvitationStatus, MessageKind, MessageStatus, TARGET_CLINIC_PREFIX, TARGET_PATIENT,
    },
    model::Change,
    state::{State, Transition},
};

/// What the outbox fans a transition out to; set once per process from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSettings {
    /// Names of the configured webhook endpoints: each gets every event.
    pub webhook_endpoints: Vec<String>,
    /// Whether notice emails are queued (an email transport is configured).
    pub email: bool,
    /// Clinics with a contact address for notices.
    pub clinic_contacts: BTreeSet<String>,
}

/// What a transfer run stored, for its `connection.data_synced` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSynced {
    /// The data time range the run read.
    pub from: DateTime<Utc>,
    pub through: DateTime<Utc>,
    pub inserted: u64,
    pub updated: u64,
}

/// An outbox message, without personal data (addresses are resolved when it is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub seq: i64,
    pub id: String,
    pub connection_id: ConnectionId,
    pub kind: MessageKind,
    pub target: String,
    pub invitation_id: Option<String>,
    pub payload: serde_json::Value,
    pub status: MessageStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// Filters of the operators' outbox list.
#[derive(Debug, Clone, Default)]
pub struct OutboxQuery {
    pub kind: Option<MessageKind>,
    pub status: Option<MessageStatus>,
    pub connection_id: Option<ConnectionId>,
    /// Keyset cursor: messages with a smaller `seq` (newest first).
    pub before_seq: Option<i64>,
    pub limit: u64,
}

/// The machine-readable reason of a state change, for webhook receivers: the error code the
/// change records, an invitation's end, or, for a connection that failed its budget, the
/// error it failed with. The journal's `reason` is prose for operators; this is a code.
fn reason_code(change: &Change, error_code: Option<&str>) -> Option<String> {
    use crate::{model::ErrorUpdate, state::Event};
    match (&change.error, &change.event) {
        (ErrorUpdate::Set(info), _) => Some(info.code.clone()),
        (_, Event::InvitationEnded { end, .. }) => Some(end.reason().to_owned()),
        (_, Event::Fail) => error_code.map(str::to_owned),
        _ => None,
    }
}

/// A new message, pending and due at once.
fn pending_message(
    connection_id: &str,
    kind: MessageKind,
    target: &str,
    invitation_id: Option<&str>,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        connection_id: Set(connection_id.to_owned()),
        kind: Set(kind.as_str().to_owned()),
        target: Set(target.to_owned()),
        invitation_id: Set(invitation_id.map(str::to_owned)),
        payload: Set(payload),
        status: Set(MessageStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        claimed_until: Set(None),
        lease_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        sent_at: Set(None),
        ..Default::default()
    }
}

pub(super) fn message_to_domain(row: outbox::Model) -> Result<OutboxMessage> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of outbox message {}", row.seq));
    Ok(OutboxMessage {
        connection_id: row
            .connection_id
            .parse()
            .map_err(|_| corrupt("connection id"))?,
        kind: MessageKind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
        status: MessageStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        seq: row.seq,
        id: row.id,
        target: row.target,
        invitation_id: row.invitation_id,
        payload: row.payload,
        next_attempt_at: row.next_attempt_at,
        last_error: row.last_error,
        created_at: row.created_at,
        sent_at: row.sent_at,
    })
}

impl Store {
    /// Sets what transitions fan out to (webhook endpoints, notices).
    pub fn with_outbox(mut self, settings: OutboxSettings) -> Self {
        self.outbox = std::sync::Arc::new(settings);
        self
    }

    pub fn outbox_settings(&self) -> &OutboxSettings {
        &self.outbox
    }

    /// Woken when a transition in this process queued a message.
    pub fn deliveries_queued(&self) -> &tokio::sync::Notify {
        &self.deliveries_queued
    }

    /// Writes one message, due at once, in the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn queue_message(
        &self,
        txn: &DatabaseTransaction,
        connection_id: &str,
        kind: MessageKind,
        target: &str,
        invitation_id: Option<&str>,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        outbox::Entity::insert(pending_message(
            connection_id,
            kind,
            target,
            invitation_id,
            payload,
            now,
        ))
        .exec(txn)
        .await?;
        Ok(())
    }

    /// A `connection.state_changed` event for every webhook endpoint, when the transition
    /// changes the state (docs/notifications.md#webhooks). No token, address or datum: ids,
    /// states, the journal's event name and reason.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn queue_state_change(
        &self,
        txn: &DatabaseTransaction,
        id: &str,
        user_id: &str,
        partner: &str,
        transition: &Transition<'_>,
        change: &Change,
        error_code: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if self.outbox.webhook_endpoints.is_empty() || transition.from == Some(transition.to) {
            return Ok(());
        }
        let payload = json!({
            "type": "connection.state_changed",
            "connectionId": id,
            "userId": user_id,
            "partner": partner,
            "from": transition.from.map(State::as_str),
            "to": transition.to.as_str(),
            "event": change.event.journal_name(),
            "reason": reason_code(change, error_code),
            "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        for endpoint in &self.outbox.webhook_endpoints {
            self.queue_message(
                txn,
                id,
                MessageKind::Webhook,
                endpoint,
                None,
                payload.clone(),
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// A `connection.data_synced` event for every webhook endpoint, in a transaction of its own
    /// (a run that yields: a completed run queues it with its last commit, `commit.rs`).
    pub async fn queue_data_synced(
        &self,
        connection: &crate::model::Connection,
        synced: &DataSynced,
    ) -> Result<()> {
        let now = self.clock.now();
        let rows = self.data_synced_rows(
            &connection.id.to_string(),
            connection.user_id.as_str(),
            connection.partner.as_str(),
            synced,
            now,
        );
        if rows.is_empty() {
            return Ok(());
        }
        let txn = sea_orm::TransactionTrait::begin(&self.db).await?;
        outbox::Entity::insert_many(rows).exec(&txn).await?;
        txn.commit().await?;
        self.deliveries_queued.notify_one();
        Ok(())
    }

    /// The outbox rows of a `connection.data_synced` event, one per webhook endpoint; none
    /// when no endpoint is configured or the run stored nothing new. No datum: the time range
    /// and the counts.
    pub(super) fn data_synced_rows(
        &self,
        id: &str,
        user_id: &str,
        partner: &str,
        synced: &DataSynced,
        now: DateTime<Utc>,
    ) -> Vec<outbox::ActiveModel> {
        if self.outbox.webhook_endpoints.is_empty() || synced.inserted + synced.updated == 0 {
            return Vec::new();
        }
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let payload = json!({
            "type": "connection.data_synced",
            "connectionId": id,
            "userId": user_id,
            "partner": partner,
            "dataFrom": time(synced.from),
            "dataThrough": time(synced.through),
            "inserted": synced.inserted,
            "updated": synced.updated,
            "at": time(now),
        });
        self.outbox
            .webhook_endpoints
            .iter()
            .map(|endpoint| {
                pending_message(
                    id,
                    MessageKind::Webhook,
                    endpoint,
                    None,
                    payload.clone(),
                    now,
                )
            })
            .collect()
    }

    /// The notices of a connection that stopped: the patient (when an address is known) and
    /// each clinic whose accepted invitation it came from (when the clinic has a contact).
    pub(super) async fn queue_connection_lost(
        &self,
        txn: &DatabaseTransaction,
        before: &connection::Model,
        to: State,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.outbox.email {
            return Ok(());
        }
        let payload = json!({
            "template": "connection_lost",
            "partner": before.partner,
            "userId": before.user_id,
            "state": to.as_str(),
            "reason": reason,
        });
        if before.contact_ciphertext.is_some() {
            self.queue_message(
                txn,
                &before.id,
                MessageKind::NoticeEmail,
                TARGET_PATIENT,
                None,
                payload.clone(),
                now,
            )
            .await?;
        }
        let clinics: BTreeSet<String> = invitation::Entity::find()
            .filter(invitation::Column::ConnectionId.eq(before.id.as_str()))
            .filter(invitation::Column::Status.eq(InvitationStatus::Accepted.as_str()))
            .all(txn)
            .await?
            .into_iter()
            .map(|row| row.clinic_id)
            .filter(|clinic| self.outbox.clinic_contacts.contains(clinic))
            .collect();
        for clinic in clinics {
            let mut payload = payload.clone();
            payload["clinicId"] = clinic.clone().into();
            let target = format!("{TARGET_CLINIC_PREFIX}{clinic}");
            self.queue_message(
                txn,
                &before.id,
                MessageKind::NoticeEmail,
                &target,
                None,
                payload,
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// Claims connections with due messages for the deliver jobs: their due messages are not
    /// dispatched again for `lease` (a lost job is simply due again then).
    pub async fn claim_due_deliveries(
        &self,
        limit: u64,
        lease: std::time::Duration,
    ) -> Result<Vec<ConnectionId>> {
        self.claim_connections(
            |lock| {
                format!(
                    "UPDATE outbox SET claimed_until = $1 \
                     WHERE seq IN (SELECT seq FROM outbox \
                        WHERE status = 'pending' AND next_attempt_at <= $2 \
                          AND (claimed_until IS NULL OR claimed_until <= $2) \
                        ORDER BY next_attempt_at LIMIT $3 {lock}) \
                     RETURNING connection_id"
                )
            },
            limit,
            lease,
        )
        .await
    }

    /// Messages for operators, newest first.
    pub async fn outbox_messages(&self, query: &OutboxQuery) -> Result<Vec<OutboxMessage>> {
        let mut select = outbox::Entity::find();
        if let Some(kind) = query.kind {
            select = select.filter(outbox::Column::Kind.eq(kind.as_str()));
        }
        if let Some(status) = query.status {
            select = select.filter(outbox::Column::Status.eq(status.as_str()));
        }
        if let Some(id) = query.connection_id {
            select = select.filter(outbox::Column::ConnectionId.eq(id.to_string()));
        }
        if let Some(before) = query.before_seq {
            select = select.filter(outbox::Column::Seq.lt(before));
        }
        select
            .order_by_desc(outbox::Column::Seq)
            .limit(query.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(message_to_domain)
            .collect()
    }

    /// One message by its id.
    pub async fn outbox_message(&self, id: &str) -> Result<OutboxMessage> {
        let row = outbox::Entity::find()
            .filter(outbox::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        message_to_domain(row)
    }

    /// The attempts of the messages `seqs`, oldest first, by message.
    pub async fn delivery_attempts(
        &self,
        seqs: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<DeliveryAttempt>>> {
        let mut by_message = std::collections::HashMap::<i64, Vec<DeliveryAttempt>>::new();
        if seqs.is_empty() {
            return Ok(by_message);
        }
        for row in delivery_attempt::Entity::find()
            .filter(delivery_attempt::Column::OutboxSeq.is_in(seqs.iter().copied()))
            .order_by_asc(delivery_attempt::Column::Id)
            .all(&self.db)
            .await?
        {
            by_message
                .entry(row.outbox_seq)
                .or_default()
                .push(DeliveryAttempt {
                    attempt: u32::try_from(row.attempt).unwrap_or(0),
                    at: row.at,
                    outcome: row.outcome,
                    detail: row.detail,
                });
        }
        Ok(by_message)
    }
}
