//! Clinician invitations and the messages connections owe (docs/notifications.md): the domain
//! types the transition table, the store and the workflows share.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::{ids::ConnectionId, secret::SecretString, state::State};

/// Longest address accepted (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;

/// An email address: personal data. `Debug` and `Display` show only [`EmailAddress::masked`];
/// the address itself is read through [`EmailAddress::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(SecretString);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an email address: {0}")]
pub struct InvalidEmail(&'static str);

impl EmailAddress {
    /// A `local@domain` address as a mail relay accepts it: one `@`, a local part of 1–64
    /// printable characters, a domain of dot-separated labels (letters, digits, hyphens; at
    /// least two labels), no spaces, controls, angle brackets or quotes (which could break the
    /// SMTP envelope or the headers).
    pub fn parse(text: &str) -> Result<Self, InvalidEmail> {
        if text.len() > MAX_EMAIL_LEN {
            return Err(InvalidEmail("longer than 254 characters"));
        }
        let (local, domain) = text.rsplit_once('@').ok_or(InvalidEmail("no `@`"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(InvalidEmail(
                "the part before `@` must have 1 to 64 characters",
            ));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(InvalidEmail("misplaced dot before `@`"));
        }
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        {
            return Err(InvalidEmail("unsupported character before `@`"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(InvalidEmail(
                "the domain must be a host name like example.org",
            ));
        }
        Ok(Self(SecretString::new(format!(
            "{local}@{}",
            domain.to_ascii_lowercase()
        ))))
    }

    /// The address, for sealing and for the mail envelope. Call sites are the audit trail.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// What a clinic is shown: the first character of the local part, `***`, the domain
    /// (`p***@example.org`).
    pub fn masked(&self) -> String {
        let (local, domain) = self.expose().rsplit_once('@').unwrap_or(("", ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A clinic id (a claim of clinician tokens, a path segment): 1–128 characters of
/// `[A-Za-z0-9._-]`.
pub fn valid_clinic_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// An invitation to create with an `Invite` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvitation {
    pub id: String,
    pub clinic_id: String,
    /// The inviting clinician's subject.
    pub clinician: String,
    pub email: EmailAddress,
    pub expires_at: DateTime<Utc>,
}

/// Where an invitation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvitationStatus {
    /// Sent; the patient has not acted yet.
    Pending,
    /// The patient started connecting.
    Accepted,
    /// The patient declined (disconnected the invited connection).
    Declined,
    /// The clinic withdrew it.
    Cancelled,
    /// Nobody acted before it expired.
    Expired,
}

impl InvitationStatus {
    pub const ALL: [InvitationStatus; 5] = [
        InvitationStatus::Pending,
        InvitationStatus::Accepted,
        InvitationStatus::Declined,
        InvitationStatus::Cancelled,
        InvitationStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Declined => "declined",
            InvitationStatus::Cancelled => "cancelled",
            InvitationStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// How a pending invitation ends when nobody accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationEnd {
    Cancelled,
    Expired,
}

impl InvitationEnd {
    pub fn status(self) -> InvitationStatus {
        match self {
            InvitationEnd::Cancelled => InvitationStatus::Cancelled,
            InvitationEnd::Expired => InvitationStatus::Expired,
        }
    }

    /// The reason code journaled when the connection leaves `invited` because of it.
    pub fn reason(self) -> &'static str {
        match self {
            InvitationEnd::Cancelled => "invite_cancelled",
            InvitationEnd::Expired => "invite_expired",
        }
    }
}

/// An invitation as its clinic sees it (the address masked), with its connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub connection_id: ConnectionId,
    pub clinic_id: String,
    pub clinician: String,
    pub partner: String,
    pub patient_user_id: String,
    pub email_masked: String,
    pub status: InvitationStatus,
    pub connection_state: State,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_sent_at: DateTime<Utc>,
    pub sent_count: u32,
    pub closed_at: Option<DateTime<Utc>>,
}

/// What an outbox message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// The invitation email to the patient.
    InviteEmail,
    /// A notice that a connection stopped (to the patient, or to the inviting clinic).
    NoticeEmail,
    /// A lifecycle event for a webhook endpoint.
    Webhook,
}

impl MessageKind {
    pub const ALL: [MessageKind; 3] = [
        MessageKind::InviteEmail,
        MessageKind::NoticeEmail,
        MessageKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::InviteEmail => "invite_email",
            MessageKind::NoticeEmail => "notice_email",
            MessageKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    pub fn is_email(self) -> bool {
        !matches!(self, MessageKind::Webhook)
    }
}

/// Where an outbox message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    Pending,
    Sent,
    Abandoned,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 3] = [
        MessageStatus::Pending,
        MessageStatus::Sent,
        MessageStatus::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// The recipient of an email message: the patient, or a clinic's contact address.
pub const TARGET_PATIENT: &str = "patient";
/// Prefix of a clinic target: `clinic:<clinic id>`.
pub const TARGET_CLINIC_PREFIX: &str = "clinic:";

/// What one delivery attempt of an outbox message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Accepted by the relay or the endpoint; `detail` is its answer.
    Sent { detail: String },
    /// Failed for now; attempted again at `next_attempt_at`.
    Retry {
        next_attempt_at: DateTime<Utc>,
        error: String,
    },
    /// Given up (refused for good, or out of attempts).
    Abandoned { error: String },
}

impl DeliveryResult {
    pub fn outcome(&self) -> &'static str {
        match self {
            DeliveryResult::Sent { .. } => "sent",
            DeliveryResult::Retry { .. } => "retrying",
            DeliveryResult::Abandoned { .. } => "abandoned",
        }
    }
}

/// A delivery attempt to record, on the message's row and (by a transition) in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub seq: i64,
    pub kind: MessageKind,
    /// The message's attempts, this one included.
    pub attempt: u32,
    pub result: DeliveryResult,
}

impl DeliveryRecord {
    /// Whether the attempt goes into the journal too: emails, and a webhook given up. A webhook
    /// sent or retried is recorded on its row only (docs/notifications.md#at-least-once).
    pub fn journaled(&self) -> bool {
        self.kind.is_email() || matches!(self.result, DeliveryResult::Abandoned { .. })
    }

    /// The journal's name for it: `invite_email_sent`, `notice_email_retrying`,
    /// `webhook_abandoned`, …
    pub fn journal_name(&self) -> &'static str {
        use DeliveryResult::*;
        use MessageKind::*;
        match (self.kind, &self.result) {
            (InviteEmail, Sent { .. }) => "invite_email_sent",
            (InviteEmail, Retry { .. }) => "invite_email_retrying",
            (InviteEmail, Abandoned { .. }) => "invite_email_abandoned",
            (NoticeEmail, Sent { .. }) => "notice_email_sent",
            (NoticeEmail, Retry { .. }) => "notice_email_retrying",
            (NoticeEmail, Abandoned { .. }) => "notice_email_abandoned",
            (Webhook, Sent { .. }) => "webhook_sent",
            (Webhook, Retry { .. }) => "webhook_retrying",
            (Webhook, Abandoned { .. }) => "webhook_abandoned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_masked() {
        let address = EmailAddress::parse("patient.one+t1@Example.ORG").unwrap();
        assert_eq!(address.expose(), "patient.one+t1@example.org");
        assert_eq!(address.masked(), "p***@example.org");
        assert_eq!(format!("{address:?}"), "EmailAddress(p***@example.org)");
        assert!(!format!("{address} {address:?}").contains("patient.one"));
        for bad in [
            "",
            "no-at",
            "@example.org",
            "a@",
            "a@localhost",
            "a b@example.org",
            "a@exa mple.org",
            "<a>@example.org",
            "a@example.org\r\nBcc: x@y.org",
            "a..b@example.org",
            "a@-x.org",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EmailAddress::parse(&format!("{}@example.org", "a".repeat(65))).is_err());
    }

    #[test]
    fn clinic_ids() {
        assert!(valid_clinic_id("c1"));
        assert!(valid_clinic_id("clinic.north-2_a"));
        assert!(!valid_clinic_id(""));
        assert!(!valid_clinic_id("a/b"));
        assert!(!valid_clinic_id(&"c".repeat(129)));
    }
}
