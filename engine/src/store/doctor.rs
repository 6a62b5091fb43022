//! The doctor (docs/operations.md#doctor): every invariant the engine relies on, each checked by
//! one set-based query, its violations counted and sampled; and a repair of what is safe to
//! repair, each fix a compare-and-set on the very condition that was checked, journaled.
//!
//! - `doctor.rs`: the codes, the report, the check.
//! - `doctor/checks.rs`: one predicate per code, shared by the check and by the repair's
//!   compare-and-set (so a row that changed since it was found is left alone).
//! - `doctor/repair.rs`: the repairs.

pub(super) mod checks;
mod repair;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use self::checks::{Binder, Bounds};
pub use self::repair::REPAIR_EVENT;
use super::{Result, Store};
use crate::model::Actor;

/// How many ids a violation lists.
pub const SAMPLE_SIZE: usize = 20;

/// One invariant of the engine; its `as_str` is the stable code operators and tools see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DoctorCode {
    TransferNotScheduled,
    RefreshNotScheduled,
    RefreshLockStale,
    InvitedWithoutInvitation,
    StaleSchedule,
    TokensNotDiscarded,
    ActiveWithoutTokens,
    RevocationWithoutToken,
    JournalGap,
    JournalVersionMismatch,
    JournalStateMismatch,
    JournalChainBroken,
    SyncLeaseStale,
    SyncLeaseTooLong,
    LeaseNotDue,
    PausedTransferRunning,
    InvitationPendingNotInvited,
    OutboxClaimTooLong,
    OutboxLeaseTooLong,
    OutboxStuck,
}

/// What a violation's sample ids name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorSubject {
    Connection,
    OutboxMessage,
}

impl DoctorSubject {
    pub fn as_str(self) -> &'static str {
        match self {
            DoctorSubject::Connection => "connection",
            DoctorSubject::OutboxMessage => "outbox_message",
        }
    }
}

impl DoctorCode {
    /// Every code, in the order they are checked and repaired.
    pub const ALL: [DoctorCode; 20] = [
        DoctorCode::TransferNotScheduled,
        DoctorCode::RefreshNotScheduled,
        DoctorCode::RefreshLockStale,
        DoctorCode::InvitedWithoutInvitation,
        DoctorCode::StaleSchedule,
        DoctorCode::TokensNotDiscarded,
        DoctorCode::ActiveWithoutTokens,
        DoctorCode::RevocationWithoutToken,
        DoctorCode::JournalGap,
        DoctorCode::JournalVersionMismatch,
        DoctorCode::JournalStateMismatch,
        DoctorCode::JournalChainBroken,
        DoctorCode::SyncLeaseStale,
        DoctorCode::SyncLeaseTooLong,
        DoctorCode::LeaseNotDue,
        DoctorCode::PausedTransferRunning,
        DoctorCode::InvitationPendingNotInvited,
        DoctorCode::OutboxClaimTooLong,
        DoctorCode::OutboxLeaseTooLong,
        DoctorCode::OutboxStuck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DoctorCode::TransferNotScheduled => "transfer_not_scheduled",
            DoctorCode::RefreshNotScheduled => "refresh_not_scheduled",
            DoctorCode::RefreshLockStale => "refresh_lock_stale",
            DoctorCode::InvitedWithoutInvitation => "invited_without_invitation",
            DoctorCode::StaleSchedule => "stale_schedule",
            DoctorCode::TokensNotDiscarded => "tokens_not_discarded",
            DoctorCode::ActiveWithoutTokens => "active_without_tokens",
            DoctorCode::RevocationWithoutToken => "revocation_without_token",
            DoctorCode::JournalGap => "journal_gap",
            DoctorCode::JournalVersionMismatch => "journal_version_mismatch",
            DoctorCode::JournalStateMismatch => "journal_state_mismatch",
            DoctorCode::JournalChainBroken => "journal_chain_broken",
            DoctorCode::SyncLeaseStale => "sync_lease_stale",
            DoctorCode::SyncLeaseTooLong => "sync_lease_too_long",
            DoctorCode::LeaseNotDue => "lease_not_due",
            DoctorCode::PausedTransferRunning => "paused_transfer_running",
            DoctorCode::InvitationPendingNotInvited => "invitation_pending_not_invited",
            DoctorCode::OutboxClaimTooLong => "outbox_claim_too_long",
            DoctorCode::OutboxLeaseTooLong => "outbox_lease_too_long",
            DoctorCode::OutboxStuck => "outbox_stuck",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == s)
    }

    /// The violation, in one line.
    pub fn description(self) -> &'static str {
        match self {
            DoctorCode::TransferNotScheduled => {
                "an active or refreshing connection has no next transfer planned"
            }
            DoctorCode::RefreshNotScheduled => {
                "an active connection holds an expiring token but no refresh is planned"
            }
            DoctorCode::RefreshLockStale => {
                "a connection is refreshing for longer than the maintenance loop allows"
            }
            DoctorCode::InvitedWithoutInvitation => {
                "an invited connection has no pending invitation that could expire it"
            }
            DoctorCode::StaleSchedule => {
                "a connection that may not transfer still has a transfer or refresh planned"
            }
            DoctorCode::TokensNotDiscarded => {
                "a connection that is not active or refreshing still holds tokens"
            }
            DoctorCode::ActiveWithoutTokens => "an active or refreshing connection holds no tokens",
            DoctorCode::RevocationWithoutToken => {
                "a partner revocation is still owed but its sealed token is gone"
            }
            DoctorCode::JournalGap => "the journal's sequence is not 1, 2, … without gaps",
            DoctorCode::JournalVersionMismatch => {
                "the connection's version is not its last journal entry's sequence"
            }
            DoctorCode::JournalStateMismatch => {
                "the connection's state is not its last journal entry's `to`"
            }
            DoctorCode::JournalChainBroken => {
                "a journal entry's `from` is not the previous entry's `to`"
            }
            DoctorCode::SyncLeaseStale => {
                "a transfer lease was left behind (expired long ago, or on a connection that may not transfer)"
            }
            DoctorCode::SyncLeaseTooLong => {
                "a transfer lease ends further ahead than any writer sets one"
            }
            DoctorCode::LeaseNotDue => {
                "a connection holds a transfer lease but its next transfer is not due"
            }
            DoctorCode::PausedTransferRunning => "a paused connection holds a live transfer lease",
            DoctorCode::InvitationPendingNotInvited => {
                "a pending invitation belongs to a connection that is no longer invited"
            }
            DoctorCode::OutboxClaimTooLong => {
                "a pending message is claimed further ahead than the dispatch lease"
            }
            DoctorCode::OutboxLeaseTooLong => {
                "a pending message is leased further ahead than the delivery lease"
            }
            DoctorCode::OutboxStuck => {
                "a pending message has been due for long, unclaimed and not held back"
            }
        }
    }

    /// What the repair does; `None` for the violations that are only reported
    /// (docs/operations.md#doctor says why).
    pub fn repair(self) -> Option<&'static str> {
        Some(match self {
            DoctorCode::TransferNotScheduled | DoctorCode::LeaseNotDue => "plans a transfer now",
            DoctorCode::RefreshNotScheduled => {
                "plans the refresh from the token's expiry, as storing it does"
            }
            DoctorCode::RefreshLockStale => {
                "returns it to active with an unknown outcome (the maintenance loop's RefreshAbandoned)"
            }
            DoctorCode::InvitedWithoutInvitation => "ends it: disconnect, to revoked",
            DoctorCode::StaleSchedule => "clears the planned transfer and refresh",
            DoctorCode::TokensNotDiscarded => {
                "discards the tokens and queues a partner revocation of the refresh token"
            }
            DoctorCode::RevocationWithoutToken => "records the revocation as abandoned",
            DoctorCode::SyncLeaseStale
            | DoctorCode::SyncLeaseTooLong
            | DoctorCode::PausedTransferRunning => {
                "clears the lease (a transfer holding it stops at its next write)"
            }
            DoctorCode::InvitationPendingNotInvited => {
                "closes it: accepted on a live connection, expired on a revoked or failed one"
            }
            DoctorCode::OutboxClaimTooLong => "clears the claim",
            DoctorCode::OutboxLeaseTooLong => "clears the lease",
            DoctorCode::OutboxStuck => "makes it due now",
            DoctorCode::ActiveWithoutTokens
            | DoctorCode::JournalGap
            | DoctorCode::JournalVersionMismatch
            | DoctorCode::JournalStateMismatch
            | DoctorCode::JournalChainBroken => return None,
        })
    }

    pub fn subject(self) -> DoctorSubject {
        match self {
            DoctorCode::OutboxClaimTooLong
            | DoctorCode::OutboxLeaseTooLong
            | DoctorCode::OutboxStuck => DoctorSubject::OutboxMessage,
            _ => DoctorSubject::Connection,
        }
    }
}

impl std::fmt::Display for DoctorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bounds the checks hold the engine to: its own lease and recovery settings, plus a grace
/// beyond which something left behind is a violation rather than work about to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoctorSettings {
    /// How far past its bound something may be before it counts (default 10 minutes).
    pub grace: Duration,
    /// `workers.dispatch_lease_secs`.
    pub dispatch_lease: Duration,
    /// `workers.fetch_lease_secs`.
    pub fetch_lease: Duration,
    /// The deliver step's lease on a message it sends.
    pub delivery_lease: Duration,
    /// `workers.stale_refresh_secs`.
    pub stale_refresh_after: Duration,
    /// Rows one repair run fixes at most, per code (run it again for more).
    pub repair_batch: u64,
}

impl Default for DoctorSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(600),
            dispatch_lease: Duration::from_secs(120),
            fetch_lease: Duration::from_secs(300),
            delivery_lease: Duration::from_secs(120),
            stale_refresh_after: Duration::from_secs(300),
            repair_batch: 1000,
        }
    }
}

/// One violated invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: DoctorCode,
    /// How many connections (or messages) violated it when checked.
    pub count: u64,
    /// Up to [`SAMPLE_SIZE`] of their ids, smallest first.
    pub sample: Vec<String>,
    /// How many this run repaired (always 0 for a check).
    pub repaired: u64,
    /// How many violate it now (after the repair; the count for a check).
    pub remaining: u64,
}

/// What the doctor found (and, for a repair, what it repaired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    pub checked_at: DateTime<Utc>,
    /// Whether this run repaired.
    pub repair: bool,
    /// The violated invariants only, in [`DoctorCode::ALL`] order.
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    /// No violation remains.
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| f.remaining == 0)
    }

    pub fn finding(&self, code: DoctorCode) -> Option<&Finding> {
        self.findings.iter().find(|f| f.code == code)
    }
}

/// What one check found: its count and sample.
type Found = Vec<(DoctorCode, u64, Vec<String>)>;

impl Store {
    /// Checks every invariant as of `now`. Reads only.
    pub async fn doctor(
        &self,
        now: DateTime<Utc>,
        settings: &DoctorSettings,
    ) -> Result<DoctorReport> {
        let found = self.find_violations(now, settings).await?;
        Ok(DoctorReport {
            checked_at: now,
            repair: false,
            findings: found
                .into_iter()
                .filter(|(_, count, _)| *count > 0)
                .map(|(code, count, sample)| Finding {
                    code,
                    count,
                    sample,
                    repaired: 0,
                    remaining: count,
                })
                .collect(),
        })
    }

    /// Checks, repairs what is safe to repair (at most `settings.repair_batch` per code) with
    /// `actor` in the journal, and checks again. Running it twice is harmless: every fix is a
    /// compare-and-set on the violation itself, so a second run finds nothing to fix.
    pub async fn doctor_repair(
        &self,
        actor: &Actor,
        settings: &DoctorSettings,
    ) -> Result<DoctorReport> {
        let now = self.clock.now();
        let before = self.find_violations(now, settings).await?;
        let mut repaired = Vec::with_capacity(before.len());
        for (code, count, _) in &before {
            let fixed = if *count > 0 && code.repair().is_some() {
                self.repair_code(*code, actor, now, settings).await?
            } else {
                0
            };
            repaired.push(fixed);
        }
        let after = self.find_violations(now, settings).await?;
        let findings = before
            .into_iter()
            .zip(repaired)
            .zip(after)
            .filter(|(((_, count, _), _), (_, remaining, _))| *count > 0 || *remaining > 0)
            .map(
                |(((code, count, sample), repaired), (_, remaining, _))| Finding {
                    code,
                    count,
                    sample,
                    repaired,
                    remaining,
                },
            )
            .collect();
        Ok(DoctorReport {
            checked_at: now,
            repair: true,
            findings,
        })
    }

    /// Every check, in [`DoctorCode::ALL`] order: one query each, its count and sample.
    async fn find_violations(
        &self,
        now: DateTime<Utc>,
        settings: &DoctorSettings,
    ) -> Result<Found> {
        let bounds = Bounds::new(now, settings);
        let backend = self.db.get_database_backend();
        let mut found = Vec::with_capacity(DoctorCode::ALL.len());
        for code in DoctorCode::ALL {
            let mut binder = Binder::default();
            let inner = checks::found_sql(code, &mut binder, &bounds);
            let sql = format!(
                "SELECT id, COUNT(*) OVER () AS total FROM ({inner}) found \
                 ORDER BY id LIMIT {SAMPLE_SIZE}"
            );
            let rows = self
                .db
                .query_all_raw(binder.statement(backend, sql))
                .await?;
            let mut count = 0;
            let mut sample = Vec::with_capacity(rows.len());
            for row in rows {
                let total: i64 = row.try_get("", "total")?;
                count = u64::try_from(total).unwrap_or(0);
                sample.push(row.try_get::<String>("", "id")?);
            }
            found.push((code, count, sample));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_documented() {
        let docs = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/operations.md"
        ));
        let mut seen = std::collections::BTreeSet::new();
        for code in DoctorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert_eq!(DoctorCode::parse(s), Some(code));
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(
                docs.contains(&format!("| `{s}` |")),
                "{s} is not in docs/operations.md"
            );
        }
    }
}
