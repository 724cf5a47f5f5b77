//! `cdp.facebook_token_checks` (the last check of each token, by variable name, never the token)
//! and the `token warning: …` line of the systems' error_log.
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::configuration::named_tokens::GLOBAL;
use crate::meta::TokenInfo;
use crate::tokens::Assessment;

/// The last check of a token, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    pub checked_at: DateTime<Utc>,
    pub is_valid: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub warning: Option<String>,
}

/// Every token variable in use: [`GLOBAL`] (the event pump's and every system's without a
/// `token_ref`), and each active system's `token_ref`.
pub async fn in_use(client: &impl GenericClient) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT $1::text UNION
             SELECT DISTINCT coalesce(token_ref, $1) FROM cdp.facebook_configurations
              WHERE is_active IS TRUE
             ORDER BY 1",
            &[&GLOBAL],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Stores a check and rewrites the token warning line of every system using the token.
pub async fn record(
    client: &impl GenericClient,
    variable: &str,
    fingerprint: &str,
    info: &TokenInfo,
    verdict: &Assessment,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO cdp.facebook_token_checks
                    (token_ref, fingerprint, checked_at, is_valid, expires_at, scopes, warning)
             VALUES ($1, $2, now(), $3, $4, $5, $6)
             ON CONFLICT (token_ref) DO UPDATE
                SET fingerprint = EXCLUDED.fingerprint, checked_at = EXCLUDED.checked_at,
                    is_valid = EXCLUDED.is_valid, expires_at = EXCLUDED.expires_at,
                    scopes = EXCLUDED.scopes, warning = EXCLUDED.warning",
            &[
                &variable,
                &fingerprint,
                &verdict.refused.is_none(),
                &info.expires_at,
                &info.scopes,
                &verdict.warning,
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE cdp.facebook_configurations
                SET error_log = cdp.with_token_warning(error_log, token_ref)
              WHERE coalesce(token_ref, $2) = $1
                AND error_log IS DISTINCT FROM cdp.with_token_warning(error_log, token_ref)",
            &[&variable, &GLOBAL],
        )
        .await
}

/// The last check of the token in `variable`, if it was of the value whose fingerprint is given
/// (a check of another value, before a rotation or on another replica, says nothing about it).
pub async fn last_check(
    client: &impl GenericClient,
    variable: &str,
    fingerprint: &str,
) -> Result<Option<LastCheck>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT checked_at, is_valid, expires_at, warning FROM cdp.facebook_token_checks
              WHERE token_ref = $1 AND fingerprint = $2",
            &[&variable, &fingerprint],
        )
        .await?;
    Ok(row.map(|r| LastCheck {
        checked_at: r.get(0),
        is_valid: r.get(1),
        expires_at: r.get(2),
        warning: r.get(3),
    }))
}

impl LastCheck {
    /// Why a system using this token must fail at `now` without calling Meta, if it must: the
    /// check found the token refused, or the expiry it reported has passed since.
    pub fn refusal(&self, variable: &str, now: DateTime<Utc>) -> Option<String> {
        if !self.is_valid {
            return Some(
                self.warning
                    .clone()
                    .unwrap_or_else(|| crate::tokens::expired(variable, self.expires_at)),
            );
        }
        self.expires_at
            .filter(|at| *at <= now)
            .map(|at| crate::tokens::expired(variable, Some(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_refuses_when_it_found_the_token_refused_or_its_expiry_has_passed() {
        let now = Utc::now();
        let check = LastCheck {
            checked_at: now,
            is_valid: true,
            expires_at: Some(now + chrono::Duration::days(3)),
            warning: Some("expires soon".into()),
        };
        assert_eq!(check.refusal("FACEBOOK_ACCESS_TOKEN", now), None);
        let later = now + chrono::Duration::days(4);
        assert!(
            check
                .refusal("FACEBOOK_ACCESS_TOKEN", later)
                .unwrap()
                .contains("FACEBOOK_ACCESS_TOKEN has expired")
        );
        let refused = LastCheck {
            is_valid: false,
            warning: Some("the access token in X is no longer valid".into()),
            ..check
        };
        assert_eq!(
            refused.refusal("X", now).as_deref(),
            Some("the access token in X is no longer valid")
        );
    }
}
