//! An operator's reason for an action: free text for the journal and the pauses table, checked
//! before anything is written (docs/actions.md#actions). It must say why in a few words and
//! must not carry what never reaches storage shown to people: a token, a secret, an address.

use std::fmt;

/// Longest reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A word this long made only of the characters tokens are written with (base64, base64url,
/// hex, JWT dots) and mixing letters with digits is taken for a credential.
const TOKEN_LIKE_CHARS: usize = 24;

/// A checked reason: 1 to [`MAX_REASON_CHARS`] characters once trimmed, one line of printable
/// text, no word that looks like a token or an email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

/// Why a reason was refused (its `Display` is safe to show: it never repeats the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    #[error("a reason is required")]
    Empty,
    #[error("the reason is longer than {MAX_REASON_CHARS} characters")]
    TooLong,
    #[error("the reason must be one line of printable text")]
    ControlCharacters,
    #[error("the reason looks like it contains a token or a secret; describe it instead")]
    LooksSecret,
    #[error("the reason contains an email address; name the person another way")]
    EmailAddress,
}

impl Reason {
    pub fn parse(text: &str) -> Result<Self, InvalidReason> {
        let text = text.trim();
        if text.is_empty() {
            return Err(InvalidReason::Empty);
        }
        if text.chars().count() > MAX_REASON_CHARS {
            return Err(InvalidReason::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(InvalidReason::ControlCharacters);
        }
        for word in text.split(|c: char| c.is_whitespace() || "\"'()[]{}<>,;".contains(c)) {
            if looks_like_email(word) {
                return Err(InvalidReason::EmailAddress);
            }
            if looks_like_token(word) {
                return Err(InvalidReason::LooksSecret);
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn looks_like_email(word: &str) -> bool {
    word.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.ends_with('.')
    })
}

/// Long runs of token characters mixing letters and digits: bearer tokens, JWTs, API keys,
/// hex secrets. A UUID (a connection id, say) is an identifier, not a secret.
fn looks_like_token(word: &str) -> bool {
    let word = word.trim_end_matches(['.', ':', '!', '?']);
    word.len() >= TOKEN_LIKE_CHARS
        && uuid::Uuid::try_parse(word).is_err()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+/=~".contains(c))
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reasons_are_kept_trimmed() {
        for text in [
            "partner outage, ticket INC-4211",
            "user asked to stop transfers until their device is replaced",
            "replaying 0190f5e2-7b1c-7d3e-8f00-0123456789ab after the 12:00 incident",
            "  padded  ",
        ] {
            assert_eq!(Reason::parse(text).unwrap().as_str(), text.trim());
        }
        let longest = "a".repeat(MAX_REASON_CHARS);
        assert!(Reason::parse(&longest).is_ok());
    }

    #[test]
    fn bad_reasons_are_refused_without_echoing_them() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlMTIz";
        let cases = [
            ("", InvalidReason::Empty),
            ("   ", InvalidReason::Empty),
            (&"a".repeat(MAX_REASON_CHARS + 1), InvalidReason::TooLong),
            ("two\nlines", InvalidReason::ControlCharacters),
            ("nul\0here", InvalidReason::ControlCharacters),
            (&format!("token was {jwt}"), InvalidReason::LooksSecret),
            (
                "key sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                InvalidReason::LooksSecret,
            ),
            ("asked by pat@example.org", InvalidReason::EmailAddress),
            ("(dr.who@clinic.example)", InvalidReason::EmailAddress),
        ];
        for (text, expected) in cases {
            let err = Reason::parse(text).unwrap_err();
            assert_eq!(err, expected, "{text:?}");
            assert!(text.trim().is_empty() || !err.to_string().contains(text.trim()));
        }
    }
}
