//! The token variables: `FACEBOOK_ACCESS_TOKEN` and `FACEBOOK_ACCESS_TOKEN_*`, read once with the
//! settings, and the `token_ref` names that point at them (see [`crate::tokens`]).
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::secret::{ExposeSecret, SecretString};

/// The worker's own token variable; `token_ref` NULL means this one.
pub const GLOBAL: &str = "FACEBOOK_ACCESS_TOKEN";

/// Whether `name` may be a `token_ref`: `FACEBOOK_ACCESS_TOKEN` or `FACEBOOK_ACCESS_TOKEN_…`
/// (upper-case letters, digits, `_`), as the table's CHECK says. Only such variables are ever
/// read as tokens, so no row can make the worker send another secret of its environment to Meta.
pub fn is_token_variable(name: &str) -> bool {
    name == GLOBAL
        || name
            .strip_prefix("FACEBOOK_ACCESS_TOKEN_")
            .is_some_and(|rest| {
                !rest.is_empty()
                    && name.len() <= 100
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
}

/// The variable a `token_ref` names (NULL or blank: [`GLOBAL`]).
pub fn variable(token_ref: Option<&str>) -> &str {
    token_ref
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(GLOBAL)
}

/// The `FACEBOOK_ACCESS_TOKEN_*` variables of the environment, read once with the settings.
/// Debug output shows their names only.
#[derive(Clone, Default)]
pub struct NamedTokens(BTreeMap<String, SecretString>);

impl fmt::Debug for NamedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why a `token_ref` gives no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error(
        "token_ref names {0}, which is not set in the worker's environment; set it to the system-user token of this system's business"
    )]
    NotSet(String),
    #[error(
        "token_ref names {0}, which is empty in the worker's environment; set it to the system-user token of this system's business"
    )]
    Empty(String),
}

impl NamedTokens {
    /// Every variable of `env` that [`is_token_variable`] accepts, but [`GLOBAL`] (in the settings).
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        NamedTokens(
            env.iter()
                .filter(|(k, _)| k.as_str() != GLOBAL && is_token_variable(k))
                .map(|(k, v)| (k.clone(), SecretString::from(v.trim().to_string())))
                .collect(),
        )
    }

    /// The token in `name`; `None` for [`GLOBAL`] (the worker's own client has it).
    pub fn resolve(&self, name: &str) -> Result<Option<SecretString>, Unresolved> {
        if name == GLOBAL {
            return Ok(None);
        }
        match self.0.get(name) {
            None => Err(Unresolved::NotSet(name.to_string())),
            Some(t) if t.expose_secret().is_empty() => Err(Unresolved::Empty(name.to_string())),
            Some(t) => Ok(Some(t.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_facebook_access_token_names_are_token_variables() {
        for ok in [
            "FACEBOOK_ACCESS_TOKEN",
            "FACEBOOK_ACCESS_TOKEN_AGENCY2",
            "FACEBOOK_ACCESS_TOKEN_A_1",
        ] {
            assert!(is_token_variable(ok), "{ok}");
        }
        for bad in [
            "DATABASE_URL",
            "FACEBOOK_APP_SECRET",
            "FACEBOOK_ACCESS_TOKEN_",
            "FACEBOOK_ACCESS_TOKEN_agency",
            "FACEBOOK_ACCESS_TOKENX",
            "facebook_access_token",
        ] {
            assert!(!is_token_variable(bad), "{bad}");
        }
    }

    #[test]
    fn a_named_token_resolves_and_a_missing_or_empty_one_names_the_variable_only() {
        let env = HashMap::from([
            (
                "FACEBOOK_ACCESS_TOKEN_AGENCY2".to_string(),
                "EAAsecret2".to_string(),
            ),
            ("FACEBOOK_ACCESS_TOKEN_BLANK".to_string(), "  ".to_string()),
            ("FACEBOOK_ACCESS_TOKEN".to_string(), "EAAglobal".to_string()),
            (
                "DATABASE_URL".to_string(),
                "postgres://x:pw@h/db".to_string(),
            ),
        ]);
        let tokens = NamedTokens::from_env(&env);
        let shown = format!("{tokens:?}");
        assert!(shown.contains("FACEBOOK_ACCESS_TOKEN_AGENCY2"), "{shown}");
        assert!(
            !shown.contains("EAAsecret2") && !shown.contains("DATABASE_URL"),
            "{shown}"
        );
        let t = tokens
            .resolve("FACEBOOK_ACCESS_TOKEN_AGENCY2")
            .unwrap()
            .unwrap();
        assert_eq!(t.expose_secret(), "EAAsecret2");
        assert!(tokens.resolve(GLOBAL).unwrap().is_none());
        let missing = tokens.resolve("FACEBOOK_ACCESS_TOKEN_NOPE").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("FACEBOOK_ACCESS_TOKEN_NOPE, which is not set")
        );
        let blank = tokens.resolve("FACEBOOK_ACCESS_TOKEN_BLANK").unwrap_err();
        assert!(blank.to_string().contains("is empty"), "{blank}");
        assert_eq!(variable(None), GLOBAL);
        assert_eq!(variable(Some(" ")), GLOBAL);
    }
}
