//! Rate budget: read Meta's usage headers and hold the next call back when Meta is near its limit.
//!
//! Meta reports usage on every answer (`X-Business-Use-Case-Usage`, `X-App-Usage`,
//! `X-Ad-Account-Usage`) and, when over, how long until access returns
//! (`estimated_time_to_regain_access`, minutes) or `Retry-After` (seconds). Calling again before
//! then only extends the block, so [`Throttle`] remembers a "not before" instant per ad account
//! (or pixel) and one for the whole app, and every call waits for it first.
//!
//! Near the limit means any reported percentage at or above [`NEAR_LIMIT_PCT`]; without a told
//! time that pauses the key for [`NEAR_LIMIT_PAUSE`] (one Marketing API block for a Full-access
//! app is 60 s). All waits are capped by `throttle_max_wait`.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use tokio::time::Instant;

/// A usage percentage at or above this is "near the limit" (Meta blocks at 100).
pub const NEAR_LIMIT_PCT: f64 = 95.0;
/// How long a key pauses when near the limit and Meta gave no time.
pub const NEAR_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// The longest wait one answer can ask for, whatever its headers say (a huge or malformed
/// number is clamped to it); `throttle_max_wait` caps every wait further.
pub const MAX_TOLD_WAIT: Duration = Duration::from_secs(24 * 3600);

const BUC_HEADER: &str = "x-business-use-case-usage";
const APP_HEADER: &str = "x-app-usage";
const AD_ACCOUNT_HEADER: &str = "x-ad-account-usage";

/// What one answer's headers ask of later calls (uncapped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advice {
    /// Wait before the next call for the ad account (or pixel) of this call.
    pub key_wait: Option<Duration>,
    /// Wait before the next call of this app, whatever the ad account (`X-App-Usage`).
    pub app_wait: Option<Duration>,
}

/// Reads the usage headers and `Retry-After`; a header that does not parse is ignored.
pub fn advice(headers: &HeaderMap) -> Advice {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let json = |name: &str| text(name).and_then(|v| serde_json::from_str::<Value>(v).ok());

    let mut key_wait = None;
    if let Some(buc) = json(BUC_HEADER) {
        // Keyed by business-object id (the ad account for audiences); the header describes the
        // objects this call touched, so every entry counts for this call's key.
        for entry in buc_entries(&buc) {
            let regain_min = number(entry.get("estimated_time_to_regain_access")).unwrap_or(0.0);
            if regain_min > 0.0 {
                key_wait = key_wait.max(Some(told_secs(regain_min * 60.0)));
            } else if near_limit(entry, &["call_count", "total_cputime", "total_time"]) {
                key_wait = key_wait.max(Some(NEAR_LIMIT_PAUSE));
            }
        }
    }
    if let Some(acc) = json(AD_ACCOUNT_HEADER)
        && near_limit(&acc, &["acc_id_util_pct"])
    {
        let reset = number(acc.get("reset_time_duration")).unwrap_or(0.0);
        let wait = if reset > 0.0 {
            told_secs(reset)
        } else {
            NEAR_LIMIT_PAUSE
        };
        key_wait = key_wait.max(Some(wait));
    }
    // Only the delta-seconds form; an HTTP-date Retry-After is not used by Graph.
    if let Some(secs) = text(RETRY_AFTER.as_str()).and_then(|v| v.trim().parse::<u64>().ok())
        && secs > 0
    {
        key_wait = key_wait.max(Some(Duration::from_secs(secs).min(MAX_TOLD_WAIT)));
    }
    let app_wait = json(APP_HEADER)
        .filter(|app| near_limit(app, &["call_count", "total_cputime", "total_time"]))
        .map(|_| NEAR_LIMIT_PAUSE);
    Advice { key_wait, app_wait }
}

/// A told number of seconds as a wait, clamped to `0..=MAX_TOLD_WAIT` (never a panic: Duration's
/// float conversion panics on infinity, NaN and values past `u64::MAX` seconds).
fn told_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(MAX_TOLD_WAIT, |d| d.min(MAX_TOLD_WAIT))
}

fn buc_entries(buc: &Value) -> Vec<&Value> {
    let Some(map) = buc.as_object() else {
        return Vec::new();
    };
    map.values()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect(),
            obj @ Value::Object(_) => vec![obj],
            _ => Vec::new(),
        })
        .collect()
}

fn near_limit(obj: &Value, fields: &[&str]) -> bool {
    fields
        .iter()
        .filter_map(|f| number(obj.get(*f)))
        .any(|pct| pct >= NEAR_LIMIT_PCT)
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite() && *n >= 0.0)
}

/// The throttle key of an ad account: the bare number, as the usage headers key it
/// (`act_123` and `123` are the same account). Other ids (pixels) are used as they are.
pub fn key(id: &str) -> &str {
    id.strip_prefix("act_").unwrap_or(id)
}

/// Key under which app-wide waits (`X-App-Usage`) are kept; no Meta id is empty.
const APP_KEY: &str = "";

/// "Not before" instants per key, shared by every clone of the client.
///
/// Kept in the client (not in Postgres): a restart forgets them, and the first answer after it
/// tells us again. The map holds one entry per ad account or pixel that was told to wait, and
/// entries in the past are dropped when seen.
#[derive(Debug)]
pub struct Throttle {
    not_before: Mutex<HashMap<String, Instant>>,
    /// Cap for every wait (`throttle_max_wait`): Meta's estimate can be long or wrong.
    max_wait: Duration,
}

impl Throttle {
    pub fn new(max_wait: Duration) -> Self {
        Self {
            not_before: Mutex::new(HashMap::new()),
            max_wait,
        }
    }

    /// Records what an answer for `key` told us; never shortens a wait already recorded.
    pub fn note(&self, key: &str, advice: Advice) {
        let now = Instant::now();
        let mut map = self.lock();
        for (k, wait) in [(key, advice.key_wait), (APP_KEY, advice.app_wait)] {
            let Some(wait) = wait else { continue };
            let wait = wait.min(self.max_wait);
            // Past the clock's range: the longest wait an answer can ask for.
            let until = now.checked_add(wait).unwrap_or_else(|| now + MAX_TOLD_WAIT);
            let slot = map.entry(k.to_string()).or_insert(until);
            *slot = (*slot).max(until);
        }
    }

    /// How long a call for `key` must still wait (zero when it may go now).
    pub fn remaining(&self, key: &str) -> Duration {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, until| *until > now);
        [key, APP_KEY]
            .iter()
            .filter_map(|k| map.get(*k))
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    /// Waits until a call for `key` may go; returns how long it waited.
    pub async fn wait_turn(&self, key: &str) -> Duration {
        let start = Instant::now();
        loop {
            // Re-checked after each sleep: a concurrent answer may have extended the wait.
            let wait = self.remaining(key);
            if wait.is_zero() {
                return start.elapsed();
            }
            tracing::info!(
                throttle_key = key,
                wait_secs = wait.as_secs(),
                "waiting for Meta's rate limit before the next call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic elsewhere cannot leave the map inconsistent (one insert or retain at a time).
        self.not_before
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn quiet_headers_ask_for_nothing() {
        assert_eq!(advice(&HeaderMap::new()), Advice::default());
        let h = headers(&[
            (
                "x-business-use-case-usage",
                r#"{"542676646349772":[{"type":"custom_audience","call_count":32,"total_cputime":3,"total_time":7,"estimated_time_to_regain_access":0}]}"#,
            ),
            (
                "x-app-usage",
                r#"{"call_count":10,"total_cputime":1,"total_time":2}"#,
            ),
            (
                "x-ad-account-usage",
                r#"{"acc_id_util_pct":12.5,"reset_time_duration":0}"#,
            ),
        ]);
        assert_eq!(advice(&h), Advice::default());
    }

    #[test]
    fn estimated_time_to_regain_access_is_in_minutes() {
        let h = headers(&[(
            "x-business-use-case-usage",
            r#"{"123":[{"type":"custom_audience","call_count":100,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":2}]}"#,
        )]);
        assert_eq!(advice(&h).key_wait, Some(Duration::from_secs(120)));
    }

    #[test]
    fn usage_near_the_limit_pauses_the_key_without_a_told_time() {
        let h = headers(&[(
            "x-business-use-case-usage",
            r#"{"123":[{"type":"ads_management","call_count":96,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":0}]}"#,
        )]);
        assert_eq!(advice(&h).key_wait, Some(NEAR_LIMIT_PAUSE));
        let h = headers(&[(
            "x-business-use-case-usage",
            r#"{"123":[{"type":"ads_management","call_count":94,"total_cputime":1,"total_time":1}]}"#,
        )]);
        assert_eq!(advice(&h).key_wait, None);
    }

    #[test]
    fn the_longest_wait_of_several_entries_wins() {
        let h = headers(&[(
            "x-business-use-case-usage",
            r#"{"1":[{"call_count":99,"estimated_time_to_regain_access":0},{"call_count":100,"estimated_time_to_regain_access":5}],"2":{"total_time":"97"}}"#,
        )]);
        assert_eq!(advice(&h).key_wait, Some(Duration::from_secs(300)));
    }

    #[test]
    fn ad_account_usage_uses_its_reset_time_in_seconds() {
        let h = headers(&[(
            "x-ad-account-usage",
            r#"{"acc_id_util_pct":100,"reset_time_duration":45,"ads_api_access_tier":"standard_access"}"#,
        )]);
        assert_eq!(advice(&h).key_wait, Some(Duration::from_secs(45)));
        let h = headers(&[("x-ad-account-usage", r#"{"acc_id_util_pct":99}"#)]);
        assert_eq!(advice(&h).key_wait, Some(NEAR_LIMIT_PAUSE));
    }

    #[test]
    fn app_usage_near_the_limit_pauses_the_whole_app() {
        let h = headers(&[(
            "x-app-usage",
            r#"{"call_count":95,"total_cputime":0,"total_time":0}"#,
        )]);
        assert_eq!(
            advice(&h),
            Advice {
                key_wait: None,
                app_wait: Some(NEAR_LIMIT_PAUSE)
            }
        );
    }

    #[test]
    fn retry_after_seconds_are_honoured_and_dates_ignored() {
        let h = headers(&[("retry-after", "30")]);
        assert_eq!(advice(&h).key_wait, Some(Duration::from_secs(30)));
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(advice(&h).key_wait, None);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        let h = headers(&[
            ("x-business-use-case-usage", "not json"),
            ("x-app-usage", "[1,2]"),
            ("x-ad-account-usage", r#"{"acc_id_util_pct":"lots"}"#),
        ]);
        assert_eq!(advice(&h), Advice::default());
    }

    /// Every usage header at once, each carrying `value` where a number belongs.
    fn every_header_with(value: &str) -> HeaderMap {
        headers(&[
            (
                "x-business-use-case-usage",
                &format!(
                    r#"{{"1":[{{"call_count":{value},"total_cputime":{value},"total_time":{value},"estimated_time_to_regain_access":{value}}}]}}"#
                ),
            ),
            (
                "x-app-usage",
                &format!(
                    r#"{{"call_count":{value},"total_cputime":{value},"total_time":{value}}}"#
                ),
            ),
            (
                "x-ad-account-usage",
                &format!(r#"{{"acc_id_util_pct":{value},"reset_time_duration":{value}}}"#),
            ),
        ])
    }

    #[test]
    fn a_huge_float_in_the_usage_headers_is_clamped_to_the_longest_told_wait() {
        for huge in ["1e308", "1.7976931348623157e308", r#""1e308""#, "1e20"] {
            let a = advice(&every_header_with(huge));
            assert_eq!(a.key_wait, Some(MAX_TOLD_WAIT), "{huge}");
            assert_eq!(a.app_wait, Some(NEAR_LIMIT_PAUSE), "{huge}");
        }
    }

    #[test]
    fn an_integer_past_u64_in_the_usage_headers_is_clamped_to_the_longest_told_wait() {
        let a = advice(&every_header_with("99999999999999999999"));
        assert_eq!(a.key_wait, Some(MAX_TOLD_WAIT));
        let a = advice(&headers(&[("retry-after", "18446744073709551615")]));
        assert_eq!(a.key_wait, Some(MAX_TOLD_WAIT));
        let a = advice(&headers(&[("retry-after", "99999999999999999999")]));
        assert_eq!(a.key_wait, None, "not a u64: ignored");
    }

    #[test]
    fn negative_nan_and_infinite_usage_values_ask_for_nothing() {
        for odd in ["-1", "-1e308", r#""NaN""#, r#""inf""#, r#""-inf""#, "0"] {
            assert_eq!(advice(&every_header_with(odd)), Advice::default(), "{odd}");
        }
    }

    #[test]
    fn deeply_nested_usage_headers_are_ignored() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let nested_entry = format!(r#"{{"1":{deep}}}"#);
        let h = headers(&[
            ("x-business-use-case-usage", &nested_entry),
            ("x-app-usage", &deep),
            (
                "x-ad-account-usage",
                &format!(r#"{{"acc_id_util_pct":{deep}}}"#),
            ),
        ]);
        assert_eq!(advice(&h), Advice::default());
    }

    #[test]
    fn a_one_megabyte_usage_header_is_read_and_a_huge_wait_in_it_clamped() {
        let mut entries: Vec<String> = (0..10_000)
            .map(|i| format!(r#""{i}":[{{"call_count":1,"estimated_time_to_regain_access":0}}]"#))
            .collect();
        entries.push(r#""x":[{"call_count":100,"estimated_time_to_regain_access":1e308}]"#.into());
        let padding = (1 << 20) - entries.iter().map(|e| e.len() + 1).sum::<usize>();
        entries.push(format!(r#""pad":"{}""#, "a".repeat(padding)));
        let big = format!("{{{}}}", entries.join(","));
        assert!(big.len() > 1 << 20, "{}", big.len());
        let h = headers(&[("x-business-use-case-usage", &big)]);
        assert_eq!(advice(&h).key_wait, Some(MAX_TOLD_WAIT));
        let junk = "9".repeat(1 << 20);
        let h = headers(&[("x-business-use-case-usage", &junk), ("x-app-usage", &junk)]);
        assert_eq!(advice(&h), Advice::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_clocks_range_is_noted_without_overflow() {
        let t = Throttle::new(Duration::MAX);
        t.note(
            "1",
            Advice {
                key_wait: Some(Duration::MAX),
                app_wait: Some(Duration::MAX),
            },
        );
        assert_eq!(t.remaining("1"), MAX_TOLD_WAIT);
        assert_eq!(t.remaining("2"), MAX_TOLD_WAIT, "the app-wide wait too");
    }

    #[test]
    fn ad_account_ids_key_on_the_bare_number() {
        assert_eq!(key("act_123"), "123");
        assert_eq!(key("123"), "123");
        assert_eq!(key("1234567890"), "1234567890");
    }

    #[tokio::test(start_paused = true)]
    async fn a_noted_wait_holds_back_only_its_key_and_is_capped() {
        let t = Throttle::new(Duration::from_secs(100));
        t.note(
            "123",
            Advice {
                key_wait: Some(Duration::from_secs(500)),
                app_wait: None,
            },
        );
        assert_eq!(t.remaining("123"), Duration::from_secs(100));
        assert_eq!(t.remaining("456"), Duration::ZERO);
        let waited = t.wait_turn("123").await;
        assert_eq!(waited, Duration::from_secs(100));
        assert_eq!(t.remaining("123"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_wide_wait_holds_back_every_key_and_waits_never_shrink() {
        let t = Throttle::new(Duration::from_secs(900));
        let s = |n| Some(Duration::from_secs(n));
        t.note(
            "1",
            Advice {
                key_wait: s(120),
                app_wait: None,
            },
        );
        t.note(
            "1",
            Advice {
                key_wait: s(10),
                app_wait: None,
            },
        );
        assert_eq!(t.remaining("1"), Duration::from_secs(120));
        t.note(
            "1",
            Advice {
                key_wait: None,
                app_wait: s(60),
            },
        );
        assert_eq!(t.remaining("2"), Duration::from_secs(60));
    }
}
