//! `partner::oauth_error_code`, the crate's one reader of `{"error": "..."}` bodies (public so
//! the data adapters use it too).

use workflows::partner::{MAX_OAUTH_ERROR_CODE_LEN, oauth_error_code};

use super::mock::{Reply, exchange_with};

#[test]
fn the_shared_error_code_parser_applies_the_rfc_character_rule_and_a_length_bound() {
    assert_eq!(
        oauth_error_code(br#"{"error":"invalid_token","error_description":"expired"}"#).as_deref(),
        Some("invalid_token")
    );
    let longest = "x".repeat(MAX_OAUTH_ERROR_CODE_LEN);
    let body = |code: &str| format!(r#"{{"error":"{code}"}}"#).into_bytes();
    assert_eq!(oauth_error_code(&body(&longest)), Some(longest.clone()));
    assert_eq!(oauth_error_code(&body(&format!("{longest}x"))), None);
    for bad in [
        "",
        "quote\\\"",
        "tab\\t",
        "\\u00e9t\\u00e9",
        "back\\\\slash",
    ] {
        assert_eq!(oauth_error_code(&body(bad)), None, "{bad}");
    }
    assert_eq!(oauth_error_code(b"<html>invalid_grant</html>"), None);
    assert_eq!(oauth_error_code(br#"{"error":["invalid_grant"]}"#), None);
    assert_eq!(oauth_error_code(br#"["invalid_grant"]"#), None);
}

/// A JSON array is not an RFC 6749 §5.2 error body, so it cannot revoke a connection.
#[tokio::test]
async fn an_array_naming_invalid_grant_is_not_an_oauth_error() {
    let (result, _mock) = exchange_with(Reply::json(400, r#"["invalid_grant"]"#)).await;
    let error = result.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}
