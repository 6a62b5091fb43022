//! What the emails say (docs/notifications.md#email): built from the message's facts (partner,
//! clinic, invitation), the configured names and link templates — never a token, a code or
//! a health datum.

use engine::store::OutboxMessage;

use super::email::EmailContent;
use crate::Workflows;

/// Link templates of the emails. Placeholders: `{partner}`, `{id}` (the invitation),
/// `{connection}`; values are URL-safe ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Where an invited patient connects, e.g.
    /// `https://app.example/connect/{partner}?invitation={id}`.
    pub invite: String,
    /// Where a patient reconnects a stopped connection.
    pub reconnect: String,
}

impl Default for Links {
    fn default() -> Self {
        Self {
            invite: "http://localhost:8080/connect/{partner}?invitation={id}".to_owned(),
            reconnect: "http://localhost:8080/connect/{partner}?connection={connection}".to_owned(),
        }
    }
}

/// Fills a link template. Every value is an id of `[A-Za-z0-9._-]` (partner names, UUIDs),
/// so nothing needs escaping; anything else is percent-encoded all the same.
pub fn fill(template: &str, partner: &str, id: &str, connection: &str) -> String {
    let encode = |value: &str| -> String {
        value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    template
        .replace("{partner}", &encode(partner))
        .replace("{id}", &encode(id))
        .replace("{connection}", &encode(connection))
}

impl Workflows {
    pub(super) async fn content(&self, message: &OutboxMessage) -> Result<EmailContent, String> {
        let text = |key: &str| message.payload[key].as_str().unwrap_or_default().to_owned();
        let partner = text("partner");
        let partner_name = self
            .partners
            .get(&partner)
            .map_or_else(|| partner.clone(), |p| p.config().display_name.clone());
        let clinic_id = text("clinicId");
        let clinic_name = self
            .settings
            .delivery
            .clinics
            .get(&clinic_id)
            .map_or_else(|| format!("Clinic {clinic_id}"), |c| c.name.clone());
        let links = &self.settings.delivery.links;
        let connection = message.connection_id.to_string();
        match text("template").as_str() {
            "invite" => {
                let id = text("invitationId");
                let invitation = self
                    .store
                    .invitation(&clinic_id, &id)
                    .await
                    .map_err(|e| format!("the invitation cannot be read: {e}"))?;
                Ok(EmailContent {
                    subject: format!(
                        "{clinic_name} invites you to connect your {partner_name} account"
                    ),
                    paragraphs: vec![
                        "Hello,".to_owned(),
                        format!(
                            "{clinic_name} asks you to connect your {partner_name} account to \
                             Tidepool, so that your care team can see your data."
                        ),
                        format!(
                            "This invitation is valid until {}. If you did not expect it, you \
                             can ignore this email.",
                            invitation.expires_at.format("%B %-d, %Y")
                        ),
                    ],
                    link_label: format!("Connect {partner_name}"),
                    link: fill(&links.invite, &partner, &id, &connection),
                })
            }
            "connection_lost" => {
                let for_clinic = !clinic_id.is_empty();
                let why = match text("state").as_str() {
                    "revoked" => format!("{partner_name} reports that access was withdrawn"),
                    _ => format!("data could not be fetched from {partner_name} for too long"),
                };
                let paragraphs = if for_clinic {
                    vec![
                        "Hello,".to_owned(),
                        format!(
                            "The {partner_name} connection of a patient you invited (Tidepool \
                             user {}) has stopped: {why}. The patient was asked to reconnect.",
                            message.payload["userId"].as_str().unwrap_or("unknown")
                        ),
                    ]
                } else {
                    vec![
                        "Hello,".to_owned(),
                        format!(
                            "Your {partner_name} account is no longer connected to Tidepool: \
                             {why}. No new data arrive until you reconnect."
                        ),
                    ]
                };
                Ok(EmailContent {
                    subject: format!("Your {partner_name} connection to Tidepool has stopped"),
                    paragraphs,
                    link_label: format!("Reconnect {partner_name}"),
                    link: fill(&links.reconnect, &partner, "", &connection),
                })
            }
            other => Err(format!("unknown email template {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn templates_are_filled() {
        assert_eq!(
            fill(
                "https://app.example/connect/{partner}?invitation={id}",
                "dexcom",
                "01-a",
                "c"
            ),
            "https://app.example/connect/dexcom?invitation=01-a"
        );
        assert_eq!(
            fill("x?c={connection}&p={partner}", "a b", "", "c&d"),
            "x?c=c%26d&p=a%20b"
        );
    }
}
