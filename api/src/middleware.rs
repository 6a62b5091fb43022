//! What wraps every route: the request-body limit, the problem catch-all and response headers.

use std::{any::Any, sync::Arc};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    error::ReadBodyError,
    http::{HeaderValue, Method, header},
    middleware::{CatchPanic, SetHeader},
    web::headers::{ContentLength, HeaderMapExt},
};

use crate::problem::Problem;

/// Refuses bodies over `max` bytes with 413 `payload_too_large`: at once when `Content-Length`
/// says so, otherwise while reading (chunked bodies). Bodies are small JSON documents, so the
/// body is buffered here and handed on as bytes. `GET` and `HEAD` bodies have no meaning and
/// no route reads them, so they are never read here either (and never answer 413): the OAuth
/// callback, a `GET`, always answers with its page.
pub async fn limit_body<E: Endpoint>(
    endpoint: Arc<E>,
    mut req: Request,
    max: usize,
) -> poem::Result<Response> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return endpoint.call(req).await.map(IntoResponse::into_response);
    }
    if let Some(ContentLength(length)) = req.headers().typed_get::<ContentLength>()
        && usize::try_from(length).map_or(true, |length| length > max)
    {
        return Ok(Problem::payload_too_large(max).into_response());
    }
    match req.take_body().into_bytes_limit(max).await {
        Ok(bytes) => req.set_body(bytes),
        Err(ReadBodyError::PayloadTooLarge) => {
            return Ok(Problem::payload_too_large(max).into_response());
        }
        Err(err) => {
            return Ok(Problem::bad_request(
                "invalid_body",
                format!("the request body could not be read: {err}"),
            )
            .into_response());
        }
    }
    endpoint.call(req).await.map(IntoResponse::into_response)
}

/// A panicking handler answers a 500 problem (and the panic is logged), not a plain-text error.
pub fn catch_panic() -> CatchPanic<fn(Box<dyn Any + Send>) -> Response> {
    CatchPanic::new().with_handler(panic_response as fn(Box<dyn Any + Send>) -> Response)
}

fn panic_response(panic: Box<dyn Any + Send>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    Problem::internal(&format!("handler panicked: {message}")).into_response()
}

/// Headers on every response: API answers are personal data (never cached), and nothing links
/// out with a referrer (the callback URL carries an authorization code).
pub fn security_headers() -> SetHeader {
    SetHeader::new()
        .overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
        .overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )
        .overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        )
}

/// The access log: a span per request with method, path (never the query string: OAuth
/// redirects carry the authorization code, `state` and the PKCE challenge there) and peer, and
/// one `response` event with status and duration. Replaces `poem::middleware::Tracing`, which
/// records the whole URI. An error's message is not logged either (poem's parse errors can
/// quote a parameter's value); its status is.
#[derive(Debug, Default, Clone, Copy)]
pub struct AccessLog;

impl<E: Endpoint> poem::Middleware<E> for AccessLog {
    type Output = AccessLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AccessLogEndpoint { inner }
    }
}

/// The endpoint [`AccessLog`] wraps.
pub struct AccessLogEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for AccessLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.original_uri().path(),
            remote_addr = %req.remote_addr(),
        );
        async move {
            let started = std::time::Instant::now();
            let result = self.inner.call(req).await;
            let duration = started.elapsed();
            match result {
                Ok(response) => {
                    let response = response.into_response();
                    tracing::info!(status = %response.status(), ?duration, "response");
                    Ok(response)
                }
                Err(err) => {
                    tracing::info!(status = %err.status(), ?duration, "error");
                    Err(err)
                }
            }
        }
        .instrument(span)
        .await
    }
}
