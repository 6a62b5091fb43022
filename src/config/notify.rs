//! `[email]`, `[invitations]`, `[clinics.<id>]` and `[webhooks.<name>]`: what the outbox sends
//! and where (docs/notifications.md), and their checks.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use engine::{invitation::EmailAddress, secret::SecretString};
use serde::Deserialize;
use url::Url;
use workflows::{
    InvitationSettings,
    deliver::{
        Clinic, DeliverySettings, Links,
        email::{EmailSettings, EmailTransport, Mailer, SmtpTls},
        signature::WebhookSecret,
        webhook::WebhookEndpoint,
    },
};

use super::{Config, ConfigError};

/// `[email]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP relay's host name. Unset: in development mode (`dev_secrets = true`) messages
    /// are written as `.eml` files to `directory`; otherwise no email is sent (invitations are
    /// refused with `email_not_configured`, notices are not queued).
    pub relay: Option<String>,
    /// The relay's port. Default 587 (STARTTLS).
    pub port: u16,
    /// `starttls` (default), `implicit` (TLS from the first byte, usually port 465) or `none`
    /// (only for a relay on the loopback interface).
    pub tls: TlsMode,
    /// SMTP authentication (PLAIN or LOGIN, as the relay offers); both or neither.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Per SMTP command, in seconds. Default 30.
    pub timeout_secs: u64,
    /// The sender, e.g. `Tidepool <no-reply@tidepool.example>`. Default
    /// `Tributary <no-reply@localhost.localdomain>` (development only).
    pub from: Option<String>,
    pub reply_to: Option<String>,
    /// Development sink: where `.eml` files go. Default: beside the SQLite database
    /// (`tributary.db` → `tributary.mail/`).
    pub directory: Option<PathBuf>,
    /// The invitation link; `{partner}` and `{id}` (the invitation) are filled in. Default
    /// `<server.public_url>connect/{partner}?invitation={id}` in development; required with a
    /// relay.
    pub invite_link: Option<String>,
    /// The reconnect link of notices; `{partner}` and `{connection}` are filled in.
    pub reconnect_link: Option<String>,
    /// Attempts per message before it is abandoned. Default 8 (about two hours).
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    Starttls,
    Implicit,
    None,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            relay: None,
            port: 587,
            tls: TlsMode::Starttls,
            username: None,
            password: None,
            timeout_secs: 30,
            from: None,
            reply_to: None,
            directory: None,
            invite_link: None,
            reconnect_link: None,
            max_attempts: DeliverySettings::default().email_retry.max_attempts,
        }
    }
}

/// `[invitations]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvitationsConfig {
    /// How long an invitation stays open, in days. Default 30.
    pub expiry_days: u64,
    /// Least time between two emails of one invitation, in seconds. Default 3600.
    pub resend_interval_secs: u64,
}

impl Default for InvitationsConfig {
    fn default() -> Self {
        let defaults = InvitationSettings::default();
        Self {
            expiry_days: defaults.expiry.as_secs() / 86_400,
            resend_interval_secs: defaults.resend_interval.as_secs(),
        }
    }
}

/// `[clinics.<id>]`: how emails name a clinic, and where its notices go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicConfig {
    pub name: String,
    /// Where notices about connections that came from this clinic's invitations go.
    pub contact_email: Option<String>,
}

/// `[webhooks.<name>]`: an endpoint that receives every lifecycle event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (`http://` only on the loopback interface).
    pub url: Url,
    /// The signing secret, `whsec_<base64 of 24 to 64 bytes>` (Standard Webhooks).
    pub secret: SecretString,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every check of these sections (run with the others at load).
pub(super) fn check(config: &Config) -> Result<(), ConfigError> {
    let email = &config.email;
    if let Some(relay) = &email.relay {
        if relay.trim().is_empty() {
            return Err(ConfigError::invalid("email.relay", "must not be empty"));
        }
        if email.tls == TlsMode::None && !is_loopback(relay) {
            return Err(ConfigError::invalid(
                "email.tls",
                "`none` sends mail and credentials in the clear: only for a relay on the \
                 loopback interface; use `starttls` or `implicit`",
            ));
        }
        for (key, value) in [
            ("email.from", &email.from),
            ("email.invite_link", &email.invite_link),
        ] {
            if value.is_none() {
                return Err(ConfigError::invalid(
                    key,
                    "required when email.relay is set",
                ));
            }
        }
    }
    if email.username.is_some() != email.password.is_some() {
        return Err(ConfigError::invalid(
            "email.username",
            "set both email.username and email.password, or neither",
        ));
    }
    for (key, value) in [
        ("email.from", &email.from),
        ("email.reply_to", &email.reply_to),
    ] {
        if let Some(value) = value
            && !workflows::deliver::email::valid_mailbox(value)
        {
            return Err(ConfigError::invalid(
                key,
                "not an email address (`Name <a@b.org>` or `a@b.org`)",
            ));
        }
    }
    for (key, value) in [
        ("email.invite_link", &email.invite_link),
        ("email.reconnect_link", &email.reconnect_link),
    ] {
        if let Some(link) = value
            && Url::parse(&link.replace(['{', '}'], "")).is_err()
        {
            return Err(ConfigError::invalid(key, "not a URL template"));
        }
    }
    for (id, clinic) in &config.clinics {
        if !engine::invitation::valid_clinic_id(id) {
            return Err(ConfigError::invalid(
                format!("clinics.{id}"),
                "a clinic id is 1 to 128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if let Some(address) = &clinic.contact_email
            && let Err(e) = EmailAddress::parse(address)
        {
            return Err(ConfigError::invalid(
                format!("clinics.{id}.contact_email"),
                e.to_string(),
            ));
        }
    }
    for (name, hook) in &config.webhooks {
        let key = format!("webhooks.{name}");
        let plain_ok = hook.url.host_str().is_some_and(is_loopback);
        match hook.url.scheme() {
            "https" => {}
            "http" if plain_ok => {}
            _ => {
                return Err(ConfigError::invalid(
                    format!("{key}.url"),
                    "must be https:// (http:// only on the loopback interface)",
                ));
            }
        }
        WebhookSecret::parse(hook.secret.expose())
            .map_err(|e| ConfigError::invalid(format!("{key}.secret"), e.to_string()))?;
    }
    Ok(())
}

/// What the deliver step sends and the invitation workflow needs, from the configuration. Call
/// it inside a Tokio runtime: an SMTP transport starts its connection pool when it is built.
pub fn delivery(config: &Config) -> Result<(DeliverySettings, InvitationSettings), ConfigError> {
    let email = &config.email;
    let public = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| config.server.derived_public_url());
    // `Url::join` would percent-encode the braces of the placeholders.
    let default_link = |path: &str| format!("{}{path}", public.as_str());
    let transport = match &email.relay {
        Some(relay) => Some(EmailTransport::Smtp {
            relay: relay.clone(),
            port: email.port,
            tls: match email.tls {
                TlsMode::Starttls => SmtpTls::StartTls,
                TlsMode::Implicit => SmtpTls::Implicit,
                TlsMode::None => SmtpTls::None,
            },
            username: email.username.clone(),
            password: email.password.clone(),
            timeout: Duration::from_secs(email.timeout_secs),
        }),
        // The directory sink is a development convenience: never in a production-like setup.
        None if config.dev_secrets => Some(EmailTransport::Directory(
            email.directory.clone().unwrap_or_else(|| {
                crate::dev_secrets::beside_database(&config.database.url, "mail")
            }),
        )),
        None => None,
    };
    let email_settings = match transport {
        Some(transport) => {
            let mailer = Mailer::new(&transport)
                .map_err(|message| ConfigError::invalid("email.relay", message))?;
            let settings = EmailSettings {
                transport,
                from: email
                    .from
                    .clone()
                    .unwrap_or_else(|| "Tributary <no-reply@localhost.localdomain>".to_owned()),
                reply_to: email.reply_to.clone(),
            };
            Some((settings, mailer))
        }
        None => None,
    };
    let defaults = DeliverySettings::default();
    let mut webhooks = Vec::new();
    for (name, hook) in &config.webhooks {
        webhooks.push(WebhookEndpoint {
            name: name.clone(),
            url: hook.url.clone(),
            secret: WebhookSecret::parse(hook.secret.expose()).map_err(|e| {
                ConfigError::invalid(format!("webhooks.{name}.secret"), e.to_string())
            })?,
        });
    }
    let clinics: BTreeMap<String, Clinic> = config
        .clinics
        .iter()
        .map(|(id, clinic)| {
            let contact = clinic
                .contact_email
                .as_deref()
                .map(EmailAddress::parse)
                .transpose()
                .map_err(|e| {
                    ConfigError::invalid(format!("clinics.{id}.contact_email"), e.to_string())
                })?;
            Ok((
                id.clone(),
                Clinic {
                    name: clinic.name.clone(),
                    contact,
                },
            ))
        })
        .collect::<Result<_, ConfigError>>()?;
    let delivery = DeliverySettings {
        email: email_settings,
        webhooks,
        clinics,
        links: Links {
            invite: email
                .invite_link
                .clone()
                .unwrap_or_else(|| default_link("connect/{partner}?invitation={id}")),
            reconnect: email
                .reconnect_link
                .clone()
                .unwrap_or_else(|| default_link("connect/{partner}?connection={connection}")),
        },
        email_retry: workflows::deliver::Retry {
            max_attempts: email.max_attempts,
            ..defaults.email_retry
        },
        ..defaults
    };
    let invitations = InvitationSettings {
        expiry: Duration::from_secs(config.invitations.expiry_days.saturating_mul(86_400)),
        resend_interval: Duration::from_secs(config.invitations.resend_interval_secs),
    };
    Ok((delivery, invitations))
}
