//! The HTTP API: JSON over poem-openapi, documented at `/openapi.json` and `/docs`.
//!
//! Errors become HTTP here only: each endpoint has its own response enum (declared with
//! `problem::endpoint_response!`) with a documented status per variant, and every error body is
//! `application/problem+json` with a stable `code`, including the ones poem itself would answer
//! in plain text (unknown routes, wrong methods, malformed bodies, oversized bodies).
//!
//! # Layout
//! - [`auth`]: JWT verification (`JwtKeys`, `Role`, `Claims`).
//! - `security.rs`: the bearer security scheme and who may do what.
//! - `problem.rs`: problem details, error mapping, `endpoint_response!`.
//! - `models.rs`: the JSON types and their conversions from the engine's; `nullable.rs`: how a
//!   field without a value is sent (`null`, always present) and documented.
//! - `params.rs`: path parameters, documented as the server parses them.
//! - `meta.rs`: `/healthz`, `/readyz`. `partners.rs`: `/v1/partners`.
//! - `connections.rs`: `/v1/users/{userId}/connections`, `/v1/connections/{id}[/…]`.
//! - `invites.rs`: `/v1/clinics/{clinicId}/invites[/…]` (clinicians' invitations).
//! - `runs.rs`: `/v1/connections/{id}/runs` (what each step run did).
//! - `data.rs`: `/v1/users/{userId}/data` (transferred data, Tidepool model, keyset-paged).
//! - `oauth.rs`: `/v1/oauth/{partner}/callback` (browser-facing, no bearer token).
//! - `ops.rs`: refresh, alerts, revocations (operators); `outbox.rs`: the outbox and webhook
//!   deliveries (operators); `doctor.rs`: the doctor's check and repair (operators).
//! - `actions.rs`: `/v1/ops/…` replay, pause/resume, fail, clear an error; the pauses (operators).
//! - `bulk.rs`: `/v1/ops/bulk/{action}`: those actions on filtered connections, dry run first.
//! - `fleet.rs`: `/v1/ops/connections` (filtered, with stuck reasons), `/v1/ops/summary`
//!   (operators); `fleet_models.rs`: their JSON.
//! - `middleware.rs`: body limit, panics as problems, security headers, the access log
//!   (method and path only: query strings carry OAuth codes and `state`s).
//! - `routing.rs`: the `Allow` header of 405s, paths that are not UTF-8.
//! - [`console`]: the ops console, HTML pages at `/ops` (not part of the OpenAPI document).
//!
//! The contract (error model, nullability, roles, the schemathesis check) is described in
//! docs/api.md.

mod actions;
pub mod auth;
mod bulk;
mod cli_json;
mod connections;
pub mod console;
mod coverage;
mod data;
mod doctor;
mod fleet;
mod fleet_models;
mod invites;
mod meta;
mod middleware;
mod models;
mod nullable;
mod oauth;
mod ops;
mod outbox;
mod params;
mod partners;
pub mod problem;
mod refetch;
mod routing;
mod runs;
mod security;

pub use bulk::{plan_json as bulk_plan_json, result_json as bulk_result_json};
pub use cli_json::{
    acted_json, connection_json, coverage_json, doctor_json, journal_json, paused_json,
    pauses_json, replay_json, resumed_json, runs_json,
};
pub use fleet::{
    decode_cursor as decode_fleet_cursor, encode_cursor as encode_fleet_cursor,
    page_json as fleet_page_json, summary_json as fleet_summary_json,
};
pub use middleware::AccessLog;
pub use routing::LossyPaths;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt as _, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use url::Url;
use workflows::Workflows;

use crate::bulk::BulkApi;
use crate::fleet::FleetApi;
use crate::{
    actions::ActionsApi, connections::ConnectionsApi, data::DataApi, doctor::DoctorApi,
    invites::InvitesApi, meta::MetaApi, oauth::OAuthApi, ops::OpsApi, outbox::OutboxApi,
    partners::PartnersApi, runs::RunsApi,
};
use crate::{coverage::CoverageApi, refetch::RefetchApi};

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where browsers go after the OAuth callback (Tidepool Web), with `outcome`, `partner`,
    /// `connectionId` and `code` appended; `None` shows a small HTML page instead.
    pub return_url: Option<Url>,
    /// Largest accepted request body, in bytes (413 `payload_too_large` beyond).
    pub max_body_bytes: usize,
    /// The public base URL, listed as the server in the OpenAPI document.
    pub server_url: String,
}

#[derive(Tags)]
enum ApiTags {
    /// Liveness and readiness.
    Health,
    /// The partners users can connect to.
    Partners,
    /// Users' connections to partners.
    Connections,
    /// Users' transferred data, in the Tidepool data model.
    Data,
    /// Clinicians' invitations of patients to connect.
    Invitations,
    /// The OAuth redirect from partners (browsers).
    #[oai(rename = "OAuth")]
    OAuth,
    /// Operators' tools.
    Operations,
}

/// All routes: `/v1/…`, `/healthz`, `/readyz`, `/openapi.json` and `/docs` (Swagger UI).
pub fn routes(
    workflows: Workflows,
    jwt: auth::JwtKeys,
    settings: ApiSettings,
) -> impl Endpoint<Output = Response> {
    let apis = (
        MetaApi {
            store: workflows.store().clone(),
        },
        PartnersApi {
            workflows: workflows.clone(),
        },
        ConnectionsApi {
            workflows: workflows.clone(),
        },
        DataApi {
            workflows: workflows.clone(),
        },
        InvitesApi {
            workflows: workflows.clone(),
        },
        OAuthApi {
            workflows: workflows.clone(),
            return_url: settings.return_url.clone(),
        },
        OpsApi {
            workflows: workflows.clone(),
        },
        DoctorApi {
            workflows: workflows.clone(),
        },
        FleetApi {
            workflows: workflows.clone(),
        },
        RunsApi {
            workflows: workflows.clone(),
        },
        CoverageApi {
            workflows: workflows.clone(),
        },
        RefetchApi {
            workflows: workflows.clone(),
        },
        ActionsApi {
            workflows: workflows.clone(),
        },
        BulkApi {
            workflows: workflows.clone(),
        },
        OutboxApi { workflows },
    );
    let service = OpenApiService::new(apis, "Tributary", env!("CARGO_PKG_VERSION"))
        .description(
            "Connects Tidepool users to device partners' clouds over OAuth 2.0. Errors are \
             `application/problem+json` with a stable `code`.",
        )
        .server(settings.server_url.clone());
    let mut document: serde_json::Value = serde_json::from_str(&service.spec()).unwrap_or_default();
    // poem-openapi does not document `deny_unknown_fields`; the request body refuses unknown
    // fields (400 `invalid_body`), so the document says so.
    for schema in [
        "NewConnection",
        "NewInvitation",
        "ActionReason",
        "BulkRequest",
        "BulkFilter",
        "RefetchRequest",
    ] {
        document["components"]["schemas"][schema]["additionalProperties"] = false.into();
    }
    let mut allowed = routing::AllowedMethods::from_openapi(&document);
    allowed.add("/openapi.json", ["get"]);
    let allowed = Arc::new(allowed);
    let document = document.to_string();
    let spec = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(document.clone())
    });
    let docs = service.swagger_ui();
    let max_body_bytes = settings.max_body_bytes;
    Route::new()
        .at("/openapi.json", poem::get(spec))
        .nest("/docs", docs)
        .nest("/", service)
        .data(jwt)
        .around(move |endpoint, req| routing::method_not_allowed(endpoint, req, allowed.clone()))
        .around(move |endpoint, req| middleware::limit_body(endpoint, req, max_body_bytes))
        .with(middleware::catch_panic())
        .catch_all_error(problem::catch_all)
        .with(LossyPaths)
        .with(middleware::security_headers())
}
