//! The confirmed call of a bulk action: the plan found by its token's hash, its members acted
//! on one by one through the single action, each outcome written as it is reached.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, QueryResult};

use super::{BulkAction, BulkError, BulkResult, BulkSettings, plan_id};
use crate::{
    ids::ConnectionId,
    model::Actor,
    store::{
        Store, StoreError,
        actions::{ActionError, Reason},
        doctor::checks::Binder,
    },
};

/// Members read per round.
const BATCH: u64 = 200;

/// What became of one member, as its row keeps it.
enum Outcome {
    Acted,
    Already,
    Refused(&'static str),
    Gone,
}

impl Outcome {
    fn text(&self) -> String {
        match self {
            Outcome::Acted => "acted".to_owned(),
            Outcome::Already => "already".to_owned(),
            Outcome::Refused(code) => format!("refused:{code}"),
            Outcome::Gone => "gone".to_owned(),
        }
    }

    /// The outcome of a single action's error; an error that is not the member's doing (the
    /// database failed) stops the call, and the next one continues from this member.
    fn of(err: ActionError) -> Result<Self, StoreError> {
        Ok(match err {
            ActionError::Refused(refusal) => Outcome::Refused(refusal.code()),
            ActionError::Store(StoreError::NotFound) => Outcome::Gone,
            ActionError::Store(StoreError::Conflict { .. }) => Outcome::Refused("conflict"),
            ActionError::Store(
                StoreError::InvalidTransition(_) | StoreError::NotTransferring(_),
            ) => Outcome::Refused("invalid_transition"),
            ActionError::Store(err) => return Err(err),
        })
    }
}

/// The plan's row, as far as the confirmed call needs it.
struct PlanRow {
    action: String,
    reason: String,
    expires_at: DateTime<Utc>,
    result: Option<String>,
}

impl Store {
    /// Runs the bulk action planned under `token` on the plan's members (see the module's
    /// rules). `reason`, when given, is journaled instead of the dry run's. Refused without
    /// writing: an unknown token, one for another action, an expired plan. A plan already
    /// executed answers its result again and does nothing.
    pub async fn execute_bulk(
        &self,
        token: &str,
        action: BulkAction,
        actor: &Actor,
        reason: Option<&Reason>,
        settings: &BulkSettings,
    ) -> Result<BulkResult, BulkError> {
        let id = plan_id(token);
        let plan = self.plan_row(&id).await?.ok_or(BulkError::UnknownPlan)?;
        let planned = BulkAction::parse(&plan.action)
            .ok_or_else(|| StoreError::Corrupt(format!("bulk action {:?}", plan.action)))?;
        if planned != action {
            return Err(BulkError::ActionMismatch {
                planned,
                asked: action,
            });
        }
        if let Some(result) = &plan.result {
            return parse_result(result);
        }
        if plan.expires_at <= self.clock.now() {
            return Err(BulkError::Expired(plan.expires_at));
        }
        let planned_reason;
        let reason = match reason {
            Some(reason) => reason,
            None => {
                planned_reason = Reason::parse(&plan.reason)
                    .map_err(|_| StoreError::Corrupt("a bulk plan's reason".to_owned()))?;
                &planned_reason
            }
        };
        loop {
            let pending = self.pending_members(&id).await?;
            if pending.is_empty() {
                break;
            }
            for member in pending {
                let outcome = self
                    .act_on_member(action, member, actor, reason, settings)
                    .await?;
                self.record_outcome(&id, member, &outcome).await?;
            }
        }
        self.finish_plan(&id).await
    }

    async fn act_on_member(
        &self,
        action: BulkAction,
        member: ConnectionId,
        actor: &Actor,
        reason: &Reason,
        settings: &BulkSettings,
    ) -> Result<Outcome, StoreError> {
        let changed = match action.single() {
            Some(single) => self
                .act_on(single, member, actor, reason)
                .await
                .map(|a| a.changed),
            None => self
                .replay(member, actor, reason, &settings.actions)
                .await
                .map(|r| r.changed),
        };
        match changed {
            Ok(true) => Ok(Outcome::Acted),
            Ok(false) => Ok(Outcome::Already),
            Err(err) => Outcome::of(err),
        }
    }

    async fn plan_row(&self, id: &str) -> Result<Option<PlanRow>, BulkError> {
        let mut b = Binder::default();
        let sql = format!(
            "SELECT action, reason, expires_at, result FROM bulk_plans WHERE id = {}",
            b.bind(id.to_owned())
        );
        let row = self
            .db
            .query_one_raw(b.statement(self.db.get_database_backend(), sql))
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(PlanRow {
            action: row.try_get("", "action")?,
            reason: row.try_get("", "reason")?,
            expires_at: row.try_get("", "expires_at")?,
            result: row.try_get("", "result")?,
        }))
    }

    /// The next members without an outcome, smallest id first.
    async fn pending_members(&self, id: &str) -> Result<Vec<ConnectionId>, BulkError> {
        let mut b = Binder::default();
        let sql = format!(
            "SELECT connection_id FROM bulk_plan_members WHERE plan_id = {} \
             AND outcome IS NULL ORDER BY connection_id LIMIT {BATCH}",
            b.bind(id.to_owned())
        );
        let rows = self
            .db
            .query_all_raw(b.statement(self.db.get_database_backend(), sql))
            .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("", "connection_id")?;
                text.parse()
                    .map_err(|_| StoreError::Corrupt(format!("bulk member {text:?}")).into())
            })
            .collect()
    }

    /// Writes a member's outcome, unless a concurrent call wrote one first (that one stays).
    async fn record_outcome(
        &self,
        id: &str,
        member: ConnectionId,
        outcome: &Outcome,
    ) -> Result<(), BulkError> {
        let mut b = Binder::default();
        let sql = format!(
            "UPDATE bulk_plan_members SET outcome = {} WHERE plan_id = {} \
             AND connection_id = {} AND outcome IS NULL",
            b.bind(outcome.text()),
            b.bind(id.to_owned()),
            b.bind(member.to_string()),
        );
        self.db
            .execute_raw(b.statement(self.db.get_database_backend(), sql))
            .await?;
        Ok(())
    }

    /// Every member has its outcome: the plan's result, counted from them and stored once
    /// (a concurrent call that stored it first wins, and both answer the stored one).
    async fn finish_plan(&self, id: &str) -> Result<BulkResult, BulkError> {
        let backend = self.db.get_database_backend();
        let mut b = Binder::default();
        let sql = format!(
            "SELECT outcome, COUNT(*) AS n FROM bulk_plan_members WHERE plan_id = {} \
             GROUP BY outcome",
            b.bind(id.to_owned())
        );
        let rows = self.db.query_all_raw(b.statement(backend, sql)).await?;
        let mut result = BulkResult::default();
        for row in &rows {
            let outcome: Option<String> = row.try_get("", "outcome")?;
            let n = count(row)?;
            match outcome.as_deref() {
                Some("acted") => result.acted += n,
                Some("already") => result.already += n,
                Some("gone") => result.gone += n,
                Some(other) => {
                    let code = other.strip_prefix("refused:").unwrap_or(other);
                    result.refused += n;
                    *result.refusals.entry(code.to_owned()).or_default() += n;
                }
                None => {
                    return Err(StoreError::Corrupt("a bulk member without outcome".into()).into());
                }
            }
        }
        let text = serde_json::to_string(&result)
            .map_err(|e| StoreError::Corrupt(format!("bulk result: {e}")))?;
        let mut b = Binder::default();
        let sql = format!(
            "UPDATE bulk_plans SET executed_at = {}, result = {} WHERE id = {} \
             AND executed_at IS NULL",
            b.bind(self.clock.now()),
            b.bind(text),
            b.bind(id.to_owned()),
        );
        self.db.execute_raw(b.statement(backend, sql)).await?;
        let stored = self.plan_row(id).await?.and_then(|p| p.result);
        match stored {
            Some(stored) => parse_result(&stored),
            None => Ok(result),
        }
    }
}

fn count(row: &QueryResult) -> Result<u64, BulkError> {
    let n = row
        .try_get::<i64>("", "n")
        .or_else(|_| row.try_get::<i32>("", "n").map(i64::from))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn parse_result(text: &str) -> Result<BulkResult, BulkError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a bulk plan's result: {e}")).into())
}
