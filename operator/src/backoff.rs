//! Exponential backoff for failed reconciles: a failing set is retried soon at first, then less
//! and less often, instead of hammering the API server at a fixed rate.

use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_millis(500);
/// Longest delay between retries.
pub const MAX: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 for the first failure): `BASE * 2^(failures-1)`,
/// capped at `MAX`, plus up to 10% of jitter taken from `jitter` (any number; the caller passes
/// something that differs between objects, so that many sets failing together spread out).
pub fn delay(failures: u32, jitter: u64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = BASE.saturating_mul(1u32 << exp).min(MAX);
    let spread = raw.as_millis() as u64 / 10;
    let extra = if spread == 0 { 0 } else { jitter % spread };
    (raw + Duration::from_millis(extra)).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_half_a_second_up_to_five_minutes() {
        let no_jitter: Vec<_> = (1..=12).map(|n| delay(n, 0).as_millis()).collect();
        assert_eq!(
            no_jitter,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000
            ]
        );
        assert_eq!(delay(u32::MAX, 7), MAX);
        let jittered = delay(3, 123_456);
        assert!(jittered >= delay(3, 0) && jittered < delay(3, 0) + Duration::from_millis(200));
    }
}
