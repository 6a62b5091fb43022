//! Pauses of a partner or of everything (docs/actions.md#actions), and what the claims skip.
//!
//! A pause is a row of `pauses` with its actor, reason and start; its resume stamps the row
//! (who, when, why) and leaves it as history. At most one pause per scope is in force (a
//! partial unique index), so pausing twice writes once. The claims of transfers and refreshes
//! read the pauses in force first (one read of a table of a few rows): with everything paused
//! they claim nothing without touching `connections`; with partners paused their statement
//! skips those partners. A claim made before a pause committed still runs: its step starts
//! within the dispatch lease and ends by itself.
//!
//! On resume, the connections it frees whose transfer or refresh fell due while paused are
//! made due at `now + uniform(0, spread)` each, so a long pause does not end in a thundering
//! herd on the partner (and on our workers).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, Statement,
};

use super::Reason;
use crate::{
    ids::PartnerName,
    model::Actor,
    state::State,
    store::{
        Result, Store, StoreError,
        doctor::checks::Binder,
        entities::{connection, pause},
        is_unique_violation,
        rows::{json_param, json_rows, json_time},
    },
};

/// Connections rescheduled per statement on resume.
const SPREAD_BATCH: u64 = 500;

/// What a pause holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseScope {
    /// Every connection.
    All,
    /// Every connection of one partner.
    Partner(PartnerName),
}

impl PauseScope {
    /// As stored: `all` or `partner:<name>`.
    pub fn key(&self) -> String {
        match self {
            PauseScope::All => "all".to_owned(),
            PauseScope::Partner(partner) => format!("partner:{}", partner.as_str()),
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "all" => Some(PauseScope::All),
            _ => key
                .strip_prefix("partner:")
                .and_then(|p| PartnerName::parse(p).ok())
                .map(PauseScope::Partner),
        }
    }
}

/// A pause in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub id: String,
    pub scope: PauseScope,
    pub reason: String,
    /// Who paused (`ops:<subject>`).
    pub actor: String,
    pub since: DateTime<Utc>,
}

/// What a resume of a partner or of everything did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeResumed {
    /// `false`: it was not paused; nothing was written.
    pub changed: bool,
    /// Connections whose overdue transfer or refresh was spread over the window.
    pub rescheduled: u64,
}

/// The pauses in force, as the claims honour them.
#[derive(Debug, Clone, Default)]
pub(in crate::store) struct PauseFilter {
    pub(in crate::store) all: bool,
    partners: Vec<String>,
}

impl PauseFilter {
    /// The partners paused on their own (not by a pause of everything).
    pub(in crate::store) fn partners(&self) -> &[String] {
        &self.partners
    }

    /// These pauses plus `partners` skipped as if paused (open circuit breakers,
    /// docs/operations.md#partner-incidents), for one claim.
    pub(in crate::store) fn also_skipping(&self, partners: &[String]) -> Self {
        let mut filter = self.clone();
        for partner in partners {
            if !filter.partners.contains(partner) {
                filter.partners.push(partner.clone());
            }
        }
        filter
    }

    pub(in crate::store) fn blocks(&self, partner: &str) -> bool {
        self.all || self.partners.iter().any(|p| p == partner)
    }

    /// `AND partner NOT IN (…)` for the paused partners (nothing when none is), its
    /// placeholders numbered from `$first`, with their values.
    pub(in crate::store) fn skip_partners(&self, first: usize) -> (String, Vec<sea_orm::Value>) {
        if self.partners.is_empty() {
            return (String::new(), Vec::new());
        }
        let placeholders: Vec<String> = (0..self.partners.len())
            .map(|k| format!("${}", first + k))
            .collect();
        (
            format!(" AND partner NOT IN ({})", placeholders.join(", ")),
            self.partners.iter().map(|p| p.clone().into()).collect(),
        )
    }
}

#[derive(serde::Serialize)]
struct SpreadRow {
    k: String,
    n: Option<String>,
    r: Option<String>,
}

impl Store {
    /// The pauses in force, for a claim (docs/actions.md#actions).
    pub(in crate::store) async fn pause_filter(&self) -> Result<PauseFilter> {
        let scopes = self
            .db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT scope FROM pauses WHERE resumed_at IS NULL",
            ))
            .await?;
        let mut filter = PauseFilter::default();
        for row in scopes {
            let scope: String = row.try_get("", "scope")?;
            match PauseScope::parse(&scope) {
                Some(PauseScope::All) => filter.all = true,
                Some(PauseScope::Partner(partner)) => {
                    filter.partners.push(partner.as_str().to_owned());
                }
                None => return Err(StoreError::Corrupt(format!("pause scope {scope:?}"))),
            }
        }
        Ok(filter)
    }

    /// The pauses of partners and of everything in force, oldest first.
    pub async fn pauses(&self) -> Result<Vec<Pause>> {
        pause::Entity::find()
            .filter(pause::Column::ResumedAt.is_null())
            .order_by_asc(pause::Column::Since)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_pause)
            .collect()
    }

    /// How many connections are paused on their own.
    pub async fn paused_connections(&self) -> Result<u64> {
        Ok(connection::Entity::find()
            .filter(connection::Column::Paused.eq(true))
            .count(&self.db)
            .await?)
    }

    /// Pauses `scope`; `false` with the pause in force when it already was.
    pub async fn pause(
        &self,
        scope: &PauseScope,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<(Pause, bool)> {
        if let Some(existing) = self.pause_in_force(scope).await? {
            return Ok((existing, false));
        }
        let row = pause::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            scope: Set(scope.key()),
            reason: Set(reason.as_str().to_owned()),
            actor: Set(actor.as_str().to_owned()),
            since: Set(self.clock.now()),
            resumed_at: Set(None),
            resumed_by: Set(None),
            resume_reason: Set(None),
        };
        let mine = match pause::Entity::insert(row).exec(&self.db).await {
            Ok(_) => true,
            // Paused concurrently by someone else: theirs is the pause in force.
            Err(err) if is_unique_violation(&err) => false,
            Err(err) => return Err(err.into()),
        };
        let pause = self
            .pause_in_force(scope)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a pause vanished as it was made".to_owned()))?;
        if mine {
            tracing::info!(scope = %scope.key(), "paused by an operator");
        }
        Ok((pause, mine))
    }

    /// Ends the pause of `scope` and spreads the overdue work of the connections it frees
    /// over `spread` (none are freed while everything stays paused).
    pub async fn resume(
        &self,
        scope: &PauseScope,
        actor: &Actor,
        reason: &Reason,
        spread: Duration,
    ) -> Result<ScopeResumed> {
        let now = self.clock.now();
        let ended = pause::Entity::update_many()
            .set(pause::ActiveModel {
                resumed_at: Set(Some(now)),
                resumed_by: Set(Some(actor.as_str().to_owned())),
                resume_reason: Set(Some(reason.as_str().to_owned())),
                ..Default::default()
            })
            .filter(pause::Column::Scope.eq(scope.key()))
            .filter(pause::Column::ResumedAt.is_null())
            .exec(&self.db)
            .await?;
        if ended.rows_affected == 0 {
            return Ok(ScopeResumed {
                changed: false,
                rescheduled: 0,
            });
        }
        tracing::info!(scope = %scope.key(), "resumed by an operator");
        let rescheduled = self.spread_overdue(scope, spread).await?;
        Ok(ScopeResumed {
            changed: true,
            rescheduled,
        })
    }

    async fn pause_in_force(&self, scope: &PauseScope) -> Result<Option<Pause>> {
        pause::Entity::find()
            .filter(pause::Column::Scope.eq(scope.key()))
            .filter(pause::Column::ResumedAt.is_null())
            .one(&self.db)
            .await?
            .map(to_pause)
            .transpose()
    }

    /// Makes each overdue transfer and refresh of the connections `scope` frees due at a
    /// random time within `spread`, in batches by id. Returns how many connections moved.
    pub(in crate::store) async fn spread_overdue(
        &self,
        scope: &PauseScope,
        spread: Duration,
    ) -> Result<u64> {
        let filter = self.pause_filter().await?;
        if filter.all {
            return Ok(0);
        }
        let backend = self.db.get_database_backend();
        let now = self.clock.now();
        let window = TimeDelta::from_std(spread).unwrap_or(TimeDelta::minutes(5));
        let window_ms = window.num_milliseconds().max(0);
        let mut after = String::new();
        let mut moved = 0;
        loop {
            let mut b = Binder::default();
            let mut sql = format!(
                "SELECT * FROM connections WHERE id > {} AND state IN {} AND paused = {} \
                 AND (next_sync_at <= {now} OR (state = 'active' AND refresh_due_at <= {now})) \
                 AND (sync_lease_until IS NULL OR sync_lease_until < {now})",
                b.bind(after.clone()),
                State::transfer_guard_sql(),
                b.bind(false),
                now = b.bind(now),
            );
            if let PauseScope::Partner(partner) = scope {
                sql.push_str(&format!(" AND partner = {}", b.bind(partner.as_str())));
            }
            if !filter.partners.is_empty() {
                let names: Vec<String> =
                    filter.partners.iter().map(|p| b.bind(p.clone())).collect();
                sql.push_str(&format!(" AND partner NOT IN ({})", names.join(", ")));
            }
            sql.push_str(&format!(" ORDER BY id LIMIT {SPREAD_BATCH}"));
            let rows = connection::Entity::find()
                .from_raw_sql(b.statement(backend, sql))
                .all(&self.db)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(moved);
            };
            after = last.id.clone();
            let full = rows.len() as u64 == SPREAD_BATCH;
            let spread = spread_rows(&rows, now, window_ms, backend);
            let time = if backend == sea_orm::DbBackend::Postgres {
                "timestamptz"
            } else {
                "text"
            };
            let sql = format!(
                "UPDATE connections SET \
                   next_sync_at = CASE WHEN v.n IS NOT NULL AND connections.next_sync_at <= $2 \
                     AND (connections.sync_lease_until IS NULL \
                       OR connections.sync_lease_until < $2) \
                     THEN v.n ELSE connections.next_sync_at END, \
                   refresh_due_at = CASE WHEN v.r IS NOT NULL \
                     AND connections.refresh_due_at <= $2 \
                     THEN v.r ELSE connections.refresh_due_at END \
                 FROM {rows} WHERE connections.id = v.k AND connections.paused = $3",
                rows = json_rows(backend, 1, &[("k", "text"), ("n", time), ("r", time)]),
            );
            let result = self
                .db
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [json_param(&spread)?, now.into(), false.into()],
                ))
                .await?;
            moved += result.rows_affected();
            if !full {
                return Ok(moved);
            }
        }
    }
}

/// Each overdue transfer and refresh of `rows` due at `now` plus a uniformly random offset
/// of at most `window_ms`, drawn apart.
fn spread_rows(
    rows: &[connection::Model],
    now: DateTime<Utc>,
    window_ms: i64,
    backend: sea_orm::DbBackend,
) -> Vec<SpreadRow> {
    let mut rng = rand::rng();
    let mut at = || {
        let offset = rng.random_range(0..=window_ms);
        json_time(backend, now + TimeDelta::milliseconds(offset))
    };
    rows.iter()
        .map(|row| SpreadRow {
            k: row.id.clone(),
            n: row.next_sync_at.filter(|t| *t <= now).map(|_| at()),
            r: row
                .refresh_due_at
                .filter(|t| *t <= now && row.state == State::Active.as_str())
                .map(|_| at()),
        })
        .collect()
}

fn to_pause(row: pause::Model) -> Result<Pause> {
    Ok(Pause {
        scope: PauseScope::parse(&row.scope)
            .ok_or_else(|| StoreError::Corrupt(format!("pause scope {:?}", row.scope)))?,
        id: row.id,
        reason: row.reason,
        actor: row.actor,
        since: row.since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        let partner = PauseScope::Partner(PartnerName::parse("sandbox-cgm").unwrap());
        assert_eq!(partner.key(), "partner:sandbox-cgm");
        assert_eq!(PauseScope::parse("partner:sandbox-cgm"), Some(partner));
        assert_eq!(PauseScope::parse("all"), Some(PauseScope::All));
        for bad in ["", "partner:", "partner:Bad Name", "everything"] {
            assert_eq!(PauseScope::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn paused_partners_are_skipped_by_placeholders() {
        let none = PauseFilter::default();
        assert_eq!(none.skip_partners(5), (String::new(), Vec::new()));
        let filter = PauseFilter {
            all: false,
            partners: vec!["a".to_owned(), "b".to_owned()],
        };
        let (sql, values) = filter.skip_partners(5);
        assert_eq!(sql, " AND partner NOT IN ($5, $6)");
        assert_eq!(values.len(), 2);
        assert!(filter.blocks("a") && !filter.blocks("c"));
    }
}
