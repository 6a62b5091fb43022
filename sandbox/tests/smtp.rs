//! The test mail server against a real client (lettre, as the service uses it) and against a
//! hand-written conversation for what lettre never sends.

use std::time::{Duration, Instant};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::MultiPart,
    transport::smtp::authentication::{Credentials, Mechanism},
};
use sandbox::smtp::{MAX_MESSAGE_SIZE, Refusal, SmtpServer};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(5);

type Transport = AsyncSmtpTransport<Tokio1Executor>;

fn transport(port: u16) -> Transport {
    Transport::builder_dangerous("127.0.0.1").port(port).build()
}

fn transport_with(port: u16, user: &str, password: &str, mechanism: Mechanism) -> Transport {
    Transport::builder_dangerous("127.0.0.1")
        .port(port)
        .credentials(Credentials::new(user.to_owned(), password.to_owned()))
        .authentication(vec![mechanism])
        .build()
}

fn simple(subject: &str) -> Message {
    Message::builder()
        .from("Tributary <noreply@tributary.test>".parse().unwrap())
        .to("alice@example.com".parse().unwrap())
        .subject(subject)
        .body(format!("Body of {subject}"))
        .unwrap()
}

#[tokio::test]
async fn multipart_message_is_received_and_decoded() {
    let server = SmtpServer::start().await.unwrap();
    let long_line = "Ihre Verbindung zu Dexcom wurde getrennt; bitte melden Sie sich erneut an, \
                     damit Tributary Ihre Daten wieder übertragen kann. "
        .repeat(3);
    let text = format!("Hallo Alice,\n\n{long_line}\n.\n..zwei Punkte\nTributary\n");
    let html = format!("<p>Hallo Alice,</p>\n<p>{long_line}</p>\n<p>Grüße – Tributary</p>\n");
    let message = Message::builder()
        .from("Tributary <noreply@tributary.test>".parse().unwrap())
        .reply_to("support@tributary.test".parse().unwrap())
        .to("Alice Müller <alice@example.com>".parse().unwrap())
        .bcc("audit@tributary.test".parse().unwrap())
        .subject("Verbindung – Dexcom")
        .message_id(Some("<42.connection@tributary.test>".to_owned()))
        .multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        ))
        .unwrap();
    transport(server.port()).send(message).await.unwrap();

    let mails = server.wait_for(1, WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.mail_from, "noreply@tributary.test");
    assert_eq!(mail.rcpt_to, ["alice@example.com", "audit@tributary.test"]);
    assert_eq!(mail.authenticated_as, None);
    assert_eq!(
        mail.header("subject").as_deref(),
        Some("Verbindung – Dexcom")
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Tributary <noreply@tributary.test>")
    );
    assert_eq!(
        mail.header("TO").as_deref(),
        Some("Alice Müller <alice@example.com>")
    );
    assert_eq!(
        mail.header("Reply-To").as_deref(),
        Some("support@tributary.test")
    );
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some("<42.connection@tributary.test>")
    );
    let content_type = mail.header("Content-Type").unwrap();
    assert!(
        content_type.starts_with("multipart/alternative;"),
        "{content_type}"
    );
    assert!(mail.header("Date").is_some());
    assert_eq!(mail.header("Bcc"), None);
    assert_eq!(mail.header("X-Missing"), None);
    assert_eq!(mail.text_body().as_deref(), Some(text.as_str()));
    assert_eq!(mail.html_body().as_deref(), Some(html.as_str()));
    // The long line forced a transfer encoding, and the raw data keep SMTP's line ends.
    assert!(
        mail.data.contains("quoted-printable") || mail.data.contains("base64"),
        "{}",
        mail.data
    );
    assert!(mail.data.lines().all(|line| line.len() <= 998));
    assert!(!mail.data.replace("\r\n", "").contains('\n'));
    assert!(mail.data.ends_with("\r\n") && !mail.data.ends_with("\r\n.\r\n"));
}

#[tokio::test]
async fn plain_message_has_no_html_body() {
    let server = SmtpServer::start().await.unwrap();
    transport(server.port())
        .send(simple("Plain"))
        .await
        .unwrap();
    let mail = &server.wait_for(1, WAIT).await[0];
    assert_eq!(mail.text_body().as_deref(), Some("Body of Plain"));
    assert_eq!(mail.html_body(), None);
}

#[tokio::test]
async fn pooled_connection_carries_several_messages() {
    let server = SmtpServer::start().await.unwrap();
    let mailer = transport(server.port());
    mailer.send(simple("First")).await.unwrap();
    // lettre returns a connection to its pool from a spawned task.
    tokio::time::sleep(Duration::from_millis(50)).await;
    mailer.send(simple("Second")).await.unwrap();
    let subjects: Vec<_> = server
        .wait_for(2, WAIT)
        .await
        .iter()
        .map(|mail| mail.header("Subject").unwrap())
        .collect();
    assert_eq!(subjects, ["First", "Second"]);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn auth_plain_and_login() {
    let server = SmtpServer::start().await.unwrap();
    server.require_auth("mailer", "s3cret");

    let err = transport(server.port())
        .send(simple("Anonymous"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(
        err.status().map(|code| code.to_string()).as_deref(),
        Some("530")
    );

    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let wrong = transport_with(server.port(), "mailer", "guess", mechanism);
        let err = wrong.send(simple("Wrong")).await.unwrap_err();
        assert!(err.is_permanent(), "{mechanism}: {err}");
        assert_eq!(
            err.status().map(|code| code.to_string()).as_deref(),
            Some("535")
        );

        let right = transport_with(server.port(), "mailer", "s3cret", mechanism);
        right.send(simple(&mechanism.to_string())).await.unwrap();
    }

    let mails = server.wait_for(2, WAIT).await;
    assert_eq!(mails.len(), 2);
    assert!(
        mails
            .iter()
            .all(|mail| mail.authenticated_as.as_deref() == Some("mailer"))
    );
}

#[tokio::test]
async fn scripted_refusals() {
    let server = SmtpServer::start().await.unwrap();
    let mailer = transport(server.port());

    server.refuse_next(1, Refusal::Permanent);
    let err = mailer.send(simple("Refused")).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    mailer.send(simple("Accepted")).await.unwrap();

    server.refuse_next(1, Refusal::Temporary);
    let err = mailer.send(simple("Later")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    server.refuse_all(Some(Refusal::Temporary));
    for _ in 0..2 {
        assert!(
            mailer
                .send(simple("Down"))
                .await
                .unwrap_err()
                .is_transient()
        );
    }
    server.refuse_all(None);
    mailer.send(simple("Back")).await.unwrap();

    let subjects: Vec<_> = server
        .messages()
        .iter()
        .map(|mail| mail.header("Subject").unwrap())
        .collect();
    assert_eq!(subjects, ["Accepted", "Back"]);
    assert_eq!(server.refused(), 4);
}

#[tokio::test]
async fn server_down_then_up_on_the_same_port() {
    let server = SmtpServer::start().await.unwrap();
    let port = server.port();
    let mailer = transport(port);
    mailer.send(simple("Before")).await.unwrap();
    server.stop().await;

    let err = mailer.send(simple("Lost")).await.unwrap_err();
    assert!(!err.is_permanent() && !err.is_transient(), "{err}");

    let server = SmtpServer::start_on(port).await.unwrap();
    assert_eq!(server.port(), port);
    mailer.send(simple("After")).await.unwrap();
    let mails = server.wait_for(1, WAIT).await;
    assert_eq!(mails[0].header("Subject").as_deref(), Some("After"));
}

#[tokio::test]
async fn wait_for_returns_what_it_has_on_timeout() {
    let server = SmtpServer::start().await.unwrap();
    transport(server.port()).send(simple("Only")).await.unwrap();
    let started = Instant::now();
    let mails = server.wait_for(2, Duration::from_millis(200)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(mails.len(), 1);
}

/// A raw client: sends lines as they are, reads one (possibly multi-line) reply at a time.
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(server: &SmtpServer) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        let mut raw = Raw {
            reader: BufReader::new(stream),
        };
        assert!(raw.reply().await.starts_with("220 "));
        raw
    }

    async fn write(&mut self, text: &str) {
        self.reader
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .unwrap();
    }

    /// The reply's last line.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).await.unwrap() > 0,
                "closed"
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    async fn expect(&mut self, command: &str, code: &str) -> String {
        self.write(&format!("{command}\r\n")).await;
        let reply = self.reply().await;
        assert!(reply.starts_with(code), "{command}: {reply}");
        reply
    }
}

#[tokio::test]
async fn protocol_errors_and_sequence() {
    let server = SmtpServer::start().await.unwrap();
    let mut raw = Raw::connect(&server).await;
    raw.expect("MAIL FROM:<a@b.test>", "503").await;
    raw.expect("FOO bar", "500").await;
    raw.expect("EHLO", "501").await;
    raw.expect("HELO client.test", "250").await;
    raw.expect("RCPT TO:<c@d.test>", "503").await;
    raw.expect("DATA", "503").await;
    raw.expect("MAIL TO:<a@b.test>", "501").await;
    raw.expect("MAIL FROM:<a@b.test> SIZE=999999999", "552")
        .await;
    raw.expect("MAIL FROM:<a@b.test> FOO=1", "555").await;
    raw.expect("MAIL FROM:<> BODY=8BITMIME SMTPUTF8", "250")
        .await;
    raw.expect("MAIL FROM:<a@b.test>", "503").await;
    raw.expect("DATA", "503").await;
    raw.expect("RCPT TO:<>", "501").await;
    raw.expect("RSET", "250").await;
    raw.expect("RCPT TO:<c@d.test>", "503").await;
    raw.expect("NOOP", "250").await;
    raw.expect(&format!("NOOP {}", "x".repeat(5000)), "500 5.5.2")
        .await;
    raw.expect("STARTTLS", "502").await;
    raw.expect("AUTH CRAM-MD5", "504").await;
    // AUTH PLAIN with a continuation; no credentials required, so any are accepted.
    raw.expect("AUTH PLAIN", "334").await;
    raw.expect("AHRlc3RlcgB3aGF0ZXZlcg==", "235").await;
    raw.expect("AUTH LOGIN", "503").await;
    raw.expect("QUIT", "221").await;
    let mut rest = String::new();
    assert_eq!(raw.reader.read_line(&mut rest).await.unwrap(), 0);
    assert_eq!(server.messages().len(), 0);
}

#[tokio::test]
async fn pipelining_dot_stuffing_and_limits() {
    let server = SmtpServer::start().await.unwrap();
    let mut raw = Raw::connect(&server).await;
    raw.expect("EHLO client.test", "250 SIZE 10485760").await;

    // One write with a whole transaction, as a pipelining client sends it.
    raw.write(
        "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n\
         Subject: Dots\r\n and folds\r\nX-Kind: =?utf-8?q?Gr=c3=bc=c3=9fe?=\r\n\
         Message-ID: <1@b.test>\r\n\r\n..leading\r\n.\r\n",
    )
    .await;
    for code in ["250", "250", "250", "354", "250 2.0.0 Ok: queued as"] {
        let reply = raw.reply().await;
        assert!(reply.starts_with(code), "{reply}");
    }
    let mail = &server.messages()[0];
    assert_eq!(mail.mail_from, "a@b.test");
    assert_eq!(mail.rcpt_to, ["c@d.test", "e@f.test"]);
    assert!(mail.data.ends_with("<1@b.test>\r\n\r\n.leading\r\n"));
    assert_eq!(mail.header("Subject").as_deref(), Some("Dots and folds"));
    assert_eq!(mail.header("x-kind").as_deref(), Some("Grüße"));
    assert_eq!(mail.header("Message-Id").as_deref(), Some("<1@b.test>"));
    assert_eq!(mail.text_body().as_deref(), Some(".leading"));

    // A line over 1000 bytes spoils the message, but the session goes on.
    raw.expect("MAIL FROM:<a@b.test>", "250").await;
    raw.expect("RCPT TO:<c@d.test>", "250").await;
    raw.expect("DATA", "354").await;
    raw.write(&format!("Subject: Long\r\n\r\n{}\r\n", "y".repeat(2000)))
        .await;
    raw.expect(".", "500 5.5.2").await;

    // Over SIZE: refused after the final dot, without keeping the data.
    raw.expect("MAIL FROM:<a@b.test>", "250").await;
    raw.expect("RCPT TO:<c@d.test>", "250").await;
    raw.expect("DATA", "354").await;
    let line = format!("{}\r\n", "z".repeat(998));
    let chunk = line.repeat(1024);
    for _ in 0..=MAX_MESSAGE_SIZE / chunk.len() {
        raw.write(&chunk).await;
    }
    raw.expect(".", "552").await;

    raw.expect("NOOP", "250").await;
    assert_eq!(server.messages().len(), 1);
}
