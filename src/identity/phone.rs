//! PHONE / ph: E.164 digits without `+`.
//!
//! Meta: digits only, no leading zeros, must carry the country code; its own normalized examples
//! (`16505551212`, `15559876543`) are the country code and the national number, no `+`. We parse
//! with the `phonenumber` crate (libphonenumber's metadata) so that national prefixes are handled
//! per country (`020 7946 0958` in GB → `442079460958`, `+44 (0)20 7946 0958` → the same,
//! `011 …` dialled from the US, Argentina's `15` mobile prefix…).
//!
//! Where the country code comes from, in this order:
//!
//! 1. `+` or `00` in front: the number carries its own country code (zeros right after the
//!    `+` are dropped: `+0044 …` and `+001 …` are common typos of `+44`, `+1`).
//! 2. Bare digits that already form a *valid* international number (their leading digits are a
//!    country code, and libphonenumber accepts `+digits` as a number of that country, ranges
//!    included) are kept as they are, before any country is tried: `16505551212` stays itself
//!    under any default country, and normalizing our own output gives it back. National numbers
//!    rarely pass this by accident: `6505551212` would be `+65 05551212`, which is no number.
//! 3. Otherwise the digits are national: they take the row's own country (its COUNTRY value, or
//!    the event's), else the system's default country. One exception keeps normalization
//!    idempotent: a value of digits only that could also be an international number (a possible
//!    length, though not a valid number) stays international unless its national reading is a
//!    valid number. Our own output is such a value, so normalizing it again gives it back.
//! 4. With neither, a value of digits only (no formatting) of a plausible international length (a
//!    known country code in front, no leading zero, 8 to 15 digits or a length the code allows)
//!    is kept as the caller wrote it: the
//!    country code is taken to be there, as in Meta's examples. Anything else, a formatted
//!    national number like `(650) 555-1212` among them, is rejected ("no country code").
//!
//! * An international number of another country that is possible but not valid is refused when
//!   its digits, without `+`, are a valid national number of the row's (or system's) country:
//!   written as Meta wants it, it would be read as that other number.
//! * Formatting (spaces, `-`, `.`, `(`, `)`, `/`) and other symbols are removed, as Meta
//!   documents. A trailing extension (`ext. 12`, `x12`, `#12`) is dropped. Any other letter
//!   rejects the value ("contains letters"): `1-800-FLOWERS` is not a number we can match.
//! * The result of rules 1 and 3 must be a *possible* number: its national length is one of the
//!   lengths the numbering plan of its country code allows. There we deliberately do not check
//!   number ranges (`is_valid`): Meta's own examples use fictional 555 numbers, and a CRM number
//!   Meta can match must not be dropped by a stricter check than Meta's. Local-only lengths (a US
//!   number without its area code) are rejected: they cannot carry a country code.
//!
//! Speed: the parser is slow (regexes, all behind one global mutex-guarded cache), so digit
//! strings whose country needs no national-prefix handling, or only the stripping of a prefix
//! that a loop-free `national_prefix_for_parsing` pattern matches (Argentina's trunk `0`; the
//! pattern is compiled to a trie by `phone_pattern`), take a fast path that computes the same
//! result from the same metadata; property tests check both paths agree. A number the
//! metadata's transform rule rewrites (Argentina's mobile `15` after the area code) still goes
//! to the parser. Rule 2 asks the parser only about digits whose length is possible for the
//! country code they start with.

use std::borrow::Cow;

use super::Rejection;

mod fast;
mod plan;
mod region;
mod scan;

use fast::fast;
use plan::{is_possible, is_valid_number, leading_code};
pub(super) use region::{Region, region_of};
use scan::{Origin, scan};

const NO_COUNTRY_CODE: Rejection = Rejection::Invalid("no country code");
const UNKNOWN_COUNTRY_CODE: Rejection = Rejection::Invalid("unknown country code");
const NOT_POSSIBLE: Rejection = Rejection::Invalid("not a possible phone number");
const LETTERS: Rejection = Rejection::Invalid("contains letters");
const NO_DIGITS: Rejection = Rejection::Invalid("no digits");
/// See [`refuse_foreign_lookalike`].
const AMBIGUOUS: Rejection = Rejection::Invalid("looks like a national number");

/// Loads the phone metadata and builds the numbering plans now (see [`super::prepare`]).
pub(super) fn prepare() {
    plan::code_table();
}

fn push_e164(out: &mut String, code: u16, national: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{code}");
    out.push_str(national);
}

/// The slow path: the full parser.
fn slow(origin: Origin, digits: &str, region: Option<&Region>) -> Result<(u16, String), Rejection> {
    let parsed = match origin {
        Origin::International => {
            let mut plus = String::with_capacity(digits.len() + 1);
            plus.push('+');
            plus.push_str(digits);
            phonenumber::parse(None, &plus)
        }
        Origin::National => {
            let region = region.ok_or(NO_COUNTRY_CODE)?;
            phonenumber::parse(Some(region.id), digits)
        }
    };
    let number = parsed.map_err(|e| match e {
        phonenumber::ParseError::InvalidCountryCode => UNKNOWN_COUNTRY_CODE,
        _ => NOT_POSSIBLE,
    })?;
    Ok((number.code().value(), number.national().to_string()))
}

/// A number as its numbering plan reads it: the fast path when it applies, else the parser.
/// The national number must have a possible length.
fn by_plan<'d>(
    origin: Origin,
    digits: &'d str,
    region: Option<&Region>,
) -> Result<(u16, Cow<'d, str>), Rejection> {
    let (code, national) = match fast(origin, digits, region) {
        Some((code, start)) => (code, Cow::Borrowed(&digits[start..])),
        None => {
            let (code, national) = slow(origin, digits, region)?;
            (code, Cow::Owned(national))
        }
    };
    is_possible(code, national.len())?;
    Ok((code, national))
}

/// Bare digits (no `+` or `00`), by the rules of the module docs. `digits_only`: the value held
/// nothing but digits. `plan` reads a number by its numbering plan ([`by_plan`], or the parser
/// alone in tests).
fn bare_digits<'d>(
    digits: &'d str,
    digits_only: bool,
    region: Option<&Region>,
    plan: impl Fn(Origin, &'d str, Option<&Region>) -> Result<(u16, Cow<'d, str>), Rejection>,
) -> Result<(u16, Cow<'d, str>), Rejection> {
    let international =
        leading_code(digits).filter(|&(code, len)| is_possible(code, digits.len() - len).is_ok());
    // Rule 2: a valid international number is kept, whatever the country.
    if let Some((code, len)) = international
        && is_valid_number(code, &digits[len..])
    {
        return plan(Origin::International, digits, None);
    }
    let Some(region) = region else {
        // Rule 4: digits only, of a plausible length (8 to 15, or one the code allows), are taken
        // to start with their country code.
        return match leading_code(digits) {
            Some((code, len)) if digits_only && (digits.len() >= 8 || international.is_some()) => {
                Ok((code, Cow::Borrowed(&digits[len..])))
            }
            _ => Err(NO_COUNTRY_CODE),
        };
    };
    // Rule 3: national. When a value of digits only could also be read as an international
    // number (possible, not valid), the national reading wins only as a valid number: so our own
    // output, normalized again, reads as itself.
    let national = plan(Origin::National, digits, Some(region));
    match (international, national) {
        (Some(_), Ok((code, n))) if digits_only && is_valid_number(code, &n) => Ok((code, n)),
        (Some((code, len)), _) if digits_only => Ok((code, Cow::Borrowed(&digits[len..]))),
        (_, national) => national,
    }
}

/// An international number of another country than `region`'s that is only possible (not valid)
/// is refused when its digits, written without `+`, are a valid national number of `region`: that
/// is how they would read when normalized again (rule 3), so keeping it would break idempotence.
/// Only foreign numbers pay for the checks.
fn refuse_foreign_lookalike(
    code: u16,
    national: &str,
    region: Option<&Region>,
    plan: &impl for<'d> Fn(Origin, &'d str, Option<&Region>) -> Result<(u16, Cow<'d, str>), Rejection>,
) -> Result<(), Rejection> {
    let Some(region) = region.filter(|r| r.code != code) else {
        return Ok(());
    };
    let bare = format!("{code}{national}");
    let lookalike = match plan(Origin::National, &bare, Some(region)) {
        Ok((c, n)) => is_valid_number(c, &n) && !is_valid_number(code, national),
        Err(_) => false,
    };
    if lookalike {
        return Err(AMBIGUOUS);
    }
    Ok(())
}

/// `s` is already trimmed and non-empty; `region` is the row's country, else the system's.
pub(super) fn normalize_into(
    s: &str,
    region: Option<&Region>,
    out: &mut String,
) -> Result<(), Rejection> {
    normalize_with(s, region, out, by_plan)
}

fn normalize_with(
    s: &str,
    region: Option<&Region>,
    out: &mut String,
    plan: impl for<'d> Fn(Origin, &'d str, Option<&Region>) -> Result<(u16, Cow<'d, str>), Rejection>,
) -> Result<(), Rejection> {
    let (origin, digits) = scan(s)?;
    let digits = digits.as_str();
    let (code, national) = match origin {
        Origin::International => {
            let (code, national) = plan(origin, digits, region)?;
            refuse_foreign_lookalike(code, &national, region, &plan)?;
            (code, national)
        }
        Origin::National => {
            let digits_only = s.bytes().all(|b| b.is_ascii_digit());
            bare_digits(digits, digits_only, region, &plan)?
        }
    };
    push_e164(out, code, &national);
    Ok(())
}

/// Test hook: the parser's answer for the same digits, to check the fast path against.
#[cfg(test)]
pub(super) fn normalize_slow(
    s: &str,
    region: Option<&Region>,
    out: &mut String,
) -> Result<(), Rejection> {
    normalize_with(s, region, out, |origin, digits, region| {
        let (code, national) = slow(origin, digits, region)?;
        is_possible(code, national.len())?;
        Ok((code, Cow::Owned(national)))
    })
}

#[cfg(test)]
pub(super) fn takes_fast_path(s: &str, region: Option<&Region>) -> bool {
    scan(s).is_ok_and(|(origin, digits)| fast(origin, digits.as_str(), region).is_some())
}
