//! Liveness and readiness, for orchestrators and load balancers. Unauthenticated, outside `/v1`.

use engine::Store;
use poem_openapi::{Object, OpenApi, payload::Json};

use crate::{
    ApiTags,
    problem::{Problem, endpoint_response},
};

/// `{"status": "ok"}`.
#[derive(Debug, Clone, Object)]
pub struct Status {
    pub status: String,
}

impl Status {
    fn ok() -> Json<Self> {
        Json(Self {
            status: "ok".to_owned(),
        })
    }
}

endpoint_response! {
    pub enum HealthResponse {
        /// The process is up.
        Ok(Json<Status>) = 200,
    }
    problems {}
}

endpoint_response! {
    pub enum ReadyResponse {
        /// The database answers; the service can take traffic.
        Ready(Json<Status>) = 200,
    }
    problems {
        /// The database does not answer (`database_unavailable`).
        Unavailable = 503,
    }
}

pub struct MetaApi {
    pub store: Store,
}

#[OpenApi(tag = "ApiTags::Health")]
impl MetaApi {
    /// Liveness: the process answers.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(Status::ok())
    }

    /// Readiness: the database answers.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        match self.store.ping().await {
            Ok(()) => ReadyResponse::Ready(Status::ok()),
            Err(err) => {
                tracing::warn!(error = %err, "readiness check failed");
                Problem::new(
                    poem::http::StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database does not answer",
                )
                .into()
            }
        }
    }
}
