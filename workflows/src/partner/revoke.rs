//! The RFC 7009 revocation request, built by hand.
//!
//! Why not `oauth2`'s `revoke_token`: it refuses any non-https revocation URL
//! (`ConfigurationError::InsecureUrl`), which rules out the local sandbox partner and loopback
//! tests, and it accepts only exactly 200. So the request is built here, with the same client
//! authentication `oauth2` uses at the token endpoint (RFC 6749 §2.3.1), and sent through the
//! same recording client so classification stays in one place.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use engine::secret::SecretString;
use oauth2::{
    HttpRequest,
    http::{self, HeaderValue, Method, header},
};
use url::{Url, form_urlencoded};

use super::config::{ClientAuth, PartnerConfig};

/// `POST token=…&token_type_hint=refresh_token` with client authentication in the
/// `Authorization` header (`client_secret_basic`) or in the body (`client_secret_post`); never
/// in the URL.
pub(crate) fn revocation_request(
    config: &PartnerConfig,
    url: &Url,
    refresh_token: &SecretString,
) -> Result<HttpRequest, http::Error> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", refresh_token.expose())
        .append_pair("token_type_hint", "refresh_token");
    let mut builder = http::Request::builder()
        .method(Method::POST)
        .uri(url.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    match config.client_auth {
        ClientAuth::ClientSecretBasic => {
            builder = builder.header(header::AUTHORIZATION, basic_auth(config)?);
        }
        ClientAuth::ClientSecretPost => {
            form.append_pair("client_id", &config.client_id)
                .append_pair("client_secret", config.client_secret.expose());
        }
    }
    builder.body(form.finish().into_bytes())
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded *before* Basic encoding (unlike plain
/// HTTP Basic), exactly as `oauth2` does for the token endpoint.
fn basic_auth(config: &PartnerConfig) -> Result<HeaderValue, http::Error> {
    let id: String = form_urlencoded::byte_serialize(config.client_id.as_bytes()).collect();
    let secret: String =
        form_urlencoded::byte_serialize(config.client_secret.expose().as_bytes()).collect();
    let mut value = HeaderValue::try_from(format!(
        "Basic {}",
        STANDARD.encode(format!("{id}:{secret}"))
    ))?;
    value.set_sensitive(true);
    Ok(value)
}
