//! EMAIL / em: trim, lowercase (Meta's documented rule), after Unicode NFC.
//!
//! Rejected as not plausibly an address: no `@`, an empty local part or domain, whitespace
//! inside. We deliberately do not require a dot in the domain or validate further: Meta's
//! rule is only trim + lowercase, and a stricter check than Meta's would lose matches.

use super::Rejection;
use super::text::lower_nfc;

/// `s` is already trimmed and non-empty.
pub(super) fn normalize_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let lower = lower_nfc(s);
    let Some(at) = lower.rfind('@') else {
        return Err(Rejection::Invalid("no @"));
    };
    if at == 0 {
        return Err(Rejection::Invalid("empty local part"));
    }
    if at + 1 == lower.len() {
        return Err(Rejection::Invalid("empty domain"));
    }
    if lower.chars().any(char::is_whitespace) {
        return Err(Rejection::Invalid("inner whitespace"));
    }
    out.push_str(&lower);
    Ok(())
}
