//! Delivering the outbox (docs/notifications.md#the-outbox): what is sent (emails, signed
//! webhooks), how often it is retried, and the deliver step itself (`step.rs`).

mod content;
pub mod email;
pub mod signature;
mod step;
pub mod webhook;

use std::{collections::BTreeMap, time::Duration};

use engine::invitation::EmailAddress;

pub use self::content::Links;
pub use self::step::CONNECTIONS_PER_JOB;
use self::{email::EmailSettings, email::Mailer, webhook::WebhookEndpoint};

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
