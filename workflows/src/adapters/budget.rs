//! The process's response budget (`workers.response_memory_bytes`; docs/partner-data.md#memory):
//! the memory that partner records take between their arrival and their window's commit, over
//! all partners and transfers. A response reserves [`EXPANSION`] times its announced length (or
//! its partner's cap when it announces none); the window holds its reservations until its
//! records are committed ([`WindowShare`]). Only a window's first response waits for room, and
//! it waits holding neither a reservation nor an open response (the caller drops the response
//! and asks again once the room is there); the window's later responses (the other record kinds,
//! further pages) take what is free at once and go on regardless. So waiting cannot deadlock
//! or time out a request, and the overdraft is bounded by the few responses that follow a
//! window's first.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB (the semaphore counts in `u32`).
const UNIT: usize = 1024;

/// Memory a window's records take per byte of response: each record waits for the commit as
/// its mapped datum, which carries the partner record verbatim plus the mapped fields, and the
/// commit prepares rows from it (BENCHMARKS.md, "Memory", measures ~4).
pub const EXPANSION: usize = 4;

/// Default total: 256 MiB.
pub const DEFAULT_RESPONSE_MEMORY_BYTES: usize = 256 * 1024 * 1024;

/// A shared budget; clones share it.
#[derive(Debug, Clone)]
pub struct ResponseBudget {
    units: u32,
    semaphore: Arc<Semaphore>,
}

impl ResponseBudget {
    /// A budget of `bytes` (at least 1 MiB).
    pub fn new(bytes: usize) -> Self {
        let units = u32::try_from(bytes.max(UNIT * UNIT) / UNIT).unwrap_or(u32::MAX / 2);
        Self {
            units,
            semaphore: Arc::new(Semaphore::new(units as usize)),
        }
    }

    /// The total, in bytes.
    pub fn total_bytes(&self) -> usize {
        self.units as usize * UNIT
    }

    fn units(&self, response_bytes: usize) -> u32 {
        u32::try_from(response_bytes.saturating_mul(EXPANSION).div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units)
    }

    /// Adds room for a response of `bytes` (at most the whole budget) to `share` if it is free
    /// now; `false` when it is not.
    pub(crate) fn try_reserve(&self, bytes: usize, share: &mut WindowShare) -> bool {
        match Arc::clone(&self.semaphore).try_acquire_many_owned(self.units(bytes)) {
            Ok(permit) => {
                share.permits.push(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Adds room for a response of `bytes` to `share`, waiting while others hold the budget.
    /// Only for a share that holds nothing yet (a holder that waits could deadlock).
    pub(crate) async fn reserve(&self, bytes: usize, share: &mut WindowShare) {
        debug_assert!(
            share.permits.is_empty(),
            "a window waits only for its first response"
        );
        let semaphore = Arc::clone(&self.semaphore);
        share
            .permits
            .extend(semaphore.acquire_many_owned(self.units(bytes)).await.ok());
    }
}

/// What one window holds of the budget; dropping it (after the window's commit) returns it.
#[derive(Debug, Default)]
#[must_use = "the window's share of the response budget is returned when this is dropped"]
pub struct WindowShare {
    permits: Vec<OwnedSemaphorePermit>,
}

impl WindowShare {
    /// Whether it holds nothing yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.permits.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permits.iter().map(|p| p.num_permits()).sum::<usize>() * UNIT
    }
}

impl Default for ResponseBudget {
    fn default() -> Self {
        Self::new(DEFAULT_RESPONSE_MEMORY_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_window_waits_for_room_once_and_never_while_holding_a_share() {
        const MIB: usize = 1 << 20;
        // Room for responses of 4 MiB in all (16 MiB of records).
        let budget = ResponseBudget::new(4 * MIB * EXPANSION);
        let mut big = WindowShare::default();
        assert!(budget.try_reserve(3 * MIB, &mut big));
        assert_eq!(big.bytes(), 3 * MIB * EXPANSION);
        let mut other = WindowShare::default();
        assert!(
            !budget.try_reserve(2 * MIB, &mut other),
            "2 MiB do not fit now"
        );
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            budget.reserve(2 * MIB, &mut other),
        );
        assert!(
            waiting.await.is_err(),
            "and a first response waits for them"
        );
        assert!(other.is_empty());
        // The holder's next response takes what is free, or goes on without: never waits.
        assert!(!budget.try_reserve(2 * MIB, &mut big));
        assert!(budget.try_reserve(MIB, &mut big));
        assert_eq!(big.bytes(), 4 * MIB * EXPANSION);
        drop(big);
        let mut all = WindowShare::default();
        tokio::time::timeout(Duration::from_secs(5), budget.reserve(usize::MAX, &mut all))
            .await
            .expect("a response larger than the budget takes the whole budget");
        assert_eq!(all.bytes(), 4 * MIB * EXPANSION);
    }
}
