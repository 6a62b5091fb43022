//! The process's response budget (`workers.response_memory_bytes`; docs/partner-data.md#memory):
//! the bytes of partner responses whose records are in memory at once, over all partners and
//! transfers. A window's first response reserves its announced length (or its partner's cap
//! when it announces none) before its body is read, waiting while the budget is spent; the
//! window holds the reservation until its records are committed ([`WindowShare`]). The
//! window's later responses (the other record kinds, further pages) add to it only what is
//! free at once and go on regardless: a window that holds a share never waits, so waiting
//! cannot deadlock, and the overdraft is bounded by the few small responses that follow the
//! first.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB (the semaphore counts in `u32`).
const UNIT: usize = 1024;

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

    /// Adds `bytes` (at most the whole budget) to `share`: waiting while others hold the
    /// budget when `share` holds nothing yet, else only what is free now.
    pub(crate) async fn reserve(&self, bytes: usize, share: &mut WindowShare) {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        let semaphore = Arc::clone(&self.semaphore);
        let permit = if share.permits.is_empty() {
            semaphore.acquire_many_owned(units).await.ok()
        } else {
            semaphore.try_acquire_many_owned(units).ok()
        };
        share.permits.extend(permit);
    }
}

/// What one window holds of the budget; dropping it (after the window's commit) returns it.
#[derive(Debug, Default)]
#[must_use = "the window's share of the response budget is returned when this is dropped"]
pub struct WindowShare {
    permits: Vec<OwnedSemaphorePermit>,
}

impl WindowShare {
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
        let budget = ResponseBudget::new(4 * MIB);
        let mut big = WindowShare::default();
        budget.reserve(3 * MIB, &mut big).await;
        assert_eq!(big.bytes(), 3 * MIB);
        let mut other = WindowShare::default();
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            budget.reserve(2 * MIB, &mut other),
        );
        assert!(
            waiting.await.is_err(),
            "2 MiB must wait while 3 of 4 MiB are held"
        );
        // The holder's next response takes what is free and never waits.
        budget.reserve(2 * MIB, &mut big).await;
        assert_eq!(
            big.bytes(),
            3 * MIB,
            "2 MiB were not free: an overdraft, not a wait"
        );
        budget.reserve(MIB, &mut big).await;
        assert_eq!(big.bytes(), 4 * MIB);
        drop(big);
        let mut all = WindowShare::default();
        tokio::time::timeout(Duration::from_secs(5), budget.reserve(usize::MAX, &mut all))
            .await
            .expect("a reservation larger than the budget takes the whole budget");
        assert_eq!(all.bytes(), 4 * MIB);
    }
}
