//! Which failures are retried, and how long to wait between attempts.
//!
//! Meta signals throttling as HTTP 400 with a code in the body, so the status alone cannot
//! decide (vector's `RetryLogic` has the same shape): [`classify_graph`] decides on
//! `code`/`error_subcode`, never on the message. [`RetryPolicy`] is the backoff that `backon`
//! drives: exponential, full jitter, bounded by attempts and by total elapsed time.
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::configuration::MetaSettings;

/// Whether a failed call may succeed if made again unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Transient: throttling, Meta-side trouble, transport. Retried with backoff.
    Retry,
    /// Permanent until someone acts (token, permissions, terms, bad data). Fails at once.
    DontRetry,
}

/// Rate-limit codes: app (4), user (17), Pages BUC (32), application limit (341), API calls
/// (613), Marketing API business-use-case throttles (80000–80014).
pub fn is_throttle_code(code: i64, _subcode: Option<i64>) -> bool {
    matches!(code, 4 | 17 | 32 | 341 | 613 | 80_000..=80_014)
}

/// The decision table of DESIGN.md ("Meta Graph API facts") on `code`/`error_subcode`.
///
/// A code listed as permanent stays permanent even with `is_transient: true` (we decide on
/// codes; a token error is never fixed by waiting). `is_transient` and an HTTP 5xx promote only
/// codes this table does not know; any other unknown code fails at once rather than hammering.
pub fn classify_graph(
    code: i64,
    subcode: Option<i64>,
    is_transient: bool,
    http_status: u16,
) -> RetryClass {
    use RetryClass::{DontRetry, Retry};
    match code {
        // 1 unknown ("possibly temporary"), 2 service, 368 temporarily blocked for policy.
        1 | 2 | 368 => Retry,
        c if is_throttle_code(c, subcode) => Retry,
        // Custom audience update: busy (replace in progress) or "something went wrong".
        2650 => match subcode {
            Some(1_870_145 | 1_870_148) => Retry,
            _ => DontRetry,
        },
        // 100 invalid parameter (incl. 100/33, 100/1713230 flagged audience), 190 token,
        // 10 and 200–299 permissions, terms (1870034, 1870047, 1870090) and 270 dev-tier app,
        // 2635 deprecated version, 2654/2663/2664 create and terms, 2656 has lookalikes.
        100 | 190 | 10 | 200..=299 | 2635 | 2654 | 2656 | 2663 | 2664 => DontRetry,
        _ if is_transient || http_status >= 500 => Retry,
        _ => DontRetry,
    }
}

/// An error status without Meta's JSON: 5xx (proxy, gateway), 429 and 408 are transient.
pub fn classify_http_status(status: u16) -> RetryClass {
    if status >= 500 || status == 429 || status == 408 {
        RetryClass::Retry
    } else {
        RetryClass::DontRetry
    }
}

/// Backoff settings, from `MetaSettings`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included (so `max_attempts - 1` retries).
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    pub fn from_settings(s: &MetaSettings) -> Self {
        Self {
            max_attempts: s.retry_max_attempts.max(1),
            min_delay: s.retry_min_delay(),
            max_delay: s.retry_max_delay().max(s.retry_min_delay()),
            max_elapsed: s.retry_max_elapsed(),
        }
    }

    /// A fresh backoff for one call: exponential from `min_delay` to `max_delay`, full jitter.
    pub fn backoff(&self) -> FullJitterBuilder {
        FullJitterBuilder(
            ExponentialBuilder::new()
                .with_factor(2.0)
                .with_min_delay(self.min_delay)
                .with_max_delay(self.max_delay)
                .with_max_times(self.max_attempts.saturating_sub(1) as usize),
        )
    }

    /// The wait before the next attempt: the backoff's, or longer when Meta told us to wait
    /// (`told`, already capped); `None` (give up) when attempts are used up or the wait would
    /// end past `max_elapsed`.
    pub fn next_delay(
        &self,
        backoff: Option<Duration>,
        told: Duration,
        elapsed: Duration,
    ) -> Option<Duration> {
        let delay = backoff?.max(told);
        (elapsed.saturating_add(delay) <= self.max_elapsed).then_some(delay)
    }
}

/// backon's own jitter adds up to one delay on top (`d..2d`); "full jitter" draws from `0..d`,
/// which spreads concurrent retries best. This wraps backon's exponential schedule to do that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FullJitterBuilder(ExponentialBuilder);

impl BackoffBuilder for FullJitterBuilder {
    type Backoff = FullJitter;

    fn build(self) -> FullJitter {
        FullJitter {
            inner: self.0.build(),
            rng: fastrand::Rng::new(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct FullJitter {
    inner: ExponentialBackoff,
    rng: fastrand::Rng,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.inner.next()?;
        Some(ceiling.mul_f64(self.rng.f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::RetryClass::{DontRetry, Retry};
    use super::*;

    #[test]
    fn every_documented_retryable_code_is_retried() {
        let cases: &[(i64, Option<i64>)] = &[
            (1, None),
            (1, Some(99)),
            (2, None),
            (4, None),
            (17, None),
            (17, Some(2_446_079)),
            (32, None),
            (341, None),
            (368, None),
            (613, None),
            (613, Some(1_487_742)),
            (613, Some(5_044_001)),
            (2650, Some(1_870_145)),
            (2650, Some(1_870_148)),
        ];
        for &(code, sub) in cases {
            assert_eq!(
                classify_graph(code, sub, false, 400),
                Retry,
                "{code}/{sub:?}"
            );
        }
        for code in 80_000..=80_014 {
            assert_eq!(classify_graph(code, None, false, 400), Retry, "{code}");
        }
        assert_eq!(classify_graph(80_004, Some(2_446_079), false, 400), Retry);
    }

    #[test]
    fn every_documented_permanent_code_fails_at_once() {
        let mut cases: Vec<(i64, Option<i64>)> = vec![
            (100, None),
            (100, Some(33)),
            (100, Some(1_713_230)),
            (10, None),
            (270, None),
            (294, None),
            (2635, None),
            (2654, None),
            (2656, None),
            (2663, None),
            (2664, None),
            (200, Some(1_870_034)),
            (200, Some(1_870_047)),
            (200, Some(1_870_090)),
            (2650, None),
            (2650, Some(1_870_147)),
            (2650, Some(1_870_158)),
            (2650, Some(1_870_159)),
            (2650, Some(1_870_144)),
        ];
        for sub in [
            None,
            Some(458),
            Some(459),
            Some(460),
            Some(463),
            Some(464),
            Some(467),
        ] {
            cases.push((190, sub));
        }
        cases.extend((200..=299).map(|c| (c, None)));
        for (code, sub) in cases {
            assert_eq!(
                classify_graph(code, sub, false, 400),
                DontRetry,
                "{code}/{sub:?}"
            );
        }
    }

    #[test]
    fn meta_codes_1_and_2_arrive_as_http_500_and_are_retried() {
        assert_eq!(classify_graph(1, None, false, 500), Retry);
        assert_eq!(classify_graph(2, None, true, 500), Retry);
    }

    #[test]
    fn is_transient_promotes_only_unknown_codes() {
        assert_eq!(classify_graph(21_009, None, true, 400), Retry);
        assert_eq!(classify_graph(21_009, None, false, 400), DontRetry);
        assert_eq!(classify_graph(190, Some(463), true, 400), DontRetry);
        assert_eq!(classify_graph(100, None, true, 400), DontRetry);
    }

    #[test]
    fn an_unknown_code_on_a_5xx_is_retried() {
        assert_eq!(classify_graph(5000, None, false, 503), Retry);
        assert_eq!(classify_graph(5000, None, false, 400), DontRetry);
    }

    #[test]
    fn plain_http_statuses_are_classified_by_status() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert_eq!(classify_http_status(s), Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert_eq!(classify_http_status(s), DontRetry, "{s}");
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_backoff_is_full_jitter_under_an_exponential_ceiling_and_counts_retries() {
        for _ in 0..200 {
            let delays: Vec<Duration> = policy().backoff().build().collect();
            assert_eq!(delays.len(), 3, "4 attempts = 3 retries");
            let ceilings = [500, 1000, 2000].map(Duration::from_millis);
            for (d, c) in delays.iter().zip(ceilings) {
                assert!(*d <= c, "{d:?} > {c:?}");
            }
        }
        // Full jitter reaches well below the ceiling (not the `d..2d` of backon's jitter).
        let lows = (0..200)
            .filter_map(|_| policy().backoff().build().next())
            .filter(|d| *d < Duration::from_millis(250))
            .count();
        assert!(lows > 0);
    }

    #[test]
    fn a_single_attempt_policy_never_retries() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(p.backoff().build().next(), None);
    }

    #[test]
    fn a_told_wait_lengthens_the_delay_within_the_elapsed_budget() {
        let p = policy();
        let s = Duration::from_secs;
        assert_eq!(p.next_delay(Some(s(1)), s(30), s(0)), Some(s(30)));
        assert_eq!(p.next_delay(Some(s(1)), s(0), s(0)), Some(s(1)));
        assert_eq!(p.next_delay(None, s(30), s(0)), None, "attempts used up");
        assert_eq!(
            p.next_delay(Some(s(1)), s(30), s(31)),
            None,
            "past max elapsed"
        );
    }

    #[test]
    fn a_told_wait_past_durations_range_gives_up_instead_of_overflowing() {
        let p = policy();
        assert_eq!(
            p.next_delay(
                Some(Duration::from_secs(1)),
                Duration::MAX,
                Duration::from_secs(5)
            ),
            None
        );
    }
}
