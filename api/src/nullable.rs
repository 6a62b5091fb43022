//! [`Nullable`]: how the API sends a field that may have no value.
//!
//! The rule, for every response model: each field is always present, and a field without a
//! value is `null`. The document says exactly that: such a field is `required` and `nullable`
//! (see docs/api.md#nullability). poem-openapi's `Option<T>` would document the field as
//! optional and non-nullable while sending `null`, which is what clients and fuzzers tripped
//! over.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

/// A value or `null`, always present in the JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nullable<T>(pub Option<T>);

impl<T> From<Option<T>> for Nullable<T> {
    fn from(value: Option<T>) -> Self {
        Self(value)
    }
}

impl<T> Nullable<T> {
    pub fn as_ref(&self) -> Option<&T> {
        self.0.as_ref()
    }

    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(schema) => MetaSchemaRef::Inline(Box::new(MetaSchema {
                nullable: true,
                ..*schema
            })),
            // OpenAPI 3.0 ignores keywords beside a `$ref`, so a nullable reference is an
            // `allOf` of one.
            reference @ MetaSchemaRef::Reference(_) => {
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    all_of: vec![reference],
                    nullable: true,
                    ..MetaSchema::ANY
                }))
            }
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<Value> {
        Some(
            self.0
                .as_ref()
                .and_then(ToJSON::to_json)
                .unwrap_or(Value::Null),
        )
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None | Some(Value::Null) => Ok(Self(None)),
            value => T::parse_from_json(value)
                .map(|value| Self(Some(value)))
                .map_err(ParseError::propagate),
        }
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::Object;

    use super::*;

    #[derive(Debug, Clone, Object)]
    struct Inner {
        n: i64,
    }

    #[derive(Debug, Clone, Object)]
    struct Outer {
        text: Nullable<String>,
        inner: Nullable<Inner>,
    }

    #[test]
    fn absent_values_are_sent_as_null_and_documented_so() {
        let json = Outer {
            text: None.into(),
            inner: None.into(),
        }
        .to_json()
        .unwrap();
        assert_eq!(json, serde_json::json!({"text": null, "inner": null}));
        let json = Outer {
            text: Some("x".to_owned()).into(),
            inner: Some(Inner { n: 1 }).into(),
        }
        .to_json()
        .unwrap();
        assert_eq!(json, serde_json::json!({"text": "x", "inner": {"n": 1}}));

        let MetaSchemaRef::Inline(text) = Nullable::<String>::schema_ref() else {
            panic!("inline schema expected");
        };
        assert!(text.nullable && text.ty == "string");
        let MetaSchemaRef::Inline(inner) = Nullable::<Inner>::schema_ref() else {
            panic!("inline schema expected");
        };
        assert!(inner.nullable);
        assert!(matches!(
            inner.all_of.as_slice(),
            [MetaSchemaRef::Reference(_)]
        ));
        const { assert!(<Nullable<String> as Type>::IS_REQUIRED) };
    }

    #[test]
    fn parses_null_and_missing_as_none() {
        assert_eq!(Nullable::<String>::parse_from_json(None).unwrap().0, None);
        assert_eq!(
            Nullable::<String>::parse_from_json(Some(Value::Null))
                .unwrap()
                .0,
            None
        );
        assert_eq!(
            Nullable::<String>::parse_from_json(Some("a".into()))
                .unwrap()
                .0,
            Some("a".to_owned())
        );
        assert!(Nullable::<i64>::parse_from_json(Some("a".into())).is_err());
    }
}
