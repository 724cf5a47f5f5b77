//! Tests of the documented rules, per key. Expected values come from Meta's documents (the
//! goldens) or from applying the documented rule by hand; hashes are only ever asserted for
//! goldens, everywhere else a cell is checked to be the SHA-256 of the normalized value.

mod cases;
mod command;
mod goldens;
mod normalizer;
mod properties;

use super::hash::sha256_hex;
use super::{MatchKey, Normalizer, Rejection, UserDataKey};

/// What a case expects.
#[derive(Debug, Clone, Copy)]
pub(super) enum Want {
    /// The normalized form.
    Is(&'static str),
    /// Rejected with this reason.
    No(&'static str),
}
pub(super) use Want::{Is, No};

/// A normalizer with no default country and a fixed "current year" so tests do not age.
pub(super) fn plain() -> Normalizer {
    Normalizer::new(None).unwrap().with_max_year(2026)
}

pub(super) fn with_country(cc: &str) -> Normalizer {
    Normalizer::new(Some(cc)).unwrap().with_max_year(2026)
}

fn outcome(got: Result<String, Rejection>) -> String {
    match got {
        Ok(v) => format!("Is({v:?})"),
        Err(r) => format!("No({:?})", r.reason()),
    }
}

fn want_str(want: Want) -> String {
    match want {
        Is(v) => format!("Is({v:?})"),
        No(r) => format!("No({r:?})"),
    }
}

/// Checks every case (`what`, `raw`, `want`) for `key`, and that the cell is consistent with
/// the normalized form. Reports all failures at once.
pub(super) fn check(n: &Normalizer, key: MatchKey, cases: &[(&str, &str, Want)]) {
    check_with(&key.to_string(), key.is_hashed(), cases, |raw| {
        (n.normalize(key, raw), n.cell(key, raw))
    });
}

/// Same for a `user_data` field.
pub(super) fn check_user_data(n: &Normalizer, key: UserDataKey, cases: &[(&str, &str, Want)]) {
    check_with(&key.to_string(), key.is_hashed(), cases, |raw| {
        (n.normalize_user_data(key, raw), n.user_data_cell(key, raw))
    });
}

/// `normalize_and_cell` gives a raw value's normalized form and its cell.
fn check_with(
    key: &str,
    hashed: bool,
    cases: &[(&str, &str, Want)],
    normalize_and_cell: impl Fn(&str) -> (Result<String, Rejection>, Result<String, Rejection>),
) {
    let mut failures = Vec::new();
    for &(what, raw, want) in cases {
        let (got, cell) = normalize_and_cell(raw);
        if outcome(got.clone()) != want_str(want) {
            failures.push(format!(
                "{key} {what}: {raw:?} gave {} but the rule says {}",
                outcome(got.clone()),
                want_str(want)
            ));
            continue;
        }
        let expected_cell = got.map(|v| {
            if hashed && !super::hash::is_sha256_hex(raw.trim()) {
                sha256_hex(v.as_bytes())
            } else {
                v
            }
        });
        if cell != expected_cell {
            failures.push(format!("{key} {what}: cell {cell:?} != {expected_cell:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
