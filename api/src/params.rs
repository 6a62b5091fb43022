//! Path parameters, declared in the document as exactly what the server accepts.
//!
//! Both are taken as text and parsed by the handler after the caller's role is checked (see
//! [`crate::security`]), so a caller who may not use a route learns nothing from the ids it
//! tries, and a malformed id is the same documented 400 on every route (`invalid_connection_id`,
//! `invalid_user_id`). Their schemas carry the rule, so clients and fuzzers know it up front.

use std::{borrow::Cow, ops::Deref};

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseFromParameter, ParseResult, Type},
};

/// What `engine::ids::UserId::parse` accepts: 1 to 64 ASCII letters, digits, `-` or `_`.
pub const USER_ID_PATTERN: &str = "^[A-Za-z0-9_-]+$";
/// Longest user id `engine::ids::UserId::parse` accepts.
pub const USER_ID_MAX_LEN: usize = 64;

macro_rules! text_param {
    ($(#[$meta:meta])* $name:ident, $type_name:literal, $schema:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $type_name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(std::iter::once(self))
            }
        }

        impl ParseFromParameter for $name {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Ok(Self(value.to_owned()))
            }
        }
    };
}

text_param!(
    /// `{id}`: a connection id, a UUID (`0190f5e2-7b1c-7d3e-8f00-0123456789ab`).
    ConnectionIdParam,
    "string_connection_id",
    MetaSchema {
        example: Some("0190f5e2-7b1c-7d3e-8f00-0123456789ab".into()),
        ..MetaSchema::new_with_format("string", "uuid")
    }
);

text_param!(
    /// `{userId}`: a Tidepool user id.
    UserIdParam,
    "string_user_id",
    MetaSchema {
        pattern: Some(USER_ID_PATTERN.to_owned()),
        min_length: Some(1),
        max_length: Some(USER_ID_MAX_LEN),
        example: Some("alice".into()),
        ..MetaSchema::new("string")
    }
);

/// What `engine::invitation::valid_clinic_id` accepts.
pub const CLINIC_ID_PATTERN: &str = "^[A-Za-z0-9._-]+$";

text_param!(
    /// `{clinicId}`: a clinic id (a clinician token's `clinics` claim names it).
    ClinicIdParam,
    "string_clinic_id",
    MetaSchema {
        pattern: Some(CLINIC_ID_PATTERN.to_owned()),
        min_length: Some(1),
        max_length: Some(128),
        example: Some("c1".into()),
        ..MetaSchema::new("string")
    }
);

text_param!(
    /// `{invitationId}` or a message `{id}`: a UUID.
    UuidParam,
    "string_uuid",
    MetaSchema {
        example: Some("0190f5e2-7b1c-7d3e-8f00-0123456789ab".into()),
        ..MetaSchema::new_with_format("string", "uuid")
    }
);

#[cfg(test)]
mod tests {
    use engine::ids::UserId;

    use super::*;

    /// The pattern's character class, spelled out: `[A-Za-z0-9_-]`.
    fn matches_pattern(s: &str) -> bool {
        !s.is_empty()
            && s.chars().count() <= USER_ID_MAX_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn the_user_id_schema_is_what_the_parser_accepts() {
        assert_eq!(USER_ID_PATTERN, "^[A-Za-z0-9_-]+$");
        let long = "u".repeat(USER_ID_MAX_LEN);
        let too_long = "u".repeat(USER_ID_MAX_LEN + 1);
        for id in [
            "alice", "A-b_9", "-", "_", &long, &too_long, "", "a b", "x.y", "é", "a/b", "a%20b",
            "\u{fffd}", "ü",
        ] {
            assert_eq!(UserId::parse(id).is_ok(), matches_pattern(id), "{id:?}");
        }
    }
}
