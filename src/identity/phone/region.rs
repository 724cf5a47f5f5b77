//! A country's phone numbering, resolved once per process: its metadata, country code, what the
//! parser strips from its national numbers, and its international prefix.

use std::collections::HashMap;
use std::sync::OnceLock;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;

use super::plan::Strip;

/// The default country of a system, resolved once.
#[derive(Clone)]
pub(in crate::identity) struct Region {
    pub(super) id: Id,
    pub(super) meta: &'static phonenumber::Metadata,
    pub(super) code: u16,
    pub(super) code_digits: String,
    pub(super) strip: Strip,
    /// When the international prefix pattern can only match digits starting with this digit
    /// (`011` in the US), numbers starting otherwise skip running it.
    pub(super) idd_first_digit: Option<u8>,
    /// When the international prefix pattern is plain digits (`00` in Argentina): it matches
    /// at the start exactly when the number starts with them, no need to run it.
    pub(super) idd_literal: Option<String>,
}

/// The digit every match of an international-prefix pattern starts with, when that is
/// certain: the pattern starts with a digit that is not quantified and has no top-level `|`.
fn idd_first_digit(pattern: &str) -> Option<u8> {
    let p: String = pattern.split_whitespace().collect();
    let b = p.as_bytes();
    let first = *b.first()?;
    if !first.is_ascii_digit() || b.get(1).is_some_and(|c| b"?*+{".contains(c)) {
        return None;
    }
    let mut depth = 0i32;
    for &c in b {
        match c {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'|' if depth == 0 => return None,
            _ => {}
        }
    }
    Some(first)
}

impl Region {
    /// `None` when the phone metadata has no numbering plan for this country.
    pub(in crate::identity) fn new(alpha2: &str) -> Option<Region> {
        let id: Id = alpha2.to_ascii_uppercase().parse().ok()?;
        let meta = DATABASE.by_id(id.as_ref())?;
        Some(Region {
            id,
            meta,
            code: meta.country_code(),
            code_digits: meta.country_code().to_string(),
            strip: Strip::of(meta),
            idd_first_digit: meta
                .international_prefix()
                .and_then(|re| idd_first_digit(re.as_str())),
            idd_literal: meta.international_prefix().and_then(|re| {
                let p: String = re.as_str().split_whitespace().collect();
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then_some(p)
            }),
        })
    }
}

/// The region of a country (lowercase or uppercase alpha-2), built once per process and country;
/// `None` when the phone metadata has no numbering plan for it.
pub(in crate::identity) fn region_of(alpha2: &str) -> Option<&'static Region> {
    static REGIONS: OnceLock<HashMap<&'static str, OnceLock<Option<Region>>>> = OnceLock::new();
    let regions = REGIONS.get_or_init(|| {
        super::super::country_table::COUNTRIES
            .iter()
            .map(|(code, _, _)| (*code, OnceLock::new()))
            .collect()
    });
    let (code, cell) = regions.get_key_value(alpha2.to_ascii_lowercase().as_str())?;
    cell.get_or_init(|| Region::new(code)).as_ref()
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_digit_of_an_international_prefix_is_known_only_when_certain() {
        assert_eq!(idd_first_digit("011"), Some(b'0'));
        assert_eq!(idd_first_digit("0(?:0|1[0-9])"), Some(b'0'));
        assert_eq!(idd_first_digit("00|810"), None);
        assert_eq!(idd_first_digit("0?0"), None);
        assert_eq!(idd_first_digit("(?:00|810)"), None);
    }
}
