//! Named step boundaries where a test can make a step stop dead, as if its process had been
//! killed there: the step returns [`Injected`] at once, no cleanup or bookkeeping of ours runs,
//! an open database transaction is dropped (rolled back), a lease stays taken until it expires.
//!
//! Each [`Store`](crate::Store) carries its own set (no global registry, so tests running in
//! parallel in one process do not trip each other's points). Unarmed, a point costs one atomic
//! load.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// The boundaries of a fetch step, in the order a run passes them (the last window passes
/// `fetch.before_finish` before its commit's two points, then `fetch.finished`). Tests iterate
/// this list, so a new boundary is covered by the crash tests as soon as it is named here.
pub const FETCH_BOUNDARIES: &[&str] = &[
    FETCH_STARTED,
    FETCH_WINDOW_RECEIVED,
    COMMIT_CURSOR_WRITTEN,
    COMMIT_RECORDS_WRITTEN,
    FETCH_WINDOW_COMMITTED,
    FETCH_BEFORE_FINISH,
    FETCH_FINISHED,
];

/// The lease is taken; nothing was requested yet.
pub const FETCH_STARTED: &str = "fetch.started";
/// A window's records came back from the partner and were mapped; nothing stored yet.
pub const FETCH_WINDOW_RECEIVED: &str = "fetch.window_received";
/// Inside the window's transaction: lease checked and cursor moved, records not yet written.
pub const COMMIT_CURSOR_WRITTEN: &str = "commit.cursor_written";
/// Inside the window's transaction: records written, not yet committed.
pub const COMMIT_RECORDS_WRITTEN: &str = "commit.records_written";
/// A window's transaction committed, the next window not yet requested. Not passed after the
/// last window, whose commit ends the run.
pub const FETCH_WINDOW_COMMITTED: &str = "fetch.window_committed";
/// The last window received and mapped, every earlier window committed; the last window's
/// transaction, which also ends the run (next run, lease release), not yet begun.
pub const FETCH_BEFORE_FINISH: &str = "fetch.before_finish";
/// The last window and the run's end are committed; the job not yet acknowledged.
pub const FETCH_FINISHED: &str = "fetch.finished";

/// The boundaries of a refresh, in order. Between `refresh.answered` and its commit the partner
/// may have rotated the grant while we still hold the old refresh token: the crash tests show
/// what the engine does then (docs/oauth.md#lost-refresh).
pub const REFRESH_BOUNDARIES: &[&str] = &[REFRESH_LOCKED, REFRESH_ANSWERED, REFRESH_COMMITTED];

/// `active → refreshing` committed (the lock is ours); the partner not yet asked.
pub const REFRESH_LOCKED: &str = "refresh.locked";
/// The partner answered (maybe with a rotated token); nothing stored yet.
pub const REFRESH_ANSWERED: &str = "refresh.answered";
/// The outcome is committed; the step not yet finished.
pub const REFRESH_COMMITTED: &str = "refresh.committed";

/// The boundaries of an OAuth callback, in order.
pub const CALLBACK_BOUNDARIES: &[&str] = &[
    CALLBACK_STATE_SPENT,
    CALLBACK_CODE_EXCHANGED,
    CALLBACK_COMMITTED,
];

/// The callback's `state` is spent; the code not yet exchanged.
pub const CALLBACK_STATE_SPENT: &str = "callback.state_spent";
/// The partner exchanged the code for tokens; nothing stored yet.
pub const CALLBACK_CODE_EXCHANGED: &str = "callback.code_exchanged";
/// The outcome is committed; the browser not yet answered.
pub const CALLBACK_COMMITTED: &str = "callback.committed";

/// The boundaries of a partner-side revocation attempt, in order.
pub const REVOKE_BOUNDARIES: &[&str] = &[REVOKE_ANSWERED, REVOKE_RECORDED];

/// The partner answered the revocation request; the outcome not yet recorded.
pub const REVOKE_ANSWERED: &str = "revoke.answered";
/// The outcome is recorded; the step not yet finished.
pub const REVOKE_RECORDED: &str = "revoke.recorded";

/// The boundaries of one outbox message's delivery, in order. Stopped at `deliver.sent` (the
/// relay said `250`, or the endpoint 2xx, and nothing is recorded yet), the message is sent
/// again once its lease expires: the one window in which a message can go out twice
/// (docs/notifications.md#at-least-once).
pub const DELIVER_BOUNDARIES: &[&str] = &[DELIVER_LEASED, DELIVER_SENT, DELIVER_RECORDED];

/// The message's sending lease is taken; nothing sent yet.
pub const DELIVER_LEASED: &str = "deliver.leased";
/// The relay or endpoint answered; the outcome not yet recorded.
pub const DELIVER_SENT: &str = "deliver.sent";
/// The outcome is recorded; the step not yet at its next message.
pub const DELIVER_RECORDED: &str = "deliver.recorded";

/// A step stopped at a failpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stopped at failpoint {0}")]
pub struct Injected(pub &'static str);

#[derive(Default)]
struct Inner {
    armed: AtomicBool,
    /// Point → hits left before it trips (1 = the next hit trips). Tripping disarms it.
    points: Mutex<HashMap<&'static str, u32>>,
}

/// A set of armed failpoints.
#[derive(Clone, Default)]
pub struct Failpoints {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Failpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failpoints")
            .field("armed", &self.inner.armed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Failpoints {
    /// Arms `point` to trip on its `nth` hit from now (1 = the next one), once.
    pub fn arm(&self, point: &'static str, nth: u32) {
        let mut points = self.lock();
        points.insert(point, nth.max(1));
        self.inner.armed.store(true, Ordering::SeqCst);
    }

    /// Disarms every point.
    pub fn clear(&self) {
        let mut points = self.lock();
        points.clear();
        self.inner.armed.store(false, Ordering::SeqCst);
    }

    /// Whether `point` is still armed (it has not tripped yet).
    pub fn is_armed(&self, point: &str) -> bool {
        self.lock().contains_key(point)
    }

    /// Passes `point`: `Err` when it trips.
    pub fn hit(&self, point: &'static str) -> Result<(), Injected> {
        if !self.inner.armed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut points = self.lock();
        let Some(left) = points.get_mut(point) else {
            return Ok(());
        };
        if *left > 1 {
            *left -= 1;
            return Ok(());
        }
        points.remove(point);
        if points.is_empty() {
            self.inner.armed.store(false, Ordering::SeqCst);
        }
        tracing::warn!(point, "failpoint tripped");
        Err(Injected(point))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, u32>> {
        self.inner
            .points
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_the_nth_hit_once() {
        let f = Failpoints::default();
        assert_eq!(f.hit(FETCH_STARTED), Ok(()));
        f.arm(FETCH_STARTED, 3);
        assert_eq!(f.hit(FETCH_STARTED), Ok(()));
        assert_eq!(f.hit(FETCH_WINDOW_RECEIVED), Ok(()));
        assert_eq!(f.hit(FETCH_STARTED), Ok(()));
        assert!(f.is_armed(FETCH_STARTED));
        assert_eq!(f.hit(FETCH_STARTED), Err(Injected(FETCH_STARTED)));
        assert!(!f.is_armed(FETCH_STARTED));
        assert_eq!(f.hit(FETCH_STARTED), Ok(()));
    }

    #[test]
    fn clones_share_points_and_clear_disarms() {
        let f = Failpoints::default();
        let g = f.clone();
        f.arm(COMMIT_RECORDS_WRITTEN, 1);
        f.clear();
        assert_eq!(g.hit(COMMIT_RECORDS_WRITTEN), Ok(()));
        f.arm(COMMIT_RECORDS_WRITTEN, 1);
        assert_eq!(
            g.hit(COMMIT_RECORDS_WRITTEN),
            Err(Injected(COMMIT_RECORDS_WRITTEN))
        );
    }
}
