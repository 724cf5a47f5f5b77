//! COUNTRY / country: ISO 3166-1 alpha-2, lowercase.
//!
//! Accepted: alpha-2 codes (`US`), alpha-3 codes (`USA`), ISO English names, their common
//! short forms and a few well-known aliases in English, Spanish and Portuguese
//! (`United States`, `U.S.A.`, `EE.UU.`, `Reino Unido`), compared case- and
//! accent-insensitively with punctuation and spaces removed. `UK` → `gb`. `XK` (Kosovo, the
//! user-assigned code Meta uses) is accepted. Anything else is rejected: a value that is not a
//! country code would only ever hash to a non-match.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Rejection;
use super::country_table::COUNTRIES;
use super::text::fold_key;

/// The lowercase alpha-2 code for a country code or name, if we know it.
pub fn alpha2(s: &str) -> Option<&'static str> {
    let key = fold_key(s);
    let index = index();
    let by_code = match key.len() {
        2 => index.alpha2.get(key.as_str()),
        3 => index.alpha3.get(key.as_str()),
        _ => None,
    };
    by_code.or_else(|| index.names.get(key.as_str())).copied()
}

struct Index {
    alpha2: HashMap<&'static str, &'static str>,
    alpha3: HashMap<&'static str, &'static str>,
    names: HashMap<&'static str, &'static str>,
}

/// Builds the index now (see [`super::prepare`]).
pub(super) fn prepare() {
    index();
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| Index {
        alpha2: COUNTRIES.iter().map(|r| (r.0, r.0)).collect(),
        alpha3: COUNTRIES.iter().map(|r| (r.1, r.0)).collect(),
        names: COUNTRIES
            .iter()
            .flat_map(|r| r.2.iter().map(move |n| (*n, r.0)))
            .collect(),
    })
}

/// `s` is already trimmed and non-empty.
pub(super) fn normalize_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    match alpha2(s) {
        Some(code) => {
            out.push_str(code);
            Ok(())
        }
        None => Err(Rejection::Invalid("unknown country")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_name_or_code_maps_to_two_different_countries() {
        use std::collections::HashMap;
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (a2, a3, names) in COUNTRIES {
            for k in std::iter::once(a2)
                .chain(std::iter::once(a3))
                .chain(names.iter())
            {
                if let Some(prev) = seen.insert(k, a2) {
                    assert_eq!(prev, *a2, "{k} maps to {prev} and {a2}");
                }
            }
        }
    }

    #[test]
    fn every_table_row_is_lowercase_ascii_of_the_right_length() {
        assert!(COUNTRIES.len() >= 249);
        for (a2, a3, names) in COUNTRIES {
            assert_eq!(a2.len(), 2);
            assert_eq!(a3.len(), 3);
            for n in names.iter().chain([a2, a3]) {
                assert!(n.bytes().all(|b| b.is_ascii_lowercase()), "{n}");
            }
        }
    }
}
