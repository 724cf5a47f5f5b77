//! Per-system tokens by reference, and their lifecycle.
//!
//! A system's `token_ref` names the environment variable holding its Meta token
//! (`FACEBOOK_ACCESS_TOKEN_AGENCY2`); NULL means `FACEBOOK_ACCESS_TOKEN`. Tables hold names only,
//! never a token. At start and then daily, every token in use is checked with Meta's
//! `debug_token`; an expiry within 7 days or a missing `ads_management` scope is a warning (in
//! `cdp.facebook_token_checks`, a `token warning: …` line of the error_log of the systems using
//! it, and metrics), and an expired or revoked token makes its systems fail at once, without
//! calling Meta.
//!
//! * `assess.rs` — what a check's answer means (pure).
//! * [`crate::db::token_checks`] — the checks table and the error_log lines.
//! * [`crate::sync::tokens`] — checking every token in use, daily; the client a system syncs with.
//! * [`crate::configuration::named_tokens`] — the token variables and `token_ref` names.
mod assess;

use sha2::{Digest, Sha256};

use crate::secret::{ExposeSecret, SecretString};

pub use assess::{Assessment, EXPIRY_WARNING_DAYS, REQUIRED_SCOPE, assess, expired};

/// A short fingerprint of a token: the first 8 hex digits of its SHA-256. Tells whether a stored
/// check was of the value this worker holds; says nothing usable about the token.
pub fn fingerprint(token: &SecretString) -> String {
    const_hex::encode(&Sha256::digest(token.expose_secret().as_bytes())[..4])
}
