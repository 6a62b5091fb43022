//! Bulk actions (docs/actions.md#bulk-actions): one of the connection actions on every
//! connection a [`ConnectionFilter`] matches, in two calls.
//!
//! - The dry run ([`Store::plan_bulk`]) stores the ids the filter matches now as the plan's
//!   members (one `INSERT … SELECT`, at most [`BulkSettings::max_connections`]; beyond that
//!   nothing is stored), and answers their count, a sample and a random confirmation token.
//!   Only the token's sha256 is stored: the plaintext exists in the dry run's answer alone.
//! - The confirmed call ([`Store::execute_bulk`]) carries the token and acts on the stored
//!   members only, so a connection that starts matching after the dry run is never touched,
//!   and one that stopped matching is still acted on (it was shown) through the single action,
//!   which decides on its row as always (and may refuse). Each member's outcome is written as
//!   it is reached, so a call that stopped half-way is continued by the next one and no member
//!   is acted on twice; the finished plan keeps its result, which later calls answer again.

mod execute;

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ActionSettings, ConnectionAction, Reason};
use crate::{
    model::{Actor, Connection},
    store::{
        Store, StoreError,
        connections::{detached, to_domain},
        doctor::checks::Binder,
        entities::connection,
        ops::{ConnectionFilter, StuckFilter, StuckSettings},
        rows::CONNECTION_COLUMNS,
    },
};

/// Connections a dry run's answer shows.
pub const BULK_SAMPLE: usize = 20;

/// How long a plan executed is kept (its result answered again) after it expired.
const KEPT_AFTER_EXPIRY: TimeDelta = TimeDelta::days(1);

/// The actions that have a bulk form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkAction {
    Pause,
    Resume,
    Fail,
    ClearError,
    Replay,
}

impl BulkAction {
    pub const ALL: [BulkAction; 5] = [
        BulkAction::Pause,
        BulkAction::Resume,
        BulkAction::Fail,
        BulkAction::ClearError,
        BulkAction::Replay,
    ];

    /// The name in paths, the CLI and the plan's row.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Pause => "pause",
            BulkAction::Resume => "resume",
            BulkAction::Fail => "fail",
            BulkAction::ClearError => "clear-error",
            BulkAction::Replay => "replay",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The single action each member goes through; `None` for replay.
    fn single(self) -> Option<ConnectionAction> {
        match self {
            BulkAction::Pause => Some(ConnectionAction::Pause),
            BulkAction::Resume => Some(ConnectionAction::Resume),
            BulkAction::Fail => Some(ConnectionAction::Fail),
            BulkAction::ClearError => Some(ConnectionAction::ClearError),
            BulkAction::Replay => None,
        }
    }
}

impl std::fmt::Display for BulkAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bounds of bulk actions.
#[derive(Debug, Clone)]
pub struct BulkSettings {
    /// Most connections one plan may hold: a filter matching more is refused (`bulk_too_many`)
    /// and nothing is stored.
    pub max_connections: u64,
    /// How long a confirmation token is valid after its dry run.
    pub ttl: Duration,
    /// The stuck reasons' thresholds, for filters on them.
    pub stuck: StuckSettings,
    /// The single actions' bounds (replay's).
    pub actions: ActionSettings,
}

impl Default for BulkSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            ttl: Duration::from_secs(15 * 60),
            stuck: StuckSettings::default(),
            actions: ActionSettings::default(),
        }
    }
}

/// A dry run's answer.
#[derive(Debug, Clone)]
pub struct BulkPlan {
    pub action: BulkAction,
    /// Connections the plan holds: the confirmed call acts on these and no others.
    pub count: u64,
    /// The first [`BULK_SAMPLE`] of them, smallest id first.
    pub sample: Vec<Connection>,
    /// The confirmation token the real call must carry. Shown once: only its sha256 is kept.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// What a confirmed bulk action did, member by member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// Members the action changed (journaled).
    pub acted: u64,
    /// Members already so: nothing written.
    pub already: u64,
    /// Members the single action refused (a step in flight, a state it does not apply to, …).
    pub refused: u64,
    /// Members deleted since the dry run.
    pub gone: u64,
    /// `refused` by the single action's code.
    pub refusals: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("no bulk plan has this confirmation token (unknown, or purged after it expired)")]
    UnknownPlan,
    #[error("this confirmation token expired at {0}; nothing was done: make a new dry run")]
    Expired(DateTime<Utc>),
    #[error("this confirmation token is for a bulk {planned}, not a bulk {asked}")]
    ActionMismatch {
        planned: BulkAction,
        asked: BulkAction,
    },
    #[error("more than {max} connections match; narrow the filter (nothing was stored)")]
    TooMany { max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BulkError {
    /// The stable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            BulkError::UnknownPlan => "bulk_plan_unknown",
            BulkError::Expired(_) => "bulk_plan_expired",
            BulkError::ActionMismatch { .. } => "bulk_plan_action_mismatch",
            BulkError::TooMany { .. } => "bulk_too_many",
            BulkError::Store(_) => "internal",
        }
    }
}

impl From<sea_orm::DbErr> for BulkError {
    fn from(err: sea_orm::DbErr) -> Self {
        BulkError::Store(err.into())
    }
}

/// The plan id of a confirmation token: its sha256, hex.
fn plan_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 random bytes, base64url without padding.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64url(&bytes)
}

fn base64url(bytes: &[u8]) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The filter as the plan's row keeps it (for operators reading the table).
fn filter_json(filter: &ConnectionFilter) -> String {
    let (stuck, reason) = match filter.stuck {
        Some(StuckFilter::Any) => (Some(true), None),
        Some(StuckFilter::No) => (Some(false), None),
        Some(StuckFilter::Reason(r)) => (None, Some(r.as_str())),
        None => (None, None),
    };
    json!({
        "state": filter.state.map(|s| s.as_str()),
        "partner": filter.partner.as_ref().map(|p| p.as_str()),
        "user": filter.user.as_ref().map(|u| u.as_str()),
        "paused": filter.paused,
        "error": filter.error,
        "stuck": stuck,
        "reason": reason,
    })
    .to_string()
}

impl Store {
    /// The dry run of bulk `action` on the connections `filter` matches now: stores them as a
    /// plan under a new confirmation token, valid for `settings.ttl`. More than
    /// `settings.max_connections` matching is [`BulkError::TooMany`], and nothing is stored.
    pub async fn plan_bulk(
        &self,
        action: BulkAction,
        filter: &ConnectionFilter,
        reason: &Reason,
        actor: &Actor,
        settings: &BulkSettings,
    ) -> Result<BulkPlan, BulkError> {
        let now = self.clock.now();
        self.purge_bulk_plans(now).await?;
        let bounds = self.stuck_bounds(now, &settings.stuck).await?;
        let token = new_token();
        let id = plan_id(&token);
        let expires_at = now + TimeDelta::from_std(settings.ttl).unwrap_or(TimeDelta::minutes(15));
        let backend = self.db.get_database_backend();

        let mut b = Binder::default();
        let plan = format!(
            "INSERT INTO bulk_plans (id, action, filter, reason, actor, count, created_at, \
             expires_at) VALUES ({}, {}, {}, {}, {}, 0, {}, {})",
            b.bind(id.clone()),
            b.bind(action.as_str()),
            b.bind(filter_json(filter)),
            b.bind(reason.as_str()),
            b.bind(actor.as_str()),
            b.bind(now),
            b.bind(expires_at),
        );
        let plan = b.statement(backend, plan);

        // Values are bound in the order they appear in the text.
        let mut b = Binder::default();
        let plan_param = b.bind(id.clone());
        let condition = filter.condition(&mut b, &bounds);
        let members = format!(
            "INSERT INTO bulk_plan_members (plan_id, connection_id) \
             SELECT {plan_param}, connections.id FROM connections WHERE {condition} \
             ORDER BY connections.id LIMIT {}",
            settings.max_connections.saturating_add(1),
        );
        let members = b.statement(backend, members);

        let mut b = Binder::default();
        let sample = format!(
            "SELECT {} FROM connections WHERE connections.id IN \
             (SELECT connection_id FROM bulk_plan_members WHERE plan_id = {}) \
             ORDER BY connections.id LIMIT {BULK_SAMPLE}",
            qualified_columns(),
            b.bind(id.clone()),
        );
        let sample = b.statement(backend, sample);

        let db = self.db.clone();
        let max = settings.max_connections;
        let stored = detached(async move {
            let txn = db.begin().await?;
            txn.execute_raw(plan).await?;
            let count = txn.execute_raw(members).await?.rows_affected();
            if count > max {
                txn.rollback().await?;
                return Ok(None);
            }
            let rows = txn.query_all_raw(sample).await?;
            let mut b = Binder::default();
            let sql = format!(
                "UPDATE bulk_plans SET count = {} WHERE id = {}",
                b.bind(i64::try_from(count).unwrap_or(i64::MAX)),
                b.bind(id)
            );
            txn.execute_raw(b.statement(backend, sql)).await?;
            txn.commit().await?;
            let mut sample = Vec::with_capacity(rows.len());
            for row in &rows {
                sample.push(to_domain(connection::Model::from_query_result(row, "")?)?);
            }
            Ok(Some((count, sample)))
        })
        .await?;
        let Some((count, sample)) = stored else {
            return Err(BulkError::TooMany { max });
        };
        tracing::info!(
            action = action.as_str(),
            count,
            actor = actor.as_str(),
            "bulk plan stored"
        );
        Ok(BulkPlan {
            action,
            count,
            sample,
            token,
            expires_at,
        })
    }

    /// Deletes the plans that can no longer be confirmed: expired ones never executed, and
    /// executed ones a day after they expired (until then their result is answered again).
    /// Returns how many.
    pub async fn purge_bulk_plans(&self, now: DateTime<Utc>) -> crate::store::Result<u64> {
        let backend = self.db.get_database_backend();
        let expired = |b: &mut Binder| {
            format!(
                "(executed_at IS NULL AND expires_at < {}) OR expires_at < {}",
                b.bind(now),
                b.bind(now - KEPT_AFTER_EXPIRY)
            )
        };
        let mut b = Binder::default();
        let members = format!(
            "DELETE FROM bulk_plan_members WHERE plan_id IN \
             (SELECT id FROM bulk_plans WHERE {})",
            expired(&mut b)
        );
        let members = b.statement(backend, members);
        let mut b = Binder::default();
        let plans = format!("DELETE FROM bulk_plans WHERE {}", expired(&mut b));
        let plans = b.statement(backend, plans);
        let db = self.db.clone();
        detached(async move {
            let txn = db.begin().await?;
            txn.execute_raw(members).await?;
            let purged = txn.execute_raw(plans).await?.rows_affected();
            txn.commit().await?;
            Ok(purged)
        })
        .await
    }
}

/// Every column of `connections`, qualified with the table's name.
fn qualified_columns() -> String {
    CONNECTION_COLUMNS
        .split(", ")
        .map(|c| format!("connections.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
