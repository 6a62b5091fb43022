//! Re-fetch a time range (docs/coverage.md#refetch): the transfer cursor is rewound to the
//! range's start and the transfer made due now, so the next transfer reads the range again
//! (with everything after it up to now: the cursor only moves forward over committed windows,
//! so that is what keeps the fetched range without holes). Storage is idempotent: records read
//! again unchanged are neither written nor counted as new. The dry run, which fetches the range
//! and compares it with what is stored without committing, is the fetch step's
//! (`Workflows::refetch_preview`) and [`Store::preview_chunk`].
//!
//! Like replay: `active` only, not paused, never beside a live transfer lease (claimed or
//! running: `step_in_flight`); a compare-and-swap on the version and on the cursor it read.
//! A range at or after the cursor is still to be fetched anyway: nothing is written.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{ActionError, Entry, RETRIES, Reason, Refusal, Swap, parse_state};
use crate::{
    ids::ConnectionId,
    model::{Actor, Connection},
    state::State,
    store::{Store, TimeSpan, connections::to_domain},
};

/// The journal's event name of a re-fetch.
pub const REFETCH_EVENT: &str = "ops_refetch";

/// What a re-fetch did.
#[derive(Debug, Clone)]
pub struct Refetched {
    /// The cursor before; `fetched_through` afterwards is `min(before, range.start)`.
    pub cursor_was: DateTime<Utc>,
    /// `false`: the range is not fetched yet; nothing was written.
    pub changed: bool,
    pub connection: Connection,
}

impl Store {
    /// Rewinds the connection's cursor to `range.start` and makes its transfer due now.
    pub async fn refetch(
        &self,
        id: ConnectionId,
        range: TimeSpan,
        actor: &Actor,
        reason: &Reason,
    ) -> Result<Refetched, ActionError> {
        for _ in 0..RETRIES {
            let row = self.row(id).await?;
            match parse_state(&row.state)? {
                State::Active => {}
                State::Refreshing => return Err(super::in_flight_refresh()),
                _ => return Err(ActionError::Refused(Refusal::NotTransferring)),
            }
            if row.paused || self.pause_filter().await?.blocks(&row.partner) {
                return Err(ActionError::Refused(Refusal::Paused));
            }
            let now = self.clock.now();
            if row.sync_lease_until.is_some_and(|until| until >= now) {
                return Err(ActionError::Refused(Refusal::StepInFlight(
                    "a transfer is claimed or running",
                )));
            }
            let Some(cursor) = row.fetched_through else {
                return Err(ActionError::Refused(Refusal::NotFetchedYet));
            };
            if range.start >= cursor {
                return Ok(Refetched {
                    cursor_was: cursor,
                    changed: false,
                    connection: to_domain(row)?,
                });
            }
            let swap = Swap::new()
                .set("fetched_through", range.start)
                .set("next_sync_at", now)
                .null("sync_lease_until")
                .null("sync_lease_token")
                .guard(|b| {
                    format!(
                        "state = 'active' AND paused = {} AND fetched_through = {} \
                         AND (sync_lease_until IS NULL OR sync_lease_until < {})",
                        b.bind(false),
                        b.bind(cursor),
                        b.bind(now)
                    )
                });
            let details = json!({
                "start": range.start,
                "end": range.end,
                "cursorWas": cursor,
                "cursor": range.start,
            });
            let entry = Entry::new(REFETCH_EVENT, actor, reason, details);
            if let Some(connection) = self.swap_journaled(&row, swap, Vec::new(), entry).await? {
                return Ok(Refetched {
                    cursor_was: cursor,
                    changed: true,
                    connection,
                });
            }
        }
        Err(self.lost(id).await)
    }
}
