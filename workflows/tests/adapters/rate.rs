//! The per-partner token bucket: deterministic under paused time, and shared by every client
//! of one partner (checked with a lower bound only, which load cannot break).

use std::{sync::Arc, time::Instant as StdInstant};

use chrono::Duration;
use sandbox::Flavor;
use tokio::time::{Duration as TokioDuration, Instant};
use workflows::adapters::{DataClient, RateLimiter};

use crate::helpers::{FetchAll, TestSandbox, t0, unique_name};

#[tokio::test(start_paused = true)]
async fn n_requests_take_at_least_n_minus_burst_over_rate() {
    let limiter = RateLimiter::new(10.0, 5);
    let start = Instant::now();
    for _ in 0..25 {
        limiter.acquire().await;
    }
    let elapsed = start.elapsed();
    // (25 - 5) / 10 s; paused time makes the upper bound exact too.
    assert!(elapsed >= TokioDuration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < TokioDuration::from_millis(2050), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_waiters_share_the_bucket() {
    let limiter = Arc::new(RateLimiter::for_rate(4.0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                for _ in 0..5 {
                    limiter.acquire().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // 20 requests, burst 4, 4 per second.
    let elapsed = start.elapsed();
    assert!(elapsed >= TokioDuration::from_secs(4), "{elapsed:?}");
    assert!(elapsed < TokioDuration::from_millis(4050), "{elapsed:?}");
    // Idle time refills the bucket, but never beyond the burst.
    tokio::time::sleep(TokioDuration::from_secs(60)).await;
    let idle = Instant::now();
    for _ in 0..6 {
        limiter.acquire().await;
    }
    let elapsed = idle.elapsed();
    assert!(elapsed >= TokioDuration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < TokioDuration::from_millis(520), "{elapsed:?}");
}

/// Two clients built separately for the same partner draw from one bucket: 4 fetches of 5
/// Dexcom requests at 8 per second (burst 8) need at least (20 - 8) / 8 = 1.5 s of real time.
#[tokio::test]
async fn clients_of_one_partner_share_one_limiter() {
    let sb = TestSandbox::spawn().await;
    let token = sb.connect(Flavor::Cgm).await;
    let name = unique_name();
    let mut config = sb.config(Flavor::Cgm);
    config.requests_per_second = 8.0;
    let a = DataClient::new(&name, &config).unwrap();
    let b = DataClient::new(&name, &config).unwrap();
    let window = (t0() - Duration::hours(1), t0());
    let start = StdInstant::now();
    let fetch = |c: &DataClient| {
        let (c, token) = (c.clone(), token.clone());
        tokio::spawn(async move { c.fetch_all(&token, window.0, window.1, None).await })
    };
    let tasks = [fetch(&a), fetch(&b), fetch(&a.clone()), fetch(&b)];
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(sb.data_requests(Flavor::Cgm), 20);
}
