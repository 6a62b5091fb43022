//! A mail server for tests: a real SMTP conversation on loopback (an RFC 5321 subset with
//! the ESMTP extensions PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, SIZE and AUTH
//! PLAIN/LOGIN; no TLS), so that code sending mail through an ordinary SMTP client is tested
//! end to end, including how it reacts to refusals scripted by the test.
//!
//! **Development only.** Credentials travel in plaintext; any sender or recipient is accepted.

mod decode;
mod session;

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use self::session::Session;
use crate::lock;

const SERVER_NAME: &str = "sandbox.localhost";
/// Largest message accepted (advertised as `SIZE`), in bytes after dot-unstuffing.
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// RFC 5321's limit for text lines (CRLF included), applied to commands too so that a long
/// AUTH PLAIN response fits.
const MAX_LINE: usize = 1000;
/// RFC 5321's minimum; more would only grow memory.
const MAX_RECIPIENTS: usize = 100;
const EHLO_FIRST: &str = "503 5.5.1 Send EHLO first";
const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed limit";

/// A running SMTP server on `127.0.0.1`. Dropping it stops listening and closes the open
/// connections (like a crashed server) as soon as the runtime runs the aborted task;
/// [`SmtpServer::stop`] waits until the port is closed.
pub struct SmtpServer {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// A message accepted at the end of DATA.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope sender, without angle brackets (empty for the null sender `<>`).
    pub mail_from: String,
    /// Envelope recipients, without angle brackets, in RCPT order.
    pub rcpt_to: Vec<String>,
    /// The raw message as received: CRLF line ends, dot-unstuffed, without the final ".".
    pub data: String,
    /// The AUTH username if the client authenticated.
    pub authenticated_as: Option<String>,
}

/// How the server answers a message at the end of DATA, scripted by tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `550 5.7.1`: the client must give up on the message.
    Permanent,
    /// `451 4.3.0`: the client should retry later.
    Temporary,
}

struct Shared {
    state: Mutex<State>,
    /// The number of accepted messages, for `wait_for` to sleep on.
    accepted: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    credentials: Option<(String, String)>,
    refuse_next: Option<(usize, Refusal)>,
    refuse_all: Option<Refusal>,
    messages: Vec<ReceivedMail>,
    refused: usize,
    connections: usize,
}

impl State {
    /// Applies the scripted refusals, else stores the message; returns how many are stored.
    fn deliver(&mut self, mail: ReceivedMail) -> Result<usize, Refusal> {
        let refusal = match &mut self.refuse_next {
            Some((count @ 1.., refusal)) => {
                *count -= 1;
                Some(*refusal)
            }
            _ => self.refuse_all,
        };
        if let Some(refusal) = refusal {
            self.refused += 1;
            return Err(refusal);
        }
        self.messages.push(mail);
        Ok(self.messages.len())
    }
}

impl SmtpServer {
    /// Starts a server on `127.0.0.1` and a free port.
    pub async fn start() -> io::Result<SmtpServer> {
        Self::start_on(0).await
    }

    /// Starts a server on `127.0.0.1:port`, e.g. the port of a server stopped earlier.
    pub async fn start_on(port: u16) -> io::Result<SmtpServer> {
        let socket = TcpSocket::new_v4()?;
        // Otherwise binding the port of a server that just stopped fails while its closed
        // connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let listener = socket.listen(128)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            accepted: watch::Sender::new(0),
        });
        Ok(SmtpServer {
            port: listener.local_addr()?.port(),
            shared: shared.clone(),
            accept: tokio::spawn(accept_loop(listener, shared)),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, MAIL FROM without a successful AUTH gets `530 5.7.0`, and AUTH with other
    /// credentials `535 5.7.8`. Until then, any credentials are accepted (and recorded).
    pub fn require_auth(&self, username: &str, password: &str) {
        lock(&self.shared.state).credentials = Some((username.to_owned(), password.to_owned()));
    }

    /// Refuses the next `count` messages at the end of DATA, without storing them. Replaces
    /// an earlier `refuse_next`, and comes before [`SmtpServer::refuse_all`].
    pub fn refuse_next(&self, count: usize, refusal: Refusal) {
        lock(&self.shared.state).refuse_next = Some((count, refusal));
    }

    /// Refuses every message until called with `None`.
    pub fn refuse_all(&self, refusal: Option<Refusal>) {
        lock(&self.shared.state).refuse_all = refusal;
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.shared.state).messages.clone()
    }

    /// How many messages were refused as scripted so far (protocol errors such as an
    /// oversized message do not count).
    pub fn refused(&self) -> usize {
        lock(&self.shared.state).refused
    }

    /// How many TCP connections were accepted so far, to check that a client pools them.
    pub fn connections(&self) -> usize {
        lock(&self.shared.state).connections
    }

    /// Waits until at least `count` messages were accepted or `timeout` passed, and returns
    /// the accepted messages either way.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let mut accepted = self.shared.accepted.subscribe();
        // A timeout is no error here: the caller's assertion tells what is missing.
        let _ = tokio::time::timeout(timeout, accepted.wait_for(|n| *n >= count)).await;
        self.messages()
    }

    /// Stops listening and closes the open connections, returning once the port refuses
    /// connections.
    pub async fn stop(mut self) {
        self.accept.abort();
        // An aborted task's handle resolves only after its future (the listener) is dropped.
        let _ = (&mut self.accept).await;
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in this set so that aborting the accept task ends them too: a
    // stopped server must look down to pooled clients, not keep serving them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    lock(&shared.state).connections += 1;
                    connections.spawn(Session::run(stream, shared.clone()));
                }
                // Failures such as EMFILE are transient; back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reaps finished connections so that the set does not grow for ever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
