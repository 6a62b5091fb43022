//! The doctor (docs/operations.md#doctor): `GET /v1/ops/doctor` checks every invariant the
//! engine relies on; `POST /v1/ops/doctor/repair` repairs what is safe to repair, journaled with
//! the operator as actor. `ops` only. A report names connections and outbox messages by id and
//! nothing else: no token, address or datum.

use chrono::{DateTime, Utc};
use engine::store::{DoctorCode, DoctorReport, DoctorSettings, DoctorSubject, Finding};
use poem_openapi::{Enum, Object, OpenApi, payload::Json};
use workflows::Workflows;

use crate::{
    ApiTags,
    models::Nullable,
    problem::{Problem, endpoint_response},
    security::{BearerAuth, OPS_ROLES},
};

/// What a violation's `sample` ids name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "DoctorSubject", rename_all = "snake_case")]
pub enum SubjectJson {
    /// Connection ids.
    Connection,
    /// Outbox message ids.
    OutboxMessage,
}

/// One violated invariant.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DoctorViolation", rename_all = "camelCase")]
pub struct ViolationJson {
    /// Stable code (`transfer_not_scheduled`, `journal_gap`, …; docs/operations.md#doctor).
    pub code: String,
    /// The invariant's violation, in one line.
    pub description: String,
    pub subject: SubjectJson,
    /// What the repair does; `null` when the violation is only reported.
    pub repair: Nullable<String>,
    /// How many connections (or messages) violated it when checked.
    pub count: u64,
    /// Up to 20 of their ids, smallest first.
    pub sample: Vec<String>,
    /// How many this call repaired (0 for a check).
    pub repaired: u64,
    /// How many violate it now.
    pub remaining: u64,
}

/// What the doctor found and, for a repair, what it repaired.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DoctorReport", rename_all = "camelCase")]
pub struct DoctorReportJson {
    pub checked_at: DateTime<Utc>,
    /// Whether this call repaired.
    pub repair: bool,
    /// No violation remains.
    pub clean: bool,
    /// Every invariant checked, by code.
    pub checked: Vec<String>,
    /// The violated ones only (empty when every invariant holds).
    pub violations: Vec<ViolationJson>,
}

impl From<Finding> for ViolationJson {
    fn from(f: Finding) -> Self {
        Self {
            code: f.code.as_str().to_owned(),
            description: f.code.description().to_owned(),
            subject: match f.code.subject() {
                DoctorSubject::Connection => SubjectJson::Connection,
                DoctorSubject::OutboxMessage => SubjectJson::OutboxMessage,
            },
            repair: f.code.repair().map(str::to_owned).into(),
            count: f.count,
            sample: f.sample,
            repaired: f.repaired,
            remaining: f.remaining,
        }
    }
}

impl From<DoctorReport> for DoctorReportJson {
    fn from(report: DoctorReport) -> Self {
        Self {
            checked_at: report.checked_at,
            repair: report.repair,
            clean: report.is_clean(),
            checked: DoctorCode::ALL
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            violations: report.findings.into_iter().map(Into::into).collect(),
        }
    }
}

endpoint_response! {
    pub enum DoctorResponse {
        /// Every invariant checked; `violations` lists the ones that do not hold.
        Ok(Json<DoctorReportJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` runs the doctor (`forbidden`).
        Forbidden = 403,
    }
}

endpoint_response! {
    pub enum RepairResponse {
        /// What was found, what was repaired, and what remains.
        Ok(Json<DoctorReportJson>) = 200,
    }
    problems {
        /// Missing or invalid bearer token (`unauthenticated`).
        Unauthorized = 401,
        /// Only `ops` repairs (`forbidden`).
        Forbidden = 403,
        /// The request body exceeds the configured limit (`payload_too_large`).
        PayloadTooLarge = 413,
    }
}

pub struct DoctorApi {
    pub workflows: Workflows,
}

impl DoctorApi {
    /// The bounds of this process's own configuration.
    fn settings(&self) -> DoctorSettings {
        self.workflows.settings().doctor()
    }
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Operations")]
impl DoctorApi {
    /// Check every invariant the engine relies on and list the violations
    /// (docs/operations.md#doctor). Reads only.
    #[oai(path = "/ops/doctor", method = "get", operation_id = "runDoctor")]
    async fn doctor(&self, BearerAuth(caller): BearerAuth) -> DoctorResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let store = self.workflows.store();
            let now = store.clock().now();
            Ok::<_, Problem>(store.doctor(now, &self.settings()).await?)
        };
        match result.await {
            Ok(report) => DoctorResponse::Ok(Json(report.into())),
            Err(problem) => problem.into(),
        }
    }

    /// Repair what is safe to repair (each fix a compare-and-set, journaled with the caller as
    /// actor), then check again. Idempotent: a second call finds nothing more to repair.
    #[oai(
        path = "/ops/doctor/repair",
        method = "post",
        operation_id = "repairDoctor"
    )]
    async fn repair(&self, BearerAuth(caller): BearerAuth) -> RepairResponse {
        let result = async {
            caller.require(OPS_ROLES)?;
            let store = self.workflows.store();
            Ok::<_, Problem>(
                store
                    .doctor_repair(&caller.actor(), &self.settings())
                    .await?,
            )
        };
        match result.await {
            Ok(report) => RepairResponse::Ok(Json(report.into())),
            Err(problem) => problem.into(),
        }
    }
}
