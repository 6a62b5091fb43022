//! A token bucket per partner, shared by every connection of that partner in this process, so
//! a thousand users syncing at once still respect the partner's agreed request rate
//! (docs/transfers.md#rate-limits).
//!
//! Waiters reserve their token before sleeping (the count may go negative), so they are served
//! in arrival order and the lock is never held across an await. A cancelled waiter's token is
//! not returned: the bucket errs on the side of sending less.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use tokio::time::Instant;

/// An async token bucket: `burst` requests at once, then `rate` per second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available at `updated`; negative when waiters have reserved future tokens.
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A full bucket. `rate` must be finite and positive, `burst` at least 1 (both are
    /// clamped into range, so a bad value cannot disable limiting or panic).
    pub fn new(rate: f64, burst: u32) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }),
        }
    }

    /// The bucket a partner gets for `requests_per_second`: one second's worth of burst.
    pub fn for_rate(rate: f64) -> Self {
        let burst = if rate.is_finite() { rate.ceil() } else { 1.0 };
        Self::new(rate, burst.clamp(1.0, f64::from(u32::MAX)) as u32)
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits until one request may be sent, and takes its token.
    pub async fn acquire(&self) {
        let wait = {
            let mut bucket = lock(&self.bucket);
            let now = Instant::now();
            let refill = now.duration_since(bucket.updated).as_secs_f64() * self.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.burst);
            bucket.updated = now;
            bucket.tokens -= 1.0;
            (bucket.tokens < 0.0).then(|| {
                Duration::try_from_secs_f64(-bucket.tokens / self.rate).unwrap_or(Duration::MAX)
            })
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The process-wide bucket of partner `name`: every `DataClient` built for the same partner
/// with the same rate shares it. A changed rate (a reconfigured partner) starts a new bucket.
pub(crate) fn shared(name: &str, rate: f64) -> Arc<RateLimiter> {
    static LIMITERS: OnceLock<Mutex<HashMap<String, Arc<RateLimiter>>>> = OnceLock::new();
    let mut limiters = lock(LIMITERS.get_or_init(Default::default));
    if let Some(limiter) = limiters.get(name)
        && limiter.rate == rate
    {
        return Arc::clone(limiter);
    }
    let limiter = Arc::new(RateLimiter::for_rate(rate));
    limiters.insert(name.to_owned(), Arc::clone(&limiter));
    limiter
}

/// Every critical section leaves the state consistent, so poisoning is recovered from.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let limiter = RateLimiter::new(4.0, 2);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..8 {
            limiter.acquire().await;
        }
        // 8 more tokens at 4 per second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2100), "{elapsed:?}");
    }

    #[test]
    fn shared_per_partner_and_rate() {
        let a = shared("rate-test-partner", 5.0);
        let b = shared("rate-test-partner", 5.0);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &shared("rate-test-other", 5.0)));
        assert!(!Arc::ptr_eq(&a, &shared("rate-test-partner", 6.0)));
    }

    #[test]
    fn bad_rates_are_clamped() {
        assert_eq!(RateLimiter::new(f64::NAN, 0).rate(), 1.0);
        assert_eq!(RateLimiter::for_rate(0.5).burst, 1.0);
        assert_eq!(RateLimiter::for_rate(10.0).burst, 10.0);
    }
}
