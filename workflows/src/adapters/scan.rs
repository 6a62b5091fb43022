//! A list response read as it arrives (docs/partner-data.md#reading-a-response): the envelope
//! `{"records": [ … ], "nextCursor": …}` is checked strictly, each element of `records` is cut
//! out as bytes and handed over on its own, before the next arrives. Nothing inside a record
//! is interpreted here: a record with a number out of range, invalid UTF-8 or a lone surrogate
//! is still one well-delimited element, which its own parse then refuses, while the others are
//! read. The whole body is never held: only the record being cut out (at most
//! `max_record_bytes`) and the envelope's other members (small; at most [`MAX_MEMBER_BYTES`]).
//!
//! The scanner only needs to know where strings are (a `"` preceded by an unescaped `\` does
//! not end one) and how deep brackets nest; UTF-8 continuation bytes never equal `"`, `\`,
//! brackets or commas, so it works on bytes.

use serde_json::{Map, Value};

/// Largest envelope member other than `records` (a cursor, a count); a bigger one makes the
/// body malformed.
pub(crate) const MAX_MEMBER_BYTES: usize = 64 * 1024;

/// One element of `records`: its bytes, or that it was larger than allowed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Element<'a> {
    Bytes(&'a [u8]),
    /// Longer than `max_record_bytes`: only its first bytes were kept.
    TooLarge {
        prefix: &'a [u8],
        len: usize,
    },
}

/// What is wrong with the envelope, in our words; never body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,` in the object: a key.
    NextKey,
    Key {
        escaped: bool,
    },
    Colon,
    Value,
    /// A member other than `records`.
    Member,
    /// After `[` of `records`: an element or `]`.
    FirstElement,
    /// After `,` in `records`: an element.
    NextElement,
    Element,
    AfterElement,
    AfterValue,
    Done,
}

/// Incremental state of one JSON value being cut out.
#[derive(Debug, Default)]
struct Cut {
    bytes: Vec<u8>,
    len: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    scalar: bool,
}

enum Step {
    More,
    /// The value ended with this byte.
    Ended,
    /// The value ended before this byte (a number or literal meets its delimiter).
    EndedBefore,
}

impl Cut {
    fn start(&mut self, b: u8) {
        *self = Cut::default();
        match b {
            b'{' | b'[' => self.depth = 1,
            b'"' => self.in_string = true,
            _ => self.scalar = true,
        }
    }

    fn push(&mut self, b: u8, keep: usize) -> Step {
        let step = if self.len == 0 {
            Step::More
        } else if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            if !self.in_string && self.depth == 0 {
                Step::Ended
            } else {
                Step::More
            }
        } else if self.scalar {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}') {
                return Step::EndedBefore;
            }
            Step::More
        } else {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            if self.depth == 0 {
                Step::Ended
            } else {
                Step::More
            }
        };
        self.len += 1;
        if self.len <= keep {
            self.bytes.push(b);
        }
        step
    }

    fn fits(&self, keep: usize) -> bool {
        self.len <= keep
    }
}

/// The scanner of one list response.
#[derive(Debug)]
pub(crate) struct ListScanner {
    state: State,
    key: Vec<u8>,
    cut: Cut,
    max_record_bytes: usize,
    seen_records: bool,
    members: Map<String, Value>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl ListScanner {
    pub(crate) fn new(max_record_bytes: usize) -> Self {
        Self {
            state: State::Start,
            key: Vec::new(),
            cut: Cut::default(),
            max_record_bytes,
            seen_records: false,
            members: Map::new(),
        }
    }

    /// Reads the next bytes of the body, calling `element` for each record completed in them.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        element: &mut dyn FnMut(Element<'_>),
    ) -> Result<(), Malformed> {
        for &b in bytes {
            self.byte(b, element)?;
        }
        Ok(())
    }

    fn byte(&mut self, b: u8, element: &mut dyn FnMut(Element<'_>)) -> Result<(), Malformed> {
        use State::*;
        match self.state {
            Start if is_space(b) || b == 0xEF || b == 0xBB || b == 0xBF => {}
            Start if b == b'{' => self.state = FirstKey,
            Start => return Err(Malformed("not a JSON object")),
            FirstKey | NextKey | Colon | FirstElement | NextElement | AfterElement | AfterValue
            | Done
                if is_space(b) => {}
            FirstKey if b == b'}' => self.state = Done,
            FirstKey | NextKey if b == b'"' => {
                self.key.clear();
                self.state = Key { escaped: false };
            }
            FirstKey | NextKey => return Err(Malformed("a member name missing")),
            Key { escaped } => {
                if !escaped && b == b'"' {
                    self.state = Colon;
                } else {
                    if self.key.len() < 256 {
                        self.key.push(b);
                    }
                    self.state = Key {
                        escaped: !escaped && b == b'\\',
                    };
                }
            }
            Colon if b == b':' => self.state = Value,
            Colon => return Err(Malformed("':' missing after a member name")),
            Value if is_space(b) => {}
            Value if self.key == b"records" => {
                if self.seen_records {
                    return Err(Malformed("two records members"));
                }
                if b != b'[' {
                    return Err(Malformed("records is not an array"));
                }
                self.seen_records = true;
                self.state = FirstElement;
            }
            Value => {
                self.cut.start(b);
                self.state = Member;
                self.member_byte(b)?;
            }
            Member => self.member_byte(b)?,
            FirstElement if b == b']' => self.state = AfterValue,
            FirstElement | NextElement => {
                if b == b']' || b == b',' {
                    return Err(Malformed("a record missing between commas"));
                }
                self.cut.start(b);
                self.state = Element;
                self.element_byte(b, element)?;
            }
            Element => self.element_byte(b, element)?,
            AfterElement if b == b',' => self.state = NextElement,
            AfterElement if b == b']' => self.state = AfterValue,
            AfterElement => return Err(Malformed("',' missing between records")),
            AfterValue if b == b',' => self.state = NextKey,
            AfterValue if b == b'}' => self.state = Done,
            AfterValue => return Err(Malformed("',' missing between members")),
            Done => return Err(Malformed("data after the object")),
        }
        Ok(())
    }

    fn element_byte(
        &mut self,
        b: u8,
        element: &mut dyn FnMut(Element<'_>),
    ) -> Result<(), Malformed> {
        let keep = self.max_record_bytes;
        let step = self.cut.push(b, keep);
        let mut emit = |cut: &Cut| {
            if cut.fits(keep) {
                element(Element::Bytes(&cut.bytes));
            } else {
                element(Element::TooLarge {
                    prefix: &cut.bytes,
                    len: cut.len,
                });
            }
        };
        match step {
            Step::More => {}
            Step::Ended => {
                emit(&self.cut);
                self.state = State::AfterElement;
            }
            Step::EndedBefore => {
                emit(&self.cut);
                self.state = State::AfterElement;
                return self.byte(b, element);
            }
        }
        Ok(())
    }

    fn member_byte(&mut self, b: u8) -> Result<(), Malformed> {
        match self.cut.push(b, MAX_MEMBER_BYTES) {
            Step::More => Ok(()),
            Step::Ended => {
                self.keep_member()?;
                self.state = State::AfterValue;
                Ok(())
            }
            Step::EndedBefore => {
                self.keep_member()?;
                self.state = State::AfterValue;
                self.byte(b, &mut |_| {})
            }
        }
    }

    /// A member other than `records` must be small and readable: it may be the cursor that
    /// says whether more pages follow, and guessing would lose them.
    fn keep_member(&mut self) -> Result<(), Malformed> {
        if !self.cut.fits(MAX_MEMBER_BYTES) {
            return Err(Malformed("a member other than records over 64 KiB"));
        }
        let key: Result<String, _> =
            serde_json::from_slice(&[b"\"", &self.key[..], b"\""].concat());
        let value: Result<Value, _> = serde_json::from_slice(&self.cut.bytes);
        match (key, value) {
            (Ok(key), Ok(value)) => {
                self.members.insert(key, value);
                Ok(())
            }
            _ => Err(Malformed("an unreadable member other than records")),
        }
    }

    /// The body ended: the envelope's members other than `records`, or why the body was not a complete list response.
    pub(crate) fn finish(self) -> Result<Map<String, Value>, Malformed> {
        match self.state {
            State::Done if self.seen_records => Ok(self.members),
            State::Done => Err(Malformed("no records member")),
            State::Start => Err(Malformed("an empty body")),
            _ => Err(Malformed("the body ends inside the object (cut off)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(
        body: &[u8],
        chunk: usize,
        max: usize,
    ) -> Result<(Vec<String>, Map<String, Value>), Malformed> {
        let mut scanner = ListScanner::new(max);
        let mut out = Vec::new();
        for part in body.chunks(chunk.max(1)) {
            scanner.feed(part, &mut |e| {
                out.push(match e {
                    Element::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    Element::TooLarge { len, .. } => format!("<too large: {len}>"),
                })
            })?;
        }
        Ok((out, scanner.finish()?))
    }

    #[test]
    fn elements_are_cut_out_whatever_the_chunking() {
        let body = br#" {"a": 1, "records": [ {"x":"a,]}\"b"}, 12 ,"s\"", [1,[2]], true,1e309],
            "nextCursor" : "c2" , "n": null, "t": 7}"#;
        for chunk in [1, 2, 3, 7, 1000] {
            let (elements, members) = scan(body, chunk, 1024).unwrap();
            assert_eq!(
                elements,
                [
                    r#"{"x":"a,]}\"b"}"#,
                    "12",
                    r#""s\"""#,
                    "[1,[2]]",
                    "true",
                    "1e309"
                ],
                "chunk {chunk}"
            );
            assert_eq!(members["nextCursor"], "c2", "chunk {chunk}");
            assert_eq!(members["a"], 1);
            assert_eq!(members["t"], 7);
            assert!(members["n"].is_null());
        }
    }

    #[test]
    fn bad_records_stay_elements_of_their_own() {
        // Invalid UTF-8 and a lone surrogate inside one record do not disturb the others.
        let body = b"{\"records\":[{\"v\":\"\xff\xfe\"},{\"v\":\"\\ud83d\"},{\"v\":1}]}";
        let (elements, _) = scan(body, 5, 1024).unwrap();
        assert_eq!(elements.len(), 3);
        assert_eq!(elements[2], r#"{"v":1}"#);
    }

    #[test]
    fn oversized_records_are_reported_not_kept() {
        let body = br#"{"records":[{"v":"0123456789"},{"v":1}]}"#;
        let (elements, _) = scan(body, 4, 10).unwrap();
        assert_eq!(elements, ["<too large: 18>", r#"{"v":1}"#]);
    }

    #[test]
    fn broken_envelopes_are_malformed() {
        for (body, want) in [
            (&b""[..], "an empty body"),
            (b"[]", "not a JSON object"),
            (b"{}", "no records member"),
            (br#"{"records": {}}"#, "records is not an array"),
            (
                br#"{"records": [1, 2"#,
                "the body ends inside the object (cut off)",
            ),
            (br#"{"records": [1,]}"#, "a record missing between commas"),
            (br#"{"records": [] "x": 1}"#, "',' missing between members"),
            (br#"{"records": []} x"#, "data after the object"),
            (br#"{"records": [], "records": []}"#, "two records members"),
        ] {
            assert_eq!(scan(body, 3, 64).unwrap_err(), Malformed(want), "{body:?}");
        }
        assert!(scan(br#"{"records": [], "n": 12}"#, 1, 64).is_ok());
    }
}
