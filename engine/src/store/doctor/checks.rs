//! One predicate per code (docs/operations.md#doctor). Columns are qualified with their table's
//! name, never an alias, so the same text serves a `SELECT … FROM connections` and the repair's
//! `UPDATE connections … WHERE` (its compare-and-set). Every time is a bound parameter.

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{DbBackend, Statement, Value};

use super::{DoctorCode, DoctorSettings};
use crate::state::State;

/// Collects a statement's parameters: `bind` returns the placeholder of the value it adds.
#[derive(Default)]
pub(in crate::store) struct Binder {
    values: Vec<Value>,
}

impl Binder {
    pub(in crate::store) fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    pub(in crate::store) fn statement(self, backend: DbBackend, sql: String) -> Statement {
        Statement::from_sql_and_values(backend, sql, self.values)
    }
}

/// The times the predicates compare with, derived once per run from its `now`.
pub(in crate::store) struct Bounds {
    pub(in crate::store) now: DateTime<Utc>,
    /// A lease that expired before this was left behind.
    lease_expired_before: DateTime<Utc>,
    /// No writer sets a transfer lease beyond this.
    sync_lease_max: DateTime<Utc>,
    /// A `refreshing` held since before this outlived the maintenance loop's recovery.
    refreshing_since_before: DateTime<Utc>,
    /// A message due before this should have been claimed long ago.
    message_due_before: DateTime<Utc>,
    /// No dispatcher claims a message beyond this.
    message_claim_max: DateTime<Utc>,
    /// No deliver step leases a message beyond this.
    message_lease_max: DateTime<Utc>,
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::days(1))
}

impl Bounds {
    pub(in crate::store) fn new(now: DateTime<Utc>, s: &DoctorSettings) -> Self {
        let grace = delta(s.grace);
        Self {
            now,
            lease_expired_before: now - grace,
            sync_lease_max: now + delta(s.dispatch_lease.max(s.fetch_lease)) + grace,
            refreshing_since_before: now - delta(s.stale_refresh_after) - grace,
            message_due_before: now - grace,
            message_claim_max: now + delta(s.dispatch_lease) + grace,
            message_lease_max: now + delta(s.delivery_lease) + grace,
        }
    }
}

/// `('active', 'refreshing')`: the states that may transfer.
fn transferring() -> String {
    State::transfer_guard_sql()
}

const PENDING_INVITATION: &str = "EXISTS (SELECT 1 FROM invitations \
     WHERE invitations.connection_id = connections.id AND invitations.status = 'pending')";

/// The condition on a `connections` row, for the codes about a connection's own row.
pub(in crate::store) fn connection_predicate(
    code: DoctorCode,
    b: &mut Binder,
    k: &Bounds,
) -> Option<String> {
    let t = transferring();
    Some(match code {
        DoctorCode::TransferNotScheduled => {
            format!("connections.state IN {t} AND connections.next_sync_at IS NULL")
        }
        DoctorCode::RefreshNotScheduled => "connections.state = 'active' \
             AND connections.token_ciphertext IS NOT NULL \
             AND connections.token_expires_at IS NOT NULL AND connections.refresh_due_at IS NULL"
            .to_owned(),
        DoctorCode::RefreshLockStale => format!(
            "connections.state = 'refreshing' AND connections.state_changed_at < {}",
            b.bind(k.refreshing_since_before)
        ),
        DoctorCode::InvitedWithoutInvitation => {
            format!("connections.state = 'invited' AND NOT {PENDING_INVITATION}")
        }
        DoctorCode::StaleSchedule => format!(
            "connections.state NOT IN {t} \
             AND (connections.next_sync_at IS NOT NULL OR connections.refresh_due_at IS NOT NULL)"
        ),
        DoctorCode::TokensNotDiscarded => format!(
            "connections.state NOT IN {t} \
             AND (connections.token_ciphertext IS NOT NULL OR connections.token_key_id IS NOT NULL)"
        ),
        DoctorCode::ActiveWithoutTokens => {
            format!("connections.state IN {t} AND connections.token_ciphertext IS NULL")
        }
        DoctorCode::SyncLeaseStale => format!(
            "(connections.sync_lease_until IS NOT NULL OR connections.sync_lease_token IS NOT NULL) \
             AND (connections.sync_lease_until IS NULL OR connections.sync_lease_until < {} \
                  OR connections.state NOT IN {t})",
            b.bind(k.lease_expired_before)
        ),
        DoctorCode::SyncLeaseTooLong => format!(
            "connections.sync_lease_until > {}",
            b.bind(k.sync_lease_max)
        ),
        // Every writer keeps a held lease on a due row (docs/operations.md#connection-list):
        // the stuck list finds leases among the due rows only.
        DoctorCode::LeaseNotDue => format!(
            "connections.state IN {t} \
             AND (connections.sync_lease_until IS NOT NULL OR connections.sync_lease_token IS NOT NULL) \
             AND (connections.next_sync_at IS NULL OR connections.next_sync_at > {})",
            b.bind(k.now)
        ),
        DoctorCode::PausedTransferRunning => format!(
            "connections.paused = {} AND connections.sync_lease_token IS NOT NULL \
             AND connections.sync_lease_until >= {}",
            b.bind(true),
            b.bind(k.now)
        ),
        DoctorCode::InvitationPendingNotInvited => {
            format!("connections.state <> 'invited' AND {PENDING_INVITATION}")
        }
        DoctorCode::RevocationWithoutToken
        | DoctorCode::JournalGap
        | DoctorCode::JournalVersionMismatch
        | DoctorCode::JournalStateMismatch
        | DoctorCode::JournalChainBroken
        | DoctorCode::OutboxClaimTooLong
        | DoctorCode::OutboxLeaseTooLong
        | DoctorCode::OutboxStuck => return None,
    })
}

/// The condition on an `outbox` row, for the codes about messages.
pub(super) fn outbox_predicate(code: DoctorCode, b: &mut Binder, k: &Bounds) -> Option<String> {
    Some(match code {
        DoctorCode::OutboxClaimTooLong => format!(
            "outbox.status = 'pending' AND outbox.claimed_until > {}",
            b.bind(k.message_claim_max)
        ),
        DoctorCode::OutboxLeaseTooLong => format!(
            "outbox.status = 'pending' AND outbox.lease_until > {}",
            b.bind(k.message_lease_max)
        ),
        // A webhook behind an earlier pending event of its endpoint waits for it, by design
        // (docs/notifications.md#at-least-once): that one is reported if it is stuck itself.
        DoctorCode::OutboxStuck => format!(
            "outbox.status = 'pending' AND outbox.next_attempt_at < {due} \
             AND (outbox.claimed_until IS NULL OR outbox.claimed_until <= {now1}) \
             AND (outbox.lease_until IS NULL OR outbox.lease_until <= {now2}) \
             AND NOT (outbox.kind = 'webhook' AND EXISTS (SELECT 1 FROM outbox earlier \
                WHERE earlier.connection_id = outbox.connection_id \
                  AND earlier.target = outbox.target AND earlier.kind = 'webhook' \
                  AND earlier.status = 'pending' AND earlier.seq < outbox.seq))",
            due = b.bind(k.message_due_before),
            now1 = b.bind(k.now),
            now2 = b.bind(k.now),
        ),
        _ => return None,
    })
}

/// An owed revocation without the token it would send.
pub(super) const REVOCATION_WITHOUT_TOKEN: &str = "partner_revocations.completed_at IS NULL \
     AND (partner_revocations.token_ciphertext IS NULL OR partner_revocations.key_id IS NULL)";

/// The last journal entry's sequence per connection.
const LAST_SEQ: &str = "(SELECT connection_id, MAX(seq) AS last FROM connection_events \
     GROUP BY connection_id) j";

/// A query whose `id` column lists, once each, what violates `code`: connection ids, or outbox
/// message ids for the outbox codes.
pub(super) fn found_sql(code: DoctorCode, b: &mut Binder, k: &Bounds) -> String {
    if let Some(p) = connection_predicate(code, b, k) {
        return format!("SELECT connections.id AS id FROM connections WHERE {p}");
    }
    if let Some(p) = outbox_predicate(code, b, k) {
        return format!("SELECT outbox.id AS id FROM outbox WHERE {p}");
    }
    match code {
        DoctorCode::RevocationWithoutToken => format!(
            "SELECT DISTINCT partner_revocations.connection_id AS id FROM partner_revocations \
             WHERE {REVOCATION_WITHOUT_TOKEN}"
        ),
        DoctorCode::JournalGap => "SELECT connection_id AS id FROM connection_events \
             GROUP BY connection_id HAVING MIN(seq) <> 1 OR MAX(seq) <> COUNT(*)"
            .to_owned(),
        DoctorCode::JournalVersionMismatch => format!(
            "SELECT connections.id AS id FROM connections \
             LEFT JOIN {LAST_SEQ} ON j.connection_id = connections.id \
             WHERE j.last IS NULL OR j.last <> connections.version"
        ),
        DoctorCode::JournalStateMismatch => format!(
            "SELECT connections.id AS id FROM connections \
             JOIN {LAST_SEQ} ON j.connection_id = connections.id \
             JOIN connection_events e ON e.connection_id = j.connection_id AND e.seq = j.last \
             WHERE e.to_state <> connections.state"
        ),
        // Adjacent entries only: a missing entry is a gap, reported as such.
        DoctorCode::JournalChainBroken => "SELECT DISTINCT later.connection_id AS id \
             FROM connection_events later LEFT JOIN connection_events earlier \
               ON earlier.connection_id = later.connection_id AND earlier.seq = later.seq - 1 \
             WHERE (later.seq = 1 AND later.from_state IS NOT NULL) \
                OR (earlier.seq IS NOT NULL \
                    AND (later.from_state IS NULL OR later.from_state <> earlier.to_state))"
            .to_owned(),
        // Every other code has a row predicate above.
        _ => "SELECT id FROM connections WHERE 1 = 0".to_owned(),
    }
}
