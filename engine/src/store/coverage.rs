//! A connection's coverage (docs/coverage.md#coverage): which part of a time range it has
//! fetched and committed, which part it has not (and why), and per data type where the
//! partner had no record for longer than a gap, so "the partner had no data" and "we failed to
//! fetch" look different.
//!
//! The fetched range is `[fetched_from, fetched_through)`: the cursor only advances over
//! committed windows, so that range has no holes. Data types and their empty stretches come
//! from the stored records themselves (live ones, in the user's time index).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, Statement};

use super::{Result, Store, transfer::delta};
use crate::{ids::ConnectionId, model::Connection};

/// Longest range one coverage read covers, in days (its records are read into memory).
pub const MAX_COVERAGE_DAYS: i64 = 92;

/// A half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A range an operator asked for that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRange(pub String);

impl TimeSpan {
    /// `[start, end)` as an operator may ask for it: start before end, at most
    /// [`MAX_COVERAGE_DAYS`] long, ending no later than a minute from `now`.
    pub fn checked(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> std::result::Result<Self, InvalidRange> {
        if start >= end {
            return Err(InvalidRange("`start` must be before `end`".to_owned()));
        }
        if end - start > TimeDelta::days(MAX_COVERAGE_DAYS) {
            return Err(InvalidRange(format!(
                "a range spans at most {MAX_COVERAGE_DAYS} days"
            )));
        }
        if end > now + TimeDelta::minutes(1) {
            return Err(InvalidRange("`end` is in the future".to_owned()));
        }
        Ok(Self { start, end })
    }

    fn clip(self, to: TimeSpan) -> Option<TimeSpan> {
        let start = self.start.max(to.start);
        let end = self.end.min(to.end);
        (start < end).then_some(TimeSpan { start, end })
    }
}

/// Why part of the range is not fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfetched {
    /// Older than the first window the connection ever committed (before its backfill).
    BeforeFirstWindow,
    /// Newer than the cursor: the next transfer reads it. While transfers fail, the streak and
    /// its last error say why it has not.
    Pending {
        next_sync_at: Option<DateTime<Utc>>,
        failing_since: Option<DateTime<Utc>>,
        last_error_code: Option<String>,
    },
    /// The connection never committed a window.
    NeverFetched,
}

impl Unfetched {
    pub fn code(&self) -> &'static str {
        match self {
            Unfetched::BeforeFirstWindow => "before_first_window",
            Unfetched::Pending { .. } => "pending",
            Unfetched::NeverFetched => "never_fetched",
        }
    }
}

/// One data type's records within the fetched part of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCoverage {
    /// The Tidepool datum type (`cbg`, `smbg`, `basal`, …).
    pub datum_type: String,
    pub records: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Stretches of the fetched range longer than the gap with no record of this type: the
    /// partner had none (for sparse types such as events, long stretches are normal).
    pub empty: Vec<TimeSpan>,
}

/// A connection's coverage of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub connection_id: ConnectionId,
    pub range: TimeSpan,
    pub gap: Duration,
    /// The fetched and committed part of the range.
    pub fetched: Option<TimeSpan>,
    /// The parts of the range not fetched, oldest first.
    pub unfetched: Vec<(TimeSpan, Unfetched)>,
    /// Data types with records in the fetched part, by type.
    pub types: Vec<TypeCoverage>,
}

/// Empty stretches longer than `gap` in `within`, given the sorted record times inside it.
fn empty_stretches(times: &[DateTime<Utc>], within: TimeSpan, gap: TimeDelta) -> Vec<TimeSpan> {
    let mut empty = Vec::new();
    let mut previous = within.start;
    for &t in times.iter().chain(std::iter::once(&within.end)) {
        if t - previous > gap {
            empty.push(TimeSpan {
                start: previous,
                end: t,
            });
        }
        previous = previous.max(t);
    }
    empty
}

/// The parts of `range` the connection has not fetched, and why.
fn unfetched(c: &Connection, range: TimeSpan, now: DateTime<Utc>) -> Vec<(TimeSpan, Unfetched)> {
    let (Some(from), Some(through)) = (c.fetched_from, c.fetched_through) else {
        return vec![(range, Unfetched::NeverFetched)];
    };
    let mut out = Vec::new();
    let before = TimeSpan {
        start: range.start,
        end: from,
    };
    if let Some(span) = before.clip(range) {
        out.push((span, Unfetched::BeforeFirstWindow));
    }
    let after = TimeSpan {
        start: through,
        end: range.end.max(now),
    };
    if let Some(span) = after.clip(range) {
        out.push((
            span,
            Unfetched::Pending {
                next_sync_at: c.next_sync_at,
                failing_since: c.failing_since,
                last_error_code: c.last_error.as_ref().map(|e| e.code.clone()),
            },
        ));
    }
    out
}

impl Store {
    /// The coverage of `range` by `connection` (at most [`MAX_COVERAGE_DAYS`]; the caller
    /// checks), with empty stretches longer than `gap`.
    pub async fn coverage(
        &self,
        connection: &Connection,
        range: TimeSpan,
        gap: Duration,
    ) -> Result<Coverage> {
        let now = self.clock.now();
        let fetched = match (connection.fetched_from, connection.fetched_through) {
            (Some(start), Some(end)) => TimeSpan { start, end }.clip(range),
            _ => None,
        };
        let mut types = Vec::new();
        if let Some(within) = fetched {
            let backend = self.db.get_database_backend();
            // The user's time index, narrowed to the connection.
            let rows = self
                .db
                .query_all_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT datum_type, time FROM data_records \
                     WHERE user_id = $1 AND time >= $2 AND time < $3 AND connection_id = $4 \
                     AND retired = $5 ORDER BY datum_type, time",
                    [
                        connection.user_id.to_string().into(),
                        within.start.into(),
                        within.end.into(),
                        connection.id.to_string().into(),
                        false.into(),
                    ],
                ))
                .await?;
            let mut current: Option<(String, Vec<DateTime<Utc>>)> = None;
            let gap = delta(gap);
            let mut close = |kind: String, times: Vec<DateTime<Utc>>| {
                if let (Some(&first), Some(&last)) = (times.first(), times.last()) {
                    types.push(TypeCoverage {
                        records: times.len() as u64,
                        empty: empty_stretches(&times, within, gap),
                        datum_type: kind,
                        first,
                        last,
                    });
                }
            };
            for row in &rows {
                let kind: String = row.try_get("", "datum_type")?;
                let time: DateTime<Utc> = row.try_get("", "time")?;
                match &mut current {
                    Some((k, times)) if *k == kind => times.push(time),
                    _ => {
                        if let Some((k, times)) = current.take() {
                            close(k, times);
                        }
                        current = Some((kind, vec![time]));
                    }
                }
            }
            if let Some((k, times)) = current {
                close(k, times);
            }
        }
        Ok(Coverage {
            connection_id: connection.id,
            range,
            gap,
            fetched,
            unfetched: unfetched(connection, range, now),
            types,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 0, 0, 0).unwrap() + TimeDelta::hours(h)
    }

    #[test]
    fn empty_stretches_cover_the_edges_and_the_middle() {
        let within = TimeSpan {
            start: t(0),
            end: t(10),
        };
        let times = [t(2), t(3), t(7)];
        let empty = empty_stretches(&times, within, TimeDelta::hours(1));
        let pairs: Vec<_> = empty.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(pairs, vec![(t(0), t(2)), (t(3), t(7)), (t(7), t(10))]);
        assert!(empty_stretches(&times, within, TimeDelta::hours(5)).is_empty());
        let none = empty_stretches(&[], within, TimeDelta::hours(1));
        assert_eq!(none, vec![within]);
    }

    #[test]
    fn spans_clip_to_the_range() {
        let range = TimeSpan {
            start: t(0),
            end: t(10),
        };
        let inside = TimeSpan {
            start: t(-5),
            end: t(4),
        };
        assert_eq!(
            inside.clip(range),
            Some(TimeSpan {
                start: t(0),
                end: t(4)
            })
        );
        let outside = TimeSpan {
            start: t(11),
            end: t(12),
        };
        assert_eq!(outside.clip(range), None);
    }
}
