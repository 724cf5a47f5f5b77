//! What a `debug_token` answer means for the systems using the token. Pure: no I/O, `now` given.
use chrono::{DateTime, Duration, Utc};

use crate::meta::TokenInfo;

/// A token expiring within this many days is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 7;
/// The permission audience uploads need.
pub const REQUIRED_SCOPE: &str = "ads_management";

const RENEW: &str = "create a new system-user token and set the variable";

/// The verdict on one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The token cannot be used (expired, revoked): the systems using it fail at once with this.
    pub refused: Option<String>,
    /// What an operator must act on, in plain words (the refusal itself when refused).
    pub warning: Option<String>,
}

/// The token in `variable`, as `info` describes it at `now`.
pub fn assess(variable: &str, info: &TokenInfo, now: DateTime<Utc>) -> Assessment {
    if info.is_expired(now) {
        let refused = expired(variable, info.expires_at);
        return Assessment {
            warning: Some(refused.clone()),
            refused: Some(refused),
        };
    }
    if !info.is_valid {
        let why = info
            .error
            .as_ref()
            .map(|e| format!(" (Meta: {})", e.message))
            .unwrap_or_default();
        let refused = format!("the access token in {variable} is no longer valid{why}; {RENEW}");
        return Assessment {
            warning: Some(refused.clone()),
            refused: Some(refused),
        };
    }
    let mut warnings = Vec::new();
    if let Some(at) = info.expires_at
        && at - now <= Duration::days(EXPIRY_WARNING_DAYS)
    {
        let days = (at - now).num_days();
        let within = match days {
            0 => "within a day".to_string(),
            1 => "in 1 day".to_string(),
            n => format!("in {n} days"),
        };
        warnings.push(format!(
            "the access token in {variable} expires on {} ({within}); {RENEW} before then",
            at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    if !info.scopes.iter().any(|s| s == REQUIRED_SCOPE) {
        warnings.push(format!(
            "the access token in {variable} lacks the {REQUIRED_SCOPE} permission, which audience \
             uploads need; give the system user that permission and {RENEW}"
        ));
    }
    Assessment {
        refused: None,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    }
}

/// "the access token in X has expired (on …); create …".
pub fn expired(variable: &str, at: Option<DateTime<Utc>>) -> String {
    let on = at
        .map(|t| format!(" (on {})", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    format!("the access token in {variable} has expired{on}; {RENEW}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TokenError;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn info(expires_in: Option<Duration>, scopes: &[&str]) -> TokenInfo {
        TokenInfo {
            is_valid: true,
            expires_at: expires_in.map(|d| now() + d),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            error: None,
        }
    }

    const FULL: [&str; 2] = ["ads_management", "ads_read"];
    const VAR: &str = "FACEBOOK_ACCESS_TOKEN_AGENCY2";

    #[test]
    fn a_never_expiring_token_with_ads_management_needs_nothing() {
        let a = assess(VAR, &info(None, &FULL), now());
        assert_eq!(
            a,
            Assessment {
                refused: None,
                warning: None
            }
        );
        let later = assess(VAR, &info(Some(Duration::days(8)), &FULL), now());
        assert_eq!(later.warning, None);
    }

    #[test]
    fn expiry_within_seven_days_is_a_warning_naming_the_variable_and_the_date() {
        let a = assess(
            VAR,
            &info(Some(Duration::days(5) + Duration::hours(1)), &FULL),
            now(),
        );
        assert_eq!(a.refused, None);
        let w = a.warning.unwrap();
        assert!(w.starts_with("the access token in FACEBOOK_ACCESS_TOKEN_AGENCY2 expires on 2026-12-08 07:00 UTC (in 5 days)"), "{w}");
        let edge = assess(VAR, &info(Some(Duration::days(7)), &FULL), now());
        assert!(edge.warning.is_some(), "exactly 7 days is within 7 days");
        let soon = assess(VAR, &info(Some(Duration::hours(3)), &FULL), now());
        assert!(soon.warning.unwrap().contains("within a day"));
    }

    #[test]
    fn a_missing_ads_management_scope_is_a_warning_and_both_warnings_are_kept() {
        let a = assess(VAR, &info(None, &["ads_read"]), now());
        assert!(
            a.warning
                .unwrap()
                .contains("lacks the ads_management permission")
        );
        let both = assess(VAR, &info(Some(Duration::days(1)), &["ads_read"]), now())
            .warning
            .unwrap();
        assert!(
            both.contains("in 1 day") && both.contains("lacks"),
            "{both}"
        );
    }

    #[test]
    fn an_expired_or_revoked_token_is_refused_in_plain_words() {
        let mut past = info(Some(Duration::seconds(-10)), &FULL);
        let a = assess(VAR, &past, now());
        assert_eq!(
            a.refused.as_deref(),
            Some(
                "the access token in FACEBOOK_ACCESS_TOKEN_AGENCY2 has expired (on 2026-12-03 05:59 UTC); create a new system-user token and set the variable"
            )
        );
        assert_eq!(a.warning, a.refused);
        past.expires_at = None;
        past.is_valid = false;
        past.error = Some(TokenError {
            code: 190,
            subcode: Some(460),
            message: "The session has been invalidated".into(),
        });
        let revoked = assess(VAR, &past, now()).refused.unwrap();
        assert!(
            revoked.contains("is no longer valid (Meta: The session has been invalidated)"),
            "{revoked}"
        );
        past.error.as_mut().unwrap().subcode = Some(463);
        assert!(
            assess(VAR, &past, now())
                .refused
                .unwrap()
                .contains("has expired;")
        );
    }
}
