//! RFC 9457 problem details: the one shape every error of the API takes.
//!
//! Errors become HTTP here and nowhere else. Each endpoint declares its own response enum with
//! [`endpoint_response!`], which adds the problem variants every endpoint can answer (400, 500)
//! to the ones the endpoint lists, wires poem-openapi's `bad_request_handler` so extractor
//! failures (bad path ids, malformed JSON, wrong content type, missing token) become problems of
//! that enum, and converts a [`Problem`] into the variant declared for its status.
//!
//! `code` is the stable, machine-readable part; `detail` is for people and may change. The
//! `type` is `urn:tributary:problem:<code>`, so a problem type always has one status and title.

use std::fmt;

use engine::StoreError;
use poem::{
    IntoResponse, Response,
    error::{MethodNotAllowedError, NotFoundError, ReadBodyError},
    http::{StatusCode, header},
};
use poem_openapi::{
    Object,
    error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    },
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::{ToJSON, Type},
};
use workflows::WorkflowError;

use crate::auth::AuthError;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// What the client is told about an internal error (the details go to the logs only).
const INTERNAL_DETAIL: &str = "an internal error occurred; it has been logged";

/// An RFC 9457 problem.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct Problem {
    /// `urn:tributary:problem:<code>`.
    pub r#type: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code, repeated for clients that only see the body.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Stable machine-readable error code (`not_found`, `invalid_transition`, …).
    pub code: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            r#type: format!("urn:tributary:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401 `unauthenticated`; deliberately says nothing about why (the logs do).
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn payload_too_large(max_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {max_bytes} bytes"),
        )
    }

    /// 500 `internal`: logs `error` and tells the client nothing more.
    pub fn internal(error: &dyn fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_DETAIL,
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem for an error raised by poem or poem-openapi (extractors, routing, bodies).
    pub fn from_error(err: &poem::Error) -> Self {
        if let Some(err) = err.downcast_ref::<AuthError>() {
            return Self::from(err);
        }
        if err.is::<AuthorizationError>() {
            return Self::unauthenticated();
        }
        if let Some(err) = err.downcast_ref::<ParsePathError>() {
            return Self::bad_request(
                "invalid_path",
                format!("invalid path parameter `{}`: {}", err.name, err.reason),
            );
        }
        if let Some(err) = err.downcast_ref::<ParseParamError>() {
            return Self::bad_request(
                "invalid_parameter",
                format!("invalid parameter `{}`: {}", err.name, err.reason),
            );
        }
        if let Some(err) = err.downcast_ref::<ParseRequestPayloadError>() {
            return Self::bad_request(
                "invalid_body",
                format!("the request body is not valid: {}", err.reason),
            );
        }
        if let Some(err) = err.downcast_ref::<ContentTypeError>() {
            return Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("{err}; send `Content-Type: application/json`"),
            );
        }
        if err.is::<NotFoundError>() {
            return Self::not_found("no such resource");
        }
        if err.is::<MethodNotAllowedError>() {
            return Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this resource",
            );
        }
        if let Some(ReadBodyError::PayloadTooLarge) = err.downcast_ref::<ReadBodyError>() {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            );
        }
        let status = err.status();
        if status.is_client_error() {
            let code = match status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "bad_request",
            };
            Self::new(status, code, err.to_string())
        } else {
            Self::internal(err)
        }
    }

    /// Replacement for a problem whose status the endpoint does not declare (a bug): client
    /// errors keep their code as a 400, anything else becomes an opaque 500.
    #[doc(hidden)]
    pub fn undeclared(self) -> Self {
        tracing::warn!(status = self.status, code = %self.code, "problem status not declared by the endpoint");
        if self.status_code().is_client_error() {
            Self {
                title: StatusCode::BAD_REQUEST
                    .canonical_reason()
                    .unwrap_or("Bad Request")
                    .to_owned(),
                status: 400,
                ..self
            }
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                INTERNAL_DETAIL,
            )
        }
    }
}

impl From<&AuthError> for Problem {
    fn from(err: &AuthError) -> Self {
        match err {
            AuthError::Forbidden { .. } => Problem::forbidden(err.to_string()),
            _ => Problem::unauthenticated(),
        }
    }
}

impl From<WorkflowError> for Problem {
    fn from(err: WorkflowError) -> Self {
        let code = err.code();
        match err {
            WorkflowError::NotFound => Problem::not_found("connection not found"),
            WorkflowError::UnknownPartner(partner) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                format!("partner `{partner}` is not configured"),
            ),
            WorkflowError::AlreadyActive => Problem::new(
                StatusCode::CONFLICT,
                code,
                "the connection is already active; disconnect it before connecting again",
            ),
            WorkflowError::InvalidTransition(t) => {
                Problem::new(StatusCode::CONFLICT, code, t.to_string())
            }
            WorkflowError::Conflict => Problem::new(
                StatusCode::CONFLICT,
                code,
                "the connection was changed concurrently; retry",
            ),
            err @ WorkflowError::NotTransferring(_) => {
                Problem::new(StatusCode::CONFLICT, code, err.to_string())
            }
            err @ WorkflowError::EmailNotConfigured => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, err.to_string())
            }
            err @ WorkflowError::InvitationClosed => {
                Problem::new(StatusCode::CONFLICT, code, err.to_string())
            }
            err @ WorkflowError::TooSoon { .. } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, code, err.to_string())
            }
            WorkflowError::Internal(message) => Problem::internal(&message),
            WorkflowError::Injected(point) => Problem::internal(&point.to_string()),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Problem::not_found("connection not found"),
            StoreError::InvalidTransition(t) => {
                Problem::new(StatusCode::CONFLICT, "invalid_transition", t.to_string())
            }
            err @ StoreError::NotTransferring(_) => {
                Problem::new(StatusCode::CONFLICT, "invalid_transition", err.to_string())
            }
            other => Problem::internal(&other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        ProblemJson(self).into_response()
    }
}

/// A [`Problem`] as an `application/problem+json` payload. A 401 carries
/// `WWW-Authenticate: Bearer` (RFC 6750 §3).
#[derive(Debug, Clone)]
pub struct ProblemJson(pub Problem);

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = PROBLEM_CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        let status = self.0.status_code();
        let body = self.0.to_json().unwrap_or_default().to_string();
        let mut response = Response::builder()
            .status(status)
            .content_type(PROBLEM_CONTENT_TYPE)
            .body(body);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
        }
        response
    }
}

/// The `bad_request_handler` of every endpoint response: extractor errors as problems.
pub fn bad_request<T: From<Problem>>(err: poem::Error) -> T {
    T::from(Problem::from_error(&err))
}

/// The route-level catch-all: unknown routes, wrong methods and anything else that escaped an
/// endpoint become problems instead of poem's plain-text errors.
pub async fn catch_all(err: poem::Error) -> Response {
    Problem::from_error(&err).into_response()
}

/// Declares one endpoint's response enum: its answered variants (`Name(Payload) = status`, or
/// `Name(Payload, #[oai(header = "…")] Type) = status` with a response header), the problem
/// variants it can answer besides the implied `BadRequest = 400` and `Internal = 500`
/// (`Name = status`), the bad-request handler and `From<Problem>`.
macro_rules! endpoint_response {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($ty:ty $(, #[$hmeta:meta] $hty:ty)*) = $status:tt, )*
        }
        problems {
            $( $(#[$pmeta:meta])* $pvariant:ident = $pstatus:tt, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(poem_openapi::ApiResponse)]
        #[oai(bad_request_handler = "crate::problem::bad_request")]
        // A response is built once per request and moved straight into the body writer: the
        // size of its largest variant costs nothing worth a box.
        #[allow(clippy::large_enum_variant)]
        $vis enum $name {
            $( $(#[$vmeta])* #[oai(status = $status)] $variant($ty $(, #[$hmeta] $hty)*), )*
            $( $(#[$pmeta])* #[oai(status = $pstatus)] $pvariant($crate::problem::ProblemJson), )*
            /// Malformed request: path parameter, query parameter or body
            /// (`invalid_path`, `invalid_user_id`, `invalid_connection_id`, `invalid_parameter`,
            /// `invalid_body`).
            #[oai(status = 400)]
            BadRequest($crate::problem::ProblemJson),
            /// Internal error (`internal`); details are logged, never returned.
            #[oai(status = 500)]
            Internal($crate::problem::ProblemJson),
        }

        impl From<$crate::problem::Problem> for $name {
            fn from(problem: $crate::problem::Problem) -> Self {
                use $crate::problem::ProblemJson;
                match problem.status {
                    $( $pstatus => Self::$pvariant(ProblemJson(problem)), )*
                    400 => Self::BadRequest(ProblemJson(problem)),
                    500 => Self::Internal(ProblemJson(problem)),
                    _ => Self::from(problem.undeclared()),
                }
            }
        }
    };
}

pub(crate) use endpoint_response;

#[cfg(test)]
mod tests {
    use engine::state::{EventKind, InvalidTransition, State};

    use super::*;

    #[test]
    fn problem_shape() {
        let p = Problem::not_found("connection not found");
        assert_eq!(p.r#type, "urn:tributary:problem:not_found");
        assert_eq!(p.title, "Not Found");
        assert_eq!(p.status, 404);
        let json = p.to_json().unwrap();
        assert_eq!(json["type"], "urn:tributary:problem:not_found");
        assert_eq!(json["code"], "not_found");
    }

    #[test]
    fn workflow_errors_map_to_statuses_and_codes() {
        let cases = [
            (WorkflowError::NotFound, 404, "not_found"),
            (
                WorkflowError::UnknownPartner("x".into()),
                422,
                "unknown_partner",
            ),
            (WorkflowError::AlreadyActive, 409, "already_active"),
            (
                WorkflowError::InvalidTransition(InvalidTransition {
                    from: Some(State::Revoked),
                    event: EventKind::Disconnect,
                }),
                409,
                "invalid_transition",
            ),
            (WorkflowError::Conflict, 409, "conflict"),
            (
                WorkflowError::Internal("db on fire".into()),
                500,
                "internal",
            ),
        ];
        for (err, status, code) in cases {
            let p = Problem::from(err);
            assert_eq!((p.status, p.code.as_str()), (status, code));
            assert!(!p.detail.contains("db on fire"));
        }
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let response = Problem::unauthenticated().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
    }

    #[test]
    fn undeclared_statuses_degrade_safely() {
        let p = Problem::new(StatusCode::IM_A_TEAPOT, "teapot", "short and stout").undeclared();
        assert_eq!((p.status, p.code.as_str()), (400, "teapot"));
        let p = Problem::new(StatusCode::BAD_GATEWAY, "upstream", "secret detail").undeclared();
        assert_eq!((p.status, p.code.as_str()), (500, "internal"));
        assert!(!p.detail.contains("secret"));
    }
}
