//! The one reader of OAuth-style error bodies (`{"error": "..."}`), for the token and revocation
//! endpoints and for partners' data APIs, which answer in the same shape.

/// Longest error code accepted as well-formed; a longer one counts as no code at all. Real codes
/// are a few dozen characters; the bound keeps a hostile body out of journals and alerts.
pub const MAX_OAUTH_ERROR_CODE_LEN: usize = 128;

/// The `error` member of an RFC 6749 §5.2 error body, if `body` is a JSON object with one and the
/// code is well-formed: 1 to [`MAX_OAUTH_ERROR_CODE_LEN`] characters from
/// `%x20-21 / %x23-5B / %x5D-7E` (printable ASCII without `"` and `\`). Anything else (not JSON,
/// no `error`, a non-string, bad characters, too long) is `None`, so a caller can never mistake an
/// HTML error page that mentions `invalid_grant` for an OAuth answer (see
/// docs/oauth.md#token-endpoint-errors).
///
/// `error_description` and `error_uri` are ignored: servers make them generic, and they may echo
/// our input (a code, a token).
pub fn oauth_error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    // A derived struct also deserializes from a JSON array (`["invalid_grant"]`), which is no
    // error body at all; whitespace then `{` leaves only an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let code = serde_json::from_slice::<ErrorBody>(body).ok()?.error;
    let well_formed = !code.is_empty()
        && code.len() <= MAX_OAUTH_ERROR_CODE_LEN
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E));
    well_formed.then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_well_formed_codes_only() {
        let code = |body: &str| oauth_error_code(body.as_bytes());
        assert_eq!(
            code(r#"{"error":"invalid_grant","error_description":"x"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(code(r#" {"error":"a b!~"} "#).as_deref(), Some("a b!~"));
        let longest = "a".repeat(MAX_OAUTH_ERROR_CODE_LEN);
        assert_eq!(
            code(&format!(r#"{{"error":"{longest}"}}"#)),
            Some(longest.clone())
        );
        for body in [
            format!(r#"{{"error":"{longest}a"}}"#),
            r#"{"error":""}"#.into(),
            r#"{"error":"bad\"quote"}"#.into(),
            r#"{"error":"back\\slash"}"#.into(),
            r#"{"error":"tab\there"}"#.into(),
            r#"{"error":"caf\u00e9"}"#.into(),
            r#"{"error":42}"#.into(),
            r#"{"error":null}"#.into(),
            r#"["invalid_grant"]"#.into(),
            r#"{"error":"invalid_grant""#.into(),
            "<html>invalid_grant</html>".into(),
            String::new(),
        ] {
            assert_eq!(code(&body), None, "{body}");
        }
    }
}
