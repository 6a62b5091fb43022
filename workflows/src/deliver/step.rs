//! The deliver step (docs/notifications.md#at-least-once): a job "deliver the outbox of these
//! connections" sends each due message — an invitation or notice email, a webhook event —
//! and records what came of it. The messages of all the job's connections are leased in one
//! statement before any is sent, so two steps never send one at once; the connections are
//! served concurrently, each one's messages in order (a webhook that fails holds back the same
//! endpoint's later events of that connection; emails are independent); the outcomes that are
//! not journaled (webhooks sent or retrying) are recorded in one transaction.
//!
//! Crash boundaries (`failpoint::DELIVER_BOUNDARIES`): stopped after the relay or endpoint
//! accepted a message and before the outcome is recorded, the message is sent again when its
//! lease expires — the only way a message goes out twice. Nothing is lost: the message stays
//! pending until an outcome is recorded.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use engine::{
    failpoint,
    ids::ConnectionId,
    invitation::{
        DeliveryRecord, DeliveryResult, MessageKind, TARGET_CLINIC_PREFIX, TARGET_PATIENT,
    },
    schedule::backoff,
    store::{OutboxMessage, Step, StepRun},
};
use futures::StreamExt as _;

use super::{email::SendFailure, webhook};
use crate::{Workflows, error::WorkflowError};

/// How many connections one deliver job serves: the dispatcher groups its claims into jobs of
/// this size, so a busy outbox costs one job, one lease statement and one outcome transaction
/// per group rather than per message.
pub const CONNECTIONS_PER_JOB: usize = 32;

/// Attempts a relay's permanent refusal (5xx) gets before the message is abandoned: a relay
/// refuses permanently for reasons an operator can fix (a sender not allowed, a policy), so it
/// is tried again a little while later, not a day long.
const PERMANENT_REFUSAL_ATTEMPTS: u32 = 3;

/// What sending one message came to, before it is recorded.
enum Sent {
    Ok(String),
    /// Worth trying again later (a relay or endpoint down, a 4xx, a timeout).
    Failed(String),
    /// The relay refused permanently (5xx): tried [`PERMANENT_REFUSAL_ATTEMPTS`] times.
    Refused(String),
    /// Can never be sent (no address, the endpoint no longer configured): abandoned at once.
    Impossible(String),
}

impl Workflows {
    /// The deliver step for one connection (see [`Workflows::run_deliver_steps`]).
    pub async fn run_deliver_step(&self, id: ConnectionId) -> Result<usize, WorkflowError> {
        self.run_deliver_steps(&[id]).await
    }

    /// The deliver step for a group of connections; returns how many messages were attempted.
    /// Running it twice, or beside another, is harmless: a message is leased before it is sent
    /// and its outcome recorded only while it is pending.
    pub async fn run_deliver_steps(&self, ids: &[ConnectionId]) -> Result<usize, WorkflowError> {
        let now = self.store.clock().now();
        // Due messages, minus a webhook endpoint's events behind one that is not due yet.
        let mut blocked: HashSet<(ConnectionId, String)> = HashSet::new();
        let mut due = Vec::new();
        for message in self.store.pending_messages_of(ids).await? {
            let key = (message.connection_id, message.target.clone());
            let ordered = message.kind == MessageKind::Webhook;
            if ordered && blocked.contains(&key) {
                continue;
            }
            if message.next_attempt_at > now {
                if ordered {
                    blocked.insert(key);
                }
                continue;
            }
            due.push(message);
        }
        let seqs: Vec<i64> = due.iter().map(|m| m.seq).collect();
        let leased = self
            .store
            .lease_messages(&seqs, self.settings.delivery.lease)
            .await?;
        // A message another step holds is being sent there: it, and its endpoint's later
        // events, wait (those this step leased are sent once their lease runs out).
        let mut by_connection: BTreeMap<ConnectionId, Vec<OutboxMessage>> = BTreeMap::new();
        for message in due {
            let key = (message.connection_id, message.target.clone());
            let ordered = message.kind == MessageKind::Webhook;
            if ordered && blocked.contains(&key) {
                continue;
            }
            if !leased.contains(&message.seq) {
                if ordered {
                    blocked.insert(key);
                }
                continue;
            }
            by_connection
                .entry(message.connection_id)
                .or_default()
                .push(message);
        }
        if by_connection.is_empty() {
            return Ok(0);
        }
        self.store.failpoints().hit(failpoint::DELIVER_LEASED)?;
        let started_at = self.store.clock().now();
        let records: Vec<(ConnectionId, DeliveryRecord)> = futures::stream::iter(by_connection)
            .map(|(id, messages)| self.send_in_order(id, messages))
            .buffer_unordered(CONNECTIONS_PER_JOB)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        self.store.failpoints().hit(failpoint::DELIVER_SENT)?;
        let attempted = records.len();
        let runs = delivery_runs(&records, started_at, self.store.clock().now());
        let (journaled, plain): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|(_, r)| r.journaled());
        for (id, record) in journaled {
            if let DeliveryResult::Abandoned { error } = &record.result {
                tracing::warn!(connection = %id, message = record.seq, kind = record.kind.as_str(), error, "delivery abandoned");
            }
            self.store.record_delivery(id, record).await?;
        }
        let plain: Vec<DeliveryRecord> = plain.into_iter().map(|(_, r)| r).collect();
        self.store.record_deliveries(&plain).await?;
        self.record_runs(&runs).await;
        self.store.failpoints().hit(failpoint::DELIVER_RECORDED)?;
        Ok(attempted)
    }

    /// Sends one connection's leased messages in order; a webhook that is to be retried holds
    /// back its endpoint's later events (their lease runs out; they go after it).
    async fn send_in_order(
        &self,
        id: ConnectionId,
        messages: Vec<OutboxMessage>,
    ) -> Vec<(ConnectionId, DeliveryRecord)> {
        let mut held_back: HashSet<String> = HashSet::new();
        let mut records = Vec::with_capacity(messages.len());
        for message in messages {
            let ordered = message.kind == MessageKind::Webhook;
            if ordered && held_back.contains(&message.target) {
                continue;
            }
            let sent = self.send(&message).await;
            let result = self.outcome(&message, sent);
            if ordered && matches!(result, DeliveryResult::Retry { .. }) {
                held_back.insert(message.target.clone());
            }
            let record = DeliveryRecord {
                seq: message.seq,
                kind: message.kind,
                attempt: message.attempts + 1,
                result,
            };
            records.push((id, record));
        }
        records
    }

    fn outcome(&self, message: &OutboxMessage, sent: Sent) -> DeliveryResult {
        let retry = if message.kind == MessageKind::Webhook {
            self.settings.delivery.webhook_retry
        } else {
            self.settings.delivery.email_retry
        };
        let attempts = message.attempts + 1;
        let (error, max_attempts) = match sent {
            Sent::Ok(detail) => return DeliveryResult::Sent { detail },
            Sent::Impossible(error) => return DeliveryResult::Abandoned { error },
            Sent::Refused(error) => (error, PERMANENT_REFUSAL_ATTEMPTS.min(retry.max_attempts)),
            Sent::Failed(error) => (error, retry.max_attempts),
        };
        if attempts >= max_attempts {
            return DeliveryResult::Abandoned {
                error: format!("{error} (after {attempts} attempts)"),
            };
        }
        let delay = backoff(
            attempts,
            retry.initial_backoff,
            retry.max_backoff,
            &mut rand::rng(),
        );
        DeliveryResult::Retry {
            next_attempt_at: self.store.clock().now()
                + TimeDelta::from_std(delay).unwrap_or(TimeDelta::hours(1)),
            error,
        }
    }

    async fn send(&self, message: &OutboxMessage) -> Sent {
        let settings = &self.settings.delivery;
        if message.kind == MessageKind::Webhook {
            let Some(endpoint) = settings.webhooks.iter().find(|w| w.name == message.target) else {
                return Sent::Impossible("the webhook endpoint is no longer configured".into());
            };
            let timestamp = self.store.clock().now().timestamp();
            return match webhook::post(
                &self.webhook_client,
                endpoint,
                message,
                timestamp,
                settings.webhook_timeout,
            )
            .await
            {
                Ok(detail) => Sent::Ok(detail),
                Err(error) => Sent::Failed(error),
            };
        }
        let Some((email, mailer)) = &settings.email else {
            return Sent::Impossible("email is not configured".into());
        };
        let address = match self.recipient(message).await {
            Ok(Some(address)) => address,
            Ok(None) => return Sent::Impossible("no address is known for the recipient".into()),
            Err(err) => {
                tracing::error!(error = %err, message = %message.id, "reading a recipient failed");
                return Sent::Failed("the recipient's address could not be read".into());
            }
        };
        let content = match self.content(message).await {
            Ok(content) => content,
            Err(error) => return Sent::Impossible(error),
        };
        match mailer.send(email, &message.id, &address, &content).await {
            Ok(detail) => Sent::Ok(detail),
            Err(err) => match err.failure {
                SendFailure::Temporary => Sent::Failed(err.message),
                SendFailure::Refused => Sent::Refused(err.message),
                SendFailure::Invalid => Sent::Impossible(err.message),
            },
        }
    }

    async fn recipient(
        &self,
        message: &OutboxMessage,
    ) -> Result<Option<String>, engine::StoreError> {
        if message.kind == MessageKind::InviteEmail {
            return match &message.invitation_id {
                Some(id) => self.store.invitation_address(id).await,
                None => Ok(None),
            };
        }
        if message.target == TARGET_PATIENT {
            return self.store.contact_address(message.connection_id).await;
        }
        let clinic = message
            .target
            .strip_prefix(TARGET_CLINIC_PREFIX)
            .unwrap_or_default();
        Ok(self
            .settings
            .delivery
            .clinics
            .get(clinic)
            .and_then(|c| c.contact.as_ref())
            .map(|address| address.expose().to_owned()))
    }
}

/// One deliver run per connection: `abandoned` if any of its messages was, else `retrying` if
/// any is retried, else `sent` (docs/operations.md#step-runs).
fn delivery_runs(
    records: &[(ConnectionId, DeliveryRecord)],
    started_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<StepRun> {
    let mut worst: BTreeMap<ConnectionId, u8> = BTreeMap::new();
    for (id, record) in records {
        let rank = match record.result {
            DeliveryResult::Sent { .. } => 0,
            DeliveryResult::Retry { .. } => 1,
            DeliveryResult::Abandoned { .. } => 2,
        };
        let entry = worst.entry(*id).or_default();
        *entry = (*entry).max(rank);
    }
    let none = engine::store::StatusTally::default();
    worst
        .into_iter()
        .map(|(id, rank)| {
            let (outcome, code) = match rank {
                0 => ("sent", None),
                1 => ("retrying", Some("delivery_failed")),
                _ => ("abandoned", Some("delivery_abandoned")),
            };
            crate::runs::ended(Step::Deliver, id, started_at, now, &none, outcome, code)
        })
        .collect()
}
