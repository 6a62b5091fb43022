//! The filtered connection list (docs/operations.md#connection-list): connections matching a
//! [`ConnectionFilter`], keyset-paged by id (ids are UUIDv7: by creation), each with the stuck
//! reasons that hold for it. One query per page; its filters are the columns the
//! `ix_connections_*` indexes of the operator filters serve.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};

use super::stuck::{self, StuckBounds, StuckReason, StuckSettings};
use crate::{
    ids::{ConnectionId, PartnerName, UserId},
    model::Connection,
    state::State,
    store::{
        Result, Store, connections::to_domain, doctor::checks::Binder, entities::connection,
        rows::CONNECTION_COLUMNS,
    },
};

/// Largest page [`Store::list_connections`] returns.
pub const MAX_LIST_PAGE: u64 = 1000;

/// Which stuck connections a filter asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StuckFilter {
    /// Stuck for any reason.
    Any,
    /// Stuck for no reason.
    No,
    /// Stuck for this reason (perhaps others too).
    Reason(StuckReason),
}

/// Which connections an operator means: every field that is set must hold (all of them when
/// none is). Shared by the list, the bulk actions, the CLI and the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFilter {
    pub state: Option<State>,
    pub partner: Option<PartnerName>,
    pub user: Option<UserId>,
    pub paused: Option<bool>,
    /// The connection's `last_error_code`.
    pub error: Option<String>,
    pub stuck: Option<StuckFilter>,
}

/// `reason` asked for together with `stuck = false`: a contradiction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("`reason` names a stuck reason; it cannot be combined with stuck=false")]
pub struct ReasonNotStuck;

impl StuckFilter {
    /// The stuck filter of a `stuck` flag and a `reason` code (both optional).
    pub fn from_parts(
        stuck: Option<bool>,
        reason: Option<StuckReason>,
    ) -> Result<Option<Self>, ReasonNotStuck> {
        Ok(match (stuck, reason) {
            (Some(false), Some(_)) => return Err(ReasonNotStuck),
            (_, Some(reason)) => Some(StuckFilter::Reason(reason)),
            (Some(true), None) => Some(StuckFilter::Any),
            (Some(false), None) => Some(StuckFilter::No),
            (None, None) => None,
        })
    }
}

impl ConnectionFilter {
    /// The filter as an SQL condition on `connections` (`1 = 1` when empty).
    pub(in crate::store) fn condition(&self, b: &mut Binder, k: &StuckBounds) -> String {
        let mut terms = vec![self.columns_condition(b)];
        match self.stuck {
            Some(StuckFilter::Any) => terms.push(stuck::any(b, k)),
            Some(StuckFilter::No) => {
                terms.push(format!("NOT COALESCE({}, FALSE)", stuck::any(b, k)));
            }
            Some(StuckFilter::Reason(reason)) => {
                terms.push(format!("({})", stuck::predicate(reason, b, k)));
            }
            None => {}
        }
        terms.join(" AND ")
    }

    /// Every field but `stuck`, as an SQL condition (`1 = 1` when none is set).
    fn columns_condition(&self, b: &mut Binder) -> String {
        let mut terms = Vec::new();
        // States are a closed set: written as literals, so that PostgreSQL's plan may use the
        // partial index of the states other than `active`.
        if let Some(state) = self.state {
            terms.push(format!("connections.state = '{}'", state.as_str()));
        }
        if let Some(partner) = &self.partner {
            terms.push(format!(
                "connections.partner = {}",
                b.bind(partner.as_str())
            ));
        }
        if let Some(user) = &self.user {
            terms.push(format!("connections.user_id = {}", b.bind(user.as_str())));
        }
        // Literals, so that the partial index on paused connections serves `true`.
        match self.paused {
            Some(true) => terms.push("connections.paused = TRUE".to_owned()),
            Some(false) => terms.push("connections.paused = FALSE".to_owned()),
            None => {}
        }
        if let Some(code) = &self.error {
            terms.push(format!(
                "connections.last_error_code = {}",
                b.bind(code.clone())
            ));
        }
        if terms.is_empty() {
            "1 = 1".to_owned()
        } else {
            terms.join(" AND ")
        }
    }

    /// The reasons to look for arm by arm, each into a set of ids first: stuck connections are
    /// few in a healthy fleet and spread over all ids, so a plan that walks the primary key in
    /// id order looking for them (which a page's `ORDER BY id LIMIT` invites) reads most of
    /// the table; the set costs its own index range (or the lease scan) instead.
    fn sparse_reasons(&self) -> Option<Vec<StuckReason>> {
        match self.stuck {
            Some(StuckFilter::Any) => Some(StuckReason::ALL.to_vec()),
            Some(StuckFilter::Reason(r)) => Some(vec![r]),
            Some(StuckFilter::No) | None => None,
        }
    }
}

/// A listed connection and why it is stuck (empty when it is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedConnection {
    pub connection: Connection,
    /// In [`StuckReason::ALL`] order.
    pub stuck: Vec<StuckReason>,
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPage {
    /// Smallest id first.
    pub connections: Vec<ListedConnection>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<ConnectionId>,
}

impl Store {
    /// The connections matching `filter` as of `now`, ids greater than `after` only, at most
    /// `limit` (1 to [`MAX_LIST_PAGE`]). Reads only.
    pub async fn list_connections(
        &self,
        filter: &ConnectionFilter,
        after: Option<ConnectionId>,
        limit: u64,
        now: DateTime<Utc>,
        settings: &StuckSettings,
    ) -> Result<ConnectionPage> {
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let k = self.stuck_bounds(now, settings).await?;
        // Values are bound in the order they appear in the text.
        let mut b = Binder::default();
        let after = |b: &mut Binder| match after {
            Some(id) => format!(" AND connections.id > {}", b.bind(id.to_string())),
            None => String::new(),
        };
        let (head, condition) = match filter.sparse_reasons() {
            // Found arm by arm into a set first, so that no plan walks the whole primary key
            // looking for a few rows (docs/operations.md#connection-list).
            Some(reasons) => {
                let base = format!("{}{}", filter.columns_condition(&mut b), after(&mut b));
                let ids = stuck::stuck_ids(&mut b, &k, &base, &reasons);
                (
                    format!("WITH found AS MATERIALIZED ({ids}) "),
                    "connections.id IN (SELECT id FROM found)".to_owned(),
                )
            }
            None => (String::new(), String::new()),
        };
        let flags: Vec<String> = StuckReason::ALL
            .into_iter()
            .enumerate()
            .map(|(i, r)| format!("{} AS stuck_{i}", stuck::flag(r, &mut b, &k)))
            .collect();
        let condition = if condition.is_empty() {
            format!("{}{}", filter.condition(&mut b, &k), after(&mut b))
        } else {
            condition
        };
        // One more than asked, to know whether there is a next page.
        let sql = format!(
            "{head}SELECT {columns}, {flags} FROM connections WHERE {condition} \
             ORDER BY connections.id LIMIT {fetch}",
            columns = qualified_columns(),
            flags = flags.join(", "),
            fetch = limit + 1,
        );
        let backend = self.db.get_database_backend();
        let rows = self.db.query_all_raw(b.statement(backend, sql)).await?;
        let mut connections = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            let model = connection::Model::from_query_result(row, "")?;
            let mut reasons = Vec::new();
            for (i, reason) in StuckReason::ALL.into_iter().enumerate() {
                let on: i32 = row.try_get("", &format!("stuck_{i}"))?;
                if on != 0 {
                    reasons.push(reason);
                }
            }
            connections.push(ListedConnection {
                connection: to_domain(model)?,
                stuck: reasons,
            });
        }
        let next = (rows.len() as u64 > limit)
            .then(|| connections.last().map(|c| c.connection.id))
            .flatten();
        Ok(ConnectionPage { connections, next })
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
