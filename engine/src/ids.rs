//! Typed identifiers that parse instead of validate.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("connection id must be a UUID")]
    ConnectionId,
    #[error("user id must be 1–64 characters of letters, digits, '-' or '_'")]
    UserId,
    #[error(
        "partner name must be 1–32 characters of lowercase letters, digits and '-', starting with a letter or digit"
    )]
    PartnerName,
}

/// A connection's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(Uuid);

impl ConnectionId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for ConnectionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ConnectionId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 36 {
            return Err(IdError::ConnectionId);
        }
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::ConnectionId)
    }
}

fn valid_chars(s: &str, max: usize, ok: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(ok)
}

/// A Tidepool user id (opaque to us, but bounded and URL-safe).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if valid_chars(s, 64, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::UserId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A configured partner's name (`sandbox-cgm`, `dexcom`): appears in URLs and rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartnerName(String);

impl PartnerName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let first_ok = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if first_ok
            && valid_chars(s, 32, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            })
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::PartnerName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PartnerName {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PartnerName> for String {
    fn from(value: PartnerName) -> Self {
        value.0
    }
}

impl fmt::Display for PartnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ids() {
        let id = ConnectionId::new();
        assert_eq!(id.to_string().parse::<ConnectionId>().unwrap(), id);
        assert!("not-a-uuid".parse::<ConnectionId>().is_err());
        assert!(UserId::parse("user_42-A").is_ok());
        for bad in ["", "a b", "x/y", &"u".repeat(65)] {
            assert_eq!(UserId::parse(bad), Err(IdError::UserId));
        }
        assert!(PartnerName::parse("sandbox-cgm").is_ok());
        for bad in ["", "-x", "Dexcom", "a_b", &"p".repeat(33)] {
            assert_eq!(PartnerName::parse(bad), Err(IdError::PartnerName));
        }
    }
}
