//! Email: the messages (plain text and HTML, never a token or a code) and the transports — an
//! SMTP relay through lettre (STARTTLS, implicit TLS or plain, with authentication and
//! timeouts), or, in development, a directory of `.eml` files (docs/notifications.md#email).

use std::{path::PathBuf, time::Duration};

use engine::secret::SecretString;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `STARTTLS` after the greeting; refused if the relay does not offer it (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: only for a relay on the same host or network (and tests).
    None,
}

/// Where email goes.
#[derive(Debug, Clone)]
pub enum EmailTransport {
    Smtp {
        relay: String,
        port: u16,
        tls: SmtpTls,
        username: Option<String>,
        password: Option<SecretString>,
        /// Per SMTP command.
        timeout: Duration,
    },
    /// Development: each message is written to `<dir>/<message id>.eml`.
    Directory(PathBuf),
}

/// Email settings: the transport and the sender.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    /// `Tidepool <no-reply@example.org>`.
    pub from: String,
    pub reply_to: Option<String>,
}

/// What a message is about: the facts an email says, without personal data.
#[derive(Debug, Clone)]
pub struct EmailContent {
    pub subject: String,
    /// Paragraphs of text; `link` follows them.
    pub paragraphs: Vec<String>,
    pub link_label: String,
    pub link: String,
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub failure: SendFailure,
    pub message: String,
}

/// How a send failed, which decides its retries (docs/notifications.md#at-least-once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The relay is down, slow, or answered 4xx.
    Temporary,
    /// The relay refused it for good (5xx).
    Refused,
    /// The message cannot be built (an address the builder rejects).
    Invalid,
}

/// Whether `text` is a mailbox a message can be sent from or replied to (`Name <a@b.org>`
/// or `a@b.org`), as the message builder reads it.
pub fn valid_mailbox(text: &str) -> bool {
    text.parse::<Mailbox>().is_ok()
}

/// A built transport (an SMTP transport keeps a pool of connections).
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(PathBuf),
}

impl Mailer {
    pub fn new(transport: &EmailTransport) -> Result<Self, String> {
        match transport {
            EmailTransport::Directory(dir) => Ok(Mailer::Directory(dir.clone())),
            EmailTransport::Smtp {
                relay,
                port,
                tls,
                username,
                password,
                timeout,
            } => {
                let parameters = || {
                    TlsParameters::new(relay.clone())
                        .map_err(|e| format!("TLS parameters for {relay}: {e}"))
                };
                let tls = match tls {
                    SmtpTls::StartTls => Tls::Required(parameters()?),
                    SmtpTls::Implicit => Tls::Wrapper(parameters()?),
                    SmtpTls::None => Tls::None,
                };
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay)
                    .port(*port)
                    .tls(tls)
                    .timeout(Some(*timeout));
                if let (Some(user), Some(password)) = (username, password) {
                    builder = builder
                        .credentials(Credentials::new(user.clone(), password.expose().clone()));
                }
                Ok(Mailer::Smtp(builder.build()))
            }
        }
    }

    /// Sends one message; `Ok` carries the relay's answer (or the file written).
    pub async fn send(
        &self,
        settings: &EmailSettings,
        message_id: &str,
        to: &str,
        content: &EmailContent,
    ) -> Result<String, SendError> {
        let message = build(settings, message_id, to, content).map_err(|message| SendError {
            failure: SendFailure::Invalid,
            message,
        })?;
        match self {
            Mailer::Smtp(transport) => match transport.send(message).await {
                Ok(response) => Ok(format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )),
                Err(err) => Err(SendError {
                    failure: if err.is_permanent() {
                        SendFailure::Refused
                    } else {
                        SendFailure::Temporary
                    },
                    message: smtp_error(&err),
                }),
            },
            Mailer::Directory(dir) => {
                let file = dir.join(format!("{message_id}.eml"));
                let temporary = dir.join(format!(".{message_id}.eml.partial"));
                let write = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&temporary, message.formatted()).await?;
                    tokio::fs::rename(&temporary, &file).await
                };
                write.await.map_err(|e| SendError {
                    failure: SendFailure::Temporary,
                    message: format!("cannot write to the mail directory: {e}"),
                })?;
                Ok(format!("written to {message_id}.eml"))
            }
        }
    }
}

/// The relay's answer without the recipient: lettre's errors quote the server's text, which
/// may repeat the address ("550 <p@example.org>: mailbox unavailable"); codes are kept.
fn smtp_error(err: &lettre::transport::smtp::Error) -> String {
    let code = err
        .status()
        .map(|code| format!("{code} "))
        .unwrap_or_default();
    let kind = if err.is_permanent() {
        "refused permanently"
    } else if err.is_transient() {
        "refused for now"
    } else if err.is_timeout() {
        "timed out"
    } else {
        "unreachable or failed"
    };
    format!("SMTP {code}{kind}")
}

fn build(
    settings: &EmailSettings,
    message_id: &str,
    to: &str,
    content: &EmailContent,
) -> Result<Message, String> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| format!("the configured sender is not an address: {e}"))?;
    let to: Mailbox = to
        .parse()
        .map_err(|_| "the recipient is not an address".to_owned())?;
    let domain = from.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(content.subject.clone())
        .message_id(Some(format!("<{message_id}@{domain}>")));
    if let Some(reply_to) = &settings.reply_to {
        builder = builder.reply_to(
            reply_to
                .parse()
                .map_err(|e| format!("the configured reply-to is not an address: {e}"))?,
        );
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            plain_text(content),
            html(content),
        ))
        .map_err(|e| format!("cannot build the message: {e}"))
}

fn plain_text(content: &EmailContent) -> String {
    let mut text = content.paragraphs.join("\n\n");
    text.push_str(&format!("\n\n{}: {}\n", content.link_label, content.link));
    text
}

fn html(content: &EmailContent) -> String {
    let mut html = String::from("<!doctype html>\n<html><body>\n");
    for paragraph in &content.paragraphs {
        html.push_str(&format!("<p>{}</p>\n", escape(paragraph)));
    }
    html.push_str(&format!(
        "<p><a href=\"{}\">{}</a></p>\n</body></html>\n",
        escape(&content.link),
        escape(&content.link_label)
    ));
    html
}

/// HTML-escapes text (names come from configuration, but never trust them in markup).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> EmailContent {
        EmailContent {
            subject: "North <Clinic> invites you".into(),
            paragraphs: vec!["A & B".into()],
            link_label: "Connect".into(),
            link: "https://app.example/connect/x?invitation=1&y=\"2\"".into(),
        }
    }

    #[test]
    fn html_is_escaped_and_text_carries_the_link() {
        let html = html(&content());
        assert!(html.contains("<p>A &amp; B</p>"));
        assert!(
            html.contains(
                "href=\"https://app.example/connect/x?invitation=1&amp;y=&quot;2&quot;\""
            )
        );
        assert!(
            plain_text(&content())
                .ends_with("Connect: https://app.example/connect/x?invitation=1&y=\"2\"\n")
        );
    }

    #[test]
    fn messages_have_the_headers() {
        let settings = EmailSettings {
            transport: EmailTransport::Directory(PathBuf::from("/nonexistent")),
            from: "Tidepool <no-reply@tidepool.example>".into(),
            reply_to: Some("support@tidepool.example".into()),
        };
        let message = build(&settings, "m-1", "p@example.org", &content()).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Message-ID: <m-1@tidepool.example>"), "{raw}");
        assert!(raw.contains("Reply-To: support@tidepool.example"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(build(&settings, "m-1", "not an address", &content()).is_err());
    }
}
