//! Message decoding helpers for tests: headers and bodies of a [`ReceivedMail`].

use mail_parser::{HeaderName, HeaderValue, Message, MessageParser, PartType};

use super::ReceivedMail;

impl ReceivedMail {
    /// A header's decoded value (RFC 2047 encoded words decoded, unfolded), by
    /// case-insensitive name; the first one if repeated. Addresses read `Name <a@b>, c@d`;
    /// `Message-ID`, `In-Reply-To` and `References` keep their angle brackets.
    pub fn header(&self, name: &str) -> Option<String> {
        let message = self.parsed()?;
        let name = HeaderName::parse(name.to_owned())?;
        // Unfolding removes the line breaks only: the whitespace after them stays.
        let unfold = |text: &str| {
            text.split(['\r', '\n'])
                .collect::<String>()
                .trim()
                .to_owned()
        };
        Some(match message.header(name.clone())? {
            HeaderValue::Text(text) => unfold(text),
            HeaderValue::TextList(list) => list.join(", "),
            HeaderValue::Address(address) => {
                let addrs = address
                    .iter()
                    .map(|addr| match (addr.name(), addr.address()) {
                        (Some(name), Some(address)) => format!("{name} <{address}>"),
                        (name, address) => address.or(name).unwrap_or_default().to_owned(),
                    });
                addrs.collect::<Vec<_>>().join(", ")
            }
            _ => unfold(message.header_raw(name)?),
        })
    }

    /// The decoded `text/plain` body (of a multipart/alternative, its plain part), with `\n`
    /// line ends, so that it compares equal to the text the sender rendered.
    pub fn text_body(&self) -> Option<String> {
        self.body(false)
    }

    /// The decoded `text/html` body, with `\n` line ends.
    pub fn html_body(&self) -> Option<String> {
        self.body(true)
    }

    fn body(&self, html: bool) -> Option<String> {
        let message = self.parsed()?;
        let part = |i| match html {
            true => message.html_part(i),
            false => message.text_part(i),
        };
        // mail-parser lists an HTML part among the text bodies when there is no plain one
        // (and the reverse); only a part of the asked type counts.
        (0..)
            .map_while(part)
            .find_map(|part| match (&part.body, html) {
                (PartType::Html(body), true) | (PartType::Text(body), false) => {
                    let mut body = body.replace("\r\n", "\n");
                    // A body running to the end of the data ends with the line end of SMTP's
                    // final "\r\n.\r\n", which lettre always adds: not the sender's text.
                    if part.offset_end as usize == self.data.len() && body.ends_with('\n') {
                        body.pop();
                    }
                    Some(body)
                }
                _ => None,
            })
    }

    fn parsed(&self) -> Option<Message<'_>> {
        // Besides the MIME and address headers, everything parses as unstructured text:
        // RFC 2047 decoded (mail-parser's default keeps unregistered headers raw), and
        // identifiers keep the angle brackets that the sender generated.
        MessageParser::new()
            .with_mime_headers()
            .with_address_headers()
            .default_header_text()
            .parse(self.data.as_bytes())
    }
}
