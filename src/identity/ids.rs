//! EXTERN_ID, MADID and LOOKALIKE_VALUE: sent in clear.
//!
//! * EXTERN_ID / external_id: "use exactly the same format everywhere". We only trim: case and
//!   inner characters are the CRM's identity and must not change. Values with control
//!   characters (tabs, newlines) are rejected: they are broken data and would corrupt
//!   tab-separated tooling output. So are values over 1 KB.
//! * MADID: a mobile advertising id (Apple IDFA, Google GAID — both UUIDs), lowercase, with
//!   hyphens (Meta: "all lowercase, keep hyphens", never hashed). A 32-hex-digit UUID without
//!   hyphens is given its hyphens back; the all-zero id (ad tracking limited) and any other
//!   shape are rejected.
//! * LOOKALIKE_VALUE: a non-negative finite number, written as a plain decimal
//!   (`5.0` → `5`, `1e3` → `1000`, `0.0001` stays). Parsed as an `f64`, so at most ~17
//!   significant digits survive — more than any customer value needs. Thousands separators
//!   are rejected (`1,234` could mean 1.234 in Spanish locales).

use super::Rejection;

/// The longest EXTERN_ID taken, in bytes. Meta names no limit; CRM ids are short, and a value of
/// kilobytes is a field holding something else (a note, a JSON blob).
pub const MAX_EXTERN_ID_BYTES: usize = 1024;

/// `s` is already trimmed and non-empty.
pub(super) fn extern_id_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    if s.len() > MAX_EXTERN_ID_BYTES {
        return Err(Rejection::Invalid("longer than 1 KB"));
    }
    if s.chars().any(char::is_control) {
        return Err(Rejection::Invalid("contains control characters"));
    }
    out.push_str(s);
    Ok(())
}

/// `s` is already trimmed and non-empty.
pub(super) fn madid_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    let hyphens_ok = match s.len() {
        32 => true,
        36 => [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'),
        _ => false,
    };
    if !hyphens_ok || hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(Rejection::Invalid("not a device id"));
    }
    if hex.iter().all(|&b| b == b'0') {
        return Err(Rejection::Invalid("zeroed device id"));
    }
    for (i, &b) in hex.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(char::from(b.to_ascii_lowercase()));
    }
    Ok(())
}

/// `s` is already trimmed and non-empty.
pub(super) fn lookalike_value_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    // Rust's f64 parser also takes "inf", "NaN" and "infinity": only digits, one '.', an
    // exponent and a leading sign are allowed through.
    let plausible = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && s.bytes().any(|b| b.is_ascii_digit());
    let value: f64 = match s.parse() {
        Ok(v) if plausible => v,
        _ => return Err(Rejection::Invalid("not a number")),
    };
    if !value.is_finite() {
        return Err(Rejection::Invalid("not a number"));
    }
    if value < 0.0 {
        return Err(Rejection::Invalid("negative"));
    }
    if value == 0.0 {
        out.push('0'); // also for -0.0
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{value}");
    }
    Ok(())
}
