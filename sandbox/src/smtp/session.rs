//! The per-connection SMTP protocol: commands, AUTH, the mail transaction and DATA.

use std::{io, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::{
    EHLO_FIRST, MAX_LINE, MAX_MESSAGE_SIZE, MAX_RECIPIENTS, ReceivedMail, Refusal, SERVER_NAME,
    Shared, TOO_BIG,
};
use crate::lock;

/// Why a command ends early: a protocol error to reply, or an I/O failure ending the session.
enum Fail {
    Reply(&'static str),
    Io(io::Error),
}

impl From<io::Error> for Fail {
    fn from(error: io::Error) -> Self {
        Fail::Io(error)
    }
}

fn fail<T>(reply: &'static str) -> Result<T, Fail> {
    Err(Fail::Reply(reply))
}

fn check(ok: bool, reply: &'static str) -> Result<(), Fail> {
    if ok { Ok(()) } else { fail(reply) }
}

type Reply = Result<String, Fail>;

pub(super) struct Session {
    /// Replies go through `get_mut()`, unbuffered: a client waiting for one must not wait.
    stream: BufReader<TcpStream>,
    shared: Arc<Shared>,
    greeted: bool,
    user: Option<String>,
    from: Option<String>,
    rcpt: Vec<String>,
}

impl Session {
    pub(super) async fn run(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
        let mut session = Session {
            stream: BufReader::new(stream),
            shared,
            greeted: false,
            user: None,
            from: None,
            rcpt: Vec::new(),
        };
        session.send(&format!("220 {SERVER_NAME} ESMTP")).await?;
        loop {
            // Commands are handled strictly in order, which is all PIPELINING asks of a server.
            let reply = match session.read_line().await {
                Ok(line) if line.eq_ignore_ascii_case(b"QUIT") => {
                    session.send("221 2.0.0 Bye").await?;
                    return session.stream.get_mut().shutdown().await;
                }
                Ok(line) => session.command(&String::from_utf8_lossy(&line)).await,
                Err(fail) => Err(fail),
            };
            match reply {
                Ok(reply) => session.send(&reply).await?,
                Err(Fail::Reply(reply)) => session.send(reply).await?,
                Err(Fail::Io(error)) => return Err(error),
            }
        }
    }

    async fn command(&mut self, line: &str) -> Reply {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim();
        match verb.to_ascii_uppercase().as_str() {
            verb @ ("EHLO" | "HELO") => {
                check(!arg.is_empty(), "501 5.5.4 Syntax: EHLO domain")?;
                // A new greeting starts over (RFC 5321 4.1.4); the authentication stays.
                self.greeted = true;
                self.reset();
                Ok(match verb {
                    "EHLO" => format!(
                        "250-{SERVER_NAME} Hello {arg}\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                         250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n\
                         250 SIZE {MAX_MESSAGE_SIZE}"
                    ),
                    _ => format!("250 {SERVER_NAME}"),
                })
            }
            "AUTH" => self.auth(arg).await,
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" => self.data(arg).await,
            "RSET" => {
                self.reset();
                Ok("250 2.0.0 Ok".to_owned())
            }
            "NOOP" => Ok("250 2.0.0 Ok".to_owned()),
            "VRFY" | "EXPN" | "HELP" | "STARTTLS" | "BDAT" => {
                fail("502 5.5.1 Command not implemented")
            }
            _ => fail("500 5.5.2 Command unrecognized"),
        }
    }

    async fn send(&mut self, reply: &str) -> io::Result<()> {
        let reply = format!("{reply}\r\n");
        self.stream.get_mut().write_all(reply.as_bytes()).await
    }

    /// Reads a line without its line end. The rest of a line longer than `MAX_LINE` is
    /// discarded as it arrives, so that a hostile client cannot grow memory. EOF is an error,
    /// ending the session.
    async fn read_line(&mut self) -> Result<Vec<u8>, Fail> {
        let (mut line, mut too_long) = (Vec::new(), false);
        loop {
            let available = self.stream.fill_buf().await?;
            if available.is_empty() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            let end = available.iter().position(|&b| b == b'\n');
            let used = end.map_or(available.len(), |end| end + 1);
            too_long |= line.len() + used > MAX_LINE;
            if !too_long {
                line.extend_from_slice(&available[..used]);
            }
            self.stream.consume(used);
            if end.is_some() {
                check(!too_long, "500 5.5.2 Line too long")?;
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.rcpt.clear();
    }

    async fn auth(&mut self, arg: &str) -> Reply {
        check(self.greeted, EHLO_FIRST)?;
        check(self.user.is_none(), "503 5.5.1 Already authenticated")?;
        check(self.from.is_none(), "503 5.5.1 AUTH in a mail transaction")?;
        let (mechanism, initial) = match arg.split_once(' ') {
            Some((mechanism, initial)) => (mechanism, Some(initial.trim().to_owned())),
            None => (arg, None),
        };
        let (user, password) = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(response) => response,
                    None => self.challenge("").await?,
                };
                // RFC 4616: authzid NUL authcid NUL password; a test server ignores the authzid.
                match decode(&response)?.splitn(3, '\0').collect::<Vec<_>>()[..] {
                    [_, user, password] => (user.to_owned(), password.to_owned()),
                    _ => return fail("501 5.5.2 Malformed PLAIN response"),
                }
            }
            "LOGIN" => {
                // Some clients send the username as an initial response, as with PLAIN.
                let user = match initial {
                    Some(user) => user,
                    None => self.challenge("VXNlcm5hbWU6").await?, // "Username:"
                };
                let user = decode(&user)?;
                (user, decode(&self.challenge("UGFzc3dvcmQ6").await?)?) // "Password:"
            }
            _ => return fail("504 5.5.4 Unrecognized authentication mechanism"),
        };
        let expected = lock(&self.shared.state).credentials.clone();
        let valid = expected.is_none_or(|(u, p)| u == user && p == password);
        check(valid, "535 5.7.8 Authentication credentials invalid")?;
        self.user = Some(user);
        Ok("235 2.7.0 Authentication successful".to_owned())
    }

    /// Sends a 334 challenge and reads the client's answer (still base64).
    async fn challenge(&mut self, prompt: &str) -> Reply {
        self.send(&format!("334 {prompt}")).await?;
        let line = self.read_line().await?;
        check(line != b"*", "501 5.7.0 Authentication cancelled")?;
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn mail(&mut self, arg: &str) -> Reply {
        check(self.greeted, EHLO_FIRST)?;
        check(self.from.is_none(), "503 5.5.1 Nested MAIL command")?;
        let auth_required = lock(&self.shared.state).credentials.is_some();
        let authenticated = self.user.is_some() || !auth_required;
        check(authenticated, "530 5.7.0 Authentication required")?;
        let Some((path, params)) = parse_path(arg, "FROM:") else {
            return fail("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let (key, value) = (key.to_ascii_uppercase(), value.to_ascii_uppercase());
            match (key.as_str(), value.as_str()) {
                ("SIZE", size) => match size.parse::<usize>() {
                    Ok(size) => check(size <= MAX_MESSAGE_SIZE, TOO_BIG)?,
                    Err(_) => return fail("501 5.5.4 Bad SIZE parameter"),
                },
                ("BODY", "7BIT" | "8BITMIME") | ("SMTPUTF8", "") => {}
                _ => return fail("555 5.5.4 Unsupported MAIL parameter"),
            }
        }
        self.from = Some(path);
        Ok("250 2.1.0 Ok".to_owned())
    }

    fn rcpt(&mut self, arg: &str) -> Reply {
        check(self.from.is_some(), "503 5.5.1 Need MAIL command")?;
        let Some((path, params)) = parse_path(arg, "TO:") else {
            return fail("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        check(!path.is_empty(), "501 5.1.3 Bad recipient address")?;
        check(params.is_empty(), "555 5.5.4 Unsupported RCPT parameter")?;
        let room = self.rcpt.len() < MAX_RECIPIENTS;
        check(room, "452 4.5.3 Too many recipients")?;
        self.rcpt.push(path);
        Ok("250 2.1.5 Ok".to_owned())
    }

    async fn data(&mut self, arg: &str) -> Reply {
        check(arg.is_empty(), "501 5.5.4 Syntax: DATA")?;
        check(self.from.is_some(), "503 5.5.1 Need MAIL command")?;
        check(!self.rcpt.is_empty(), "503 5.5.1 Need RCPT command")?;
        self.send("354 End data with <CR><LF>.<CR><LF>").await?;
        let (mut data, mut error) = (Vec::new(), None);
        // The whole message is read even after an error: replying early would make the rest
        // of it run as commands.
        loop {
            let line = match self.read_line().await {
                Ok(line) if line == b"." => break,
                Ok(line) => line,
                Err(Fail::Reply(reply)) => {
                    error = Some(reply);
                    continue;
                }
                Err(fail) => return Err(fail),
            };
            // RFC 5321 4.5.2: the client doubled every leading dot.
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + line.len() + 2 > MAX_MESSAGE_SIZE {
                error = Some(TOO_BIG);
                data = Vec::new();
            } else if error.is_none() {
                data.extend_from_slice(line);
                data.extend_from_slice(b"\r\n");
            }
        }
        let mail = ReceivedMail {
            mail_from: self.from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt),
            data: String::from_utf8_lossy(&data).into_owned(),
            authenticated_as: self.user.clone(),
        };
        if let Some(reply) = error {
            return fail(reply);
        }
        let delivered = lock(&self.shared.state).deliver(mail);
        match delivered {
            Ok(accepted) => {
                self.shared.accepted.send_replace(accepted);
                Ok(format!("250 2.0.0 Ok: queued as {accepted:08X}"))
            }
            Err(Refusal::Permanent) => fail("550 5.7.1 Message refused"),
            Err(Refusal::Temporary) => fail("451 4.3.0 Temporary failure, try again later"),
        }
    }
}

/// Parses `FROM:<path> params` (`prefix` included, case-insensitive) into the path without
/// brackets and the parameters. Tolerates a space after the colon, as some clients send one.
fn parse_path(arg: &str, prefix: &str) -> Option<(String, String)> {
    if !arg.get(..prefix.len())?.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start().strip_prefix('<')?;
    let (path, params) = rest.split_once('>')?;
    if path.contains(|c: char| c.is_whitespace() || c == '<') {
        return None;
    }
    Some((path.to_owned(), params.trim().to_owned()))
}

fn decode(base64: &str) -> Result<String, Fail> {
    // RFC 4954: "=" stands for an empty response.
    let base64 = if base64 == "=" { "" } else { base64 };
    let bytes = BASE64.decode(base64.trim()).ok();
    bytes
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(Fail::Reply("501 5.5.2 Invalid base64"))
}
