//! Applies [`Faults`](crate::Faults) around an endpoint of one class: latency, maintenance and
//! "down" 503s, forced failures, 429s, and malformed bodies.

use std::time::Duration;

use poem::{
    Endpoint, IntoResponse, Request, Response, Result,
    http::{StatusCode, header},
};

use super::html;
use crate::{
    Sandbox,
    faults::{Decision, EndpointClass, Malformed},
};

/// Wraps `inner`; admin routes are never wrapped, so faults can always be cleared.
pub(crate) struct Guard<E> {
    sb: Sandbox,
    class: EndpointClass,
    inner: E,
}

impl<E> Guard<E> {
    pub fn new(sb: &Sandbox, class: EndpointClass, inner: E) -> Self {
        Guard {
            sb: sb.clone(),
            class,
            inner,
        }
    }
}

impl<E: Endpoint> Endpoint for Guard<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let _in_flight = (self.class == EndpointClass::Data)
            .then(|| InFlight::enter(&self.sb, &req))
            .flatten();
        let now = self.sb.now();
        let roll: f64 = rand::random();
        let (decision, latency_ms, retry_after) = self.sb.faults().update(|f| {
            (
                f.decide(self.class, now, roll),
                f.latency_ms,
                f.retry_after_secs,
            )
        });
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
        let injected = match decision {
            Decision::Pass(malformed) => {
                let resp = match self.inner.call(req).await {
                    Ok(r) => r.into_response(),
                    Err(e) => e.into_response(),
                };
                let Some(kind) = malformed else {
                    return Ok(resp);
                };
                corrupt(resp, kind).await
            }
            Decision::Unavailable => unavailable(StatusCode::SERVICE_UNAVAILABLE, retry_after),
            Decision::RateLimited => unavailable(StatusCode::TOO_MANY_REQUESTS, retry_after),
            Decision::Fail(status) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let reason = status.canonical_reason().unwrap_or("Error");
                html(
                    status,
                    format!("<html><body><h1>{status} {reason}</h1></body></html>"),
                )
            }
        };
        tracing::debug!(class = ?self.class, ?decision, "sandbox fault injected");
        self.sb.store().stats.faults_injected += 1;
        Ok(injected)
    }
}

/// One data-API request in flight with its `Authorization` header, counted from arrival until
/// dropped (response sent, or the request abandoned), so overlapping requests of one token are
/// seen: [`crate::Stats::max_data_requests_in_flight_per_token`].
struct InFlight {
    sb: Sandbox,
    key: String,
}

impl InFlight {
    fn enter(sb: &Sandbox, req: &Request) -> Option<Self> {
        let key = req.header(header::AUTHORIZATION.as_str())?.to_owned();
        let mut store = sb.store();
        let count = store.in_flight.entry(key.clone()).or_insert(0);
        *count += 1;
        let count = *count;
        let max = &mut store.stats.max_data_requests_in_flight_per_token;
        *max = (*max).max(count);
        Some(InFlight {
            sb: sb.clone(),
            key,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut store = self.sb.store();
        if let Some(count) = store.in_flight.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                store.in_flight.remove(&self.key);
            }
        }
    }
}

/// 503 or 429 with `Retry-After`, and a non-JSON body as proxies and gateways send.
fn unavailable(status: StatusCode, retry_after: u64) -> Response {
    let reason = status.canonical_reason().unwrap_or("Unavailable");
    let mut resp = html(
        status,
        format!("<html><body><h1>{reason}</h1></body></html>"),
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        retry_after
            .to_string()
            .parse()
            .expect("digits are a valid header value"),
    );
    resp
}

/// Keeps status and headers (so it still claims JSON) but breaks the body.
async fn corrupt(resp: Response, kind: Malformed) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = body.into_vec().await.unwrap_or_default();
    let broken = match kind {
        // Any proper prefix of a JSON object or array is invalid JSON.
        Malformed::Truncated => bytes[..bytes.len() / 2].to_vec(),
        Malformed::Html => b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
    };
    let mut resp = Response::from_parts(parts, broken.into());
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}
