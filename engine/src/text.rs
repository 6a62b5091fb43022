//! Text from outside (partner records, partner error bodies, callback parameters) made safe to
//! store on both backends and to show operators (docs/transfers.md#storable-text).
//!
//! PostgreSQL's `text` cannot hold U+0000, and its JSON functions refuse the `\u0000` escape;
//! SQLite takes both. A partner that sends a NUL inside a string must not make a commit fail on
//! one backend only, so every string column written from outside content goes through
//! [`storable`], and JSON documents through [`storable_json`] (where the escape is replaced
//! before it reaches the database).

use std::borrow::Cow;

/// `s` with every U+0000 replaced by U+FFFD (the replacement character).
pub fn storable(s: &str) -> String {
    storable_cow(s).into_owned()
}

fn storable_cow(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The JSON text `json` with every `\u0000` escape replaced by `\ufffd`. Serialised JSON cannot
/// hold a raw NUL (serde escapes it), so the escape is the only form to look for; a backslash
/// that is itself escaped (`\\u0000`, the six characters as text) is left alone.
pub fn storable_json(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if let Some(after) = escape.strip_prefix("\\u0000") {
            out.push_str("\\ufffd");
            rest = after;
        } else {
            // Any other escape is two characters (`\\`, `\"`, `\n`, or the start of `\uXXXX`,
            // whose hex digits hold no backslash): copy both so `\\` never starts a new one.
            let len = escape.chars().nth(1).map_or(1, |c| 1 + c.len_utf8());
            out.push_str(&escape[..len]);
            rest = &escape[len..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Replaces U+0000 in every string of a JSON value, keys included.
pub fn storable_value(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => *s = storable(s),
        Value::Array(items) => items.iter_mut().for_each(storable_value),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
                map.extend(entries.into_iter().map(|(k, v)| (storable(&k), v)));
            }
            map.values_mut().for_each(storable_value);
        }
        _ => {}
    }
}

/// At most `max` characters of `s`, cut at a character boundary, made [`storable`], with
/// control characters other than tab and newline replaced (text shown to operators).
pub fn bounded(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| match c {
            '\t' | '\n' => c,
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_in_text_and_in_json_escapes() {
        assert_eq!(storable("ab\0cd"), "ab\u{FFFD}cd");
        assert_eq!(storable("plain"), "plain");
        let json = serde_json::to_string(&serde_json::json!({"t": "ab\0cd"})).unwrap();
        assert_eq!(json, r#"{"t":"ab\u0000cd"}"#);
        let fixed = storable_json(&json);
        assert_eq!(fixed, r#"{"t":"ab\ufffdcd"}"#);
        let back: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(back["t"], "ab\u{FFFD}cd");
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_text_not_an_escape() {
        // The string `\u0000` written as text: JSON `"\\u0000"`.
        let json = serde_json::to_string(&serde_json::json!(["\\u0000", "x\0"])).unwrap();
        assert_eq!(json, r#"["\\u0000","x\u0000"]"#);
        let fixed = storable_json(&json);
        let back: Vec<String> = serde_json::from_str(&fixed).unwrap();
        assert_eq!(back, vec!["\\u0000".to_owned(), "x\u{FFFD}".to_owned()]);
    }

    #[test]
    fn bounded_cuts_by_characters_and_hides_control_characters() {
        assert_eq!(bounded("ééé", 2), "éé");
        assert_eq!(bounded("a\u{1b}[31m\0b\n", 10), "a\u{FFFD}[31m\u{FFFD}b\n");
    }
}
