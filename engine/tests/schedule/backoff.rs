//! Backoff: doubling, jittered between half and the full delay, capped, repeatable with a seed.

use std::time::Duration;

use engine::schedule::backoff;
use rand::{SeedableRng, rngs::StdRng};

#[test]
fn backoff_doubles_within_half_to_full_and_caps() {
    let (base, cap) = (
        Duration::from_secs(2 * 3600),
        Duration::from_secs(16 * 3600),
    );
    let mut rng = StdRng::seed_from_u64(9);
    for (attempt, hours) in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 16), (30, 16), (31, 16)] {
        let full = Duration::from_secs(hours * 3600);
        let samples: Vec<_> = (0..500)
            .map(|_| backoff(attempt, base, cap, &mut rng))
            .collect();
        assert!(
            samples.iter().all(|d| *d >= full / 2 && *d <= full),
            "attempt {attempt}"
        );
        // Jittered across the whole range, not pinned to one end.
        assert!(samples.iter().any(|d| *d < full * 6 / 10));
        assert!(samples.iter().any(|d| *d > full * 9 / 10));
    }
}

#[test]
fn backoff_is_repeatable_with_a_seed() {
    let run = || {
        let mut rng = StdRng::seed_from_u64(5);
        (1..8)
            .map(|a| {
                backoff(
                    a,
                    Duration::from_secs(30),
                    Duration::from_secs(600),
                    &mut rng,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
