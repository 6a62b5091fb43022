//! The deliver step (docs/notifications.md#the-outbox): a job "deliver the outbox of connection
//! C" sends each due message — an invitation or notice email, a webhook event — and records
//! what came of it. A message is leased before it is sent, so two steps never send it at
//! once; a webhook endpoint receives a connection's events in order (a failed one holds back
//! the later ones); emails are independent.
//!
//! Crash boundaries (`failpoint::DELIVER_BOUNDARIES`): stopped after the relay or endpoint
//! accepted a message and before the outcome is recorded, the message is sent again when its
//! lease expires — the only way a message goes out twice. Nothing is lost: the message stays
//! pending until an outcome is recorded.

mod content;
pub mod email;
pub mod signature;
pub mod webhook;

use std::{collections::BTreeMap, collections::HashSet, time::Duration};

use chrono::TimeDelta;
use engine::{
    failpoint,
    ids::ConnectionId,
    invitation::{
        DeliveryRecord, DeliveryResult, EmailAddress, MessageKind, TARGET_CLINIC_PREFIX,
        TARGET_PATIENT,
    },
    schedule::backoff,
    store::OutboxMessage,
};

pub use self::content::Links;
use self::{
    email::{EmailSettings, Mailer},
    webhook::WebhookEndpoint,
};
use crate::{Workflows, error::WorkflowError};

/// A clinic as emails name it.
#[derive(Debug, Clone)]
pub struct Clinic {
    pub name: String,
    /// Where notices about connections its invitations brought go.
    pub contact: Option<EmailAddress>,
}

/// Retries of one kind of message.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// What the deliver step sends, and how.
#[derive(Clone)]
pub struct DeliverySettings {
    /// `None`: no email is sent (invitations are refused; notices are not queued).
    pub email: Option<(EmailSettings, Mailer)>,
    pub webhooks: Vec<WebhookEndpoint>,
    pub clinics: BTreeMap<String, Clinic>,
    pub links: Links,
    /// Emails: 8 attempts from 30 s, doubling to at most an hour (about 2 hours in all).
    pub email_retry: Retry,
    /// Webhooks: 20 attempts from 30 s, doubling to at most 2 hours (about a day in all).
    pub webhook_retry: Retry,
    /// Per webhook request.
    pub webhook_timeout: Duration,
    /// How long a step may take to send one message before another may send it.
    pub lease: Duration,
    /// How often the dispatcher looks for due messages when nothing wakes it.
    pub poll_interval: Duration,
    /// How long sent and abandoned messages (and their attempts) are kept for operators.
    /// Default 30 days.
    pub retention: Duration,
}

impl std::fmt::Debug for DeliverySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySettings")
            .field("email", &self.email.as_ref().map(|(s, _)| &s.transport))
            .field("webhooks", &self.webhooks.len())
            .finish_non_exhaustive()
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            email: None,
            webhooks: Vec::new(),
            clinics: BTreeMap::new(),
            links: Links::default(),
            email_retry: Retry {
                max_attempts: 8,
                initial_backoff: Duration::from_secs(30),
                max_backoff: Duration::from_secs(3600),
            },
            webhook_retry: Retry {
                max_attempts: 20,
                initial_backoff: Duration::from_secs(30),
                max_backoff: Duration::from_secs(2 * 3600),
            },
            webhook_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl DeliverySettings {
    /// What the store must fan transitions out to.
    pub fn outbox(&self) -> engine::store::OutboxSettings {
        engine::store::OutboxSettings {
            webhook_endpoints: self.webhooks.iter().map(|w| w.name.clone()).collect(),
            email: self.email.is_some(),
            clinic_contacts: self
                .clinics
                .iter()
                .filter(|(_, clinic)| clinic.contact.is_some())
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }
}

/// What sending one message came to, before it is recorded.
enum Sent {
    Ok(String),
    Failed { permanent: bool, error: String },
}

impl Workflows {
    /// The deliver step for one connection. Running it twice, or beside another, is harmless:
    /// each message is leased before it is sent and recorded only while pending.
    pub async fn run_deliver_step(&self, id: ConnectionId) -> Result<usize, WorkflowError> {
        let settings = &self.settings.delivery;
        let now = self.store.clock().now();
        let mut held_back: HashSet<String> = HashSet::new();
        let mut delivered = 0;
        for message in self.store.pending_messages(id).await? {
            let ordered = message.kind == MessageKind::Webhook;
            if ordered && held_back.contains(&message.target) {
                continue;
            }
            if message.next_attempt_at > now
                || !self
                    .store
                    .lease_message(message.seq, settings.lease)
                    .await?
            {
                if ordered {
                    held_back.insert(message.target.clone());
                }
                continue;
            }
            self.store.failpoints().hit(failpoint::DELIVER_LEASED)?;
            let sent = self.send(&message).await;
            self.store.failpoints().hit(failpoint::DELIVER_SENT)?;
            let result = self.outcome(&message, sent);
            if ordered && matches!(result, DeliveryResult::Retry { .. }) {
                held_back.insert(message.target.clone());
            }
            if let DeliveryResult::Abandoned { error } = &result {
                tracing::warn!(connection = %id, message = %message.id, kind = message.kind.as_str(), error, "delivery abandoned");
            }
            let record = DeliveryRecord {
                seq: message.seq,
                kind: message.kind,
                attempt: message.attempts + 1,
                result,
            };
            self.store.record_delivery(id, record).await?;
            self.store.failpoints().hit(failpoint::DELIVER_RECORDED)?;
            delivered += 1;
        }
        Ok(delivered)
    }

    fn outcome(&self, message: &OutboxMessage, sent: Sent) -> DeliveryResult {
        let retry = if message.kind == MessageKind::Webhook {
            self.settings.delivery.webhook_retry
        } else {
            self.settings.delivery.email_retry
        };
        let attempts = message.attempts + 1;
        match sent {
            Sent::Ok(detail) => DeliveryResult::Sent { detail },
            Sent::Failed {
                permanent: true,
                error,
            } => DeliveryResult::Abandoned { error },
            Sent::Failed { error, .. } if attempts >= retry.max_attempts => {
                DeliveryResult::Abandoned {
                    error: format!("{error} (after {attempts} attempts)"),
                }
            }
            Sent::Failed { error, .. } => {
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
        }
    }

    async fn send(&self, message: &OutboxMessage) -> Sent {
        let settings = &self.settings.delivery;
        let failed = |permanent: bool, error: &str| Sent::Failed {
            permanent,
            error: error.to_owned(),
        };
        if message.kind == MessageKind::Webhook {
            let Some(endpoint) = settings.webhooks.iter().find(|w| w.name == message.target) else {
                return failed(true, "the webhook endpoint is no longer configured");
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
                Err(error) => Sent::Failed {
                    permanent: false,
                    error,
                },
            };
        }
        let Some((email, mailer)) = &settings.email else {
            return failed(true, "email is not configured");
        };
        let address = match self.recipient(message).await {
            Ok(Some(address)) => address,
            Ok(None) => return failed(true, "no address is known for the recipient"),
            Err(err) => {
                tracing::error!(error = %err, message = %message.id, "reading a recipient failed");
                return failed(false, "the recipient's address could not be read");
            }
        };
        let content = match self.content(message).await {
            Ok(content) => content,
            Err(error) => return failed(true, &error),
        };
        match mailer.send(email, &message.id, &address, &content).await {
            Ok(detail) => Sent::Ok(detail),
            Err(err) => Sent::Failed {
                permanent: err.permanent,
                error: err.message,
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
