//! The source digest: a fingerprint of the raw values a customer row feeds into its member, and of
//! everything else that shapes the member (the match keys, the default country, the latest
//! accepted birth year, the normalization version). A ledger member whose source row comes back
//! with the same digest is unchanged, so an incremental run does not normalize and hash it again.
use sha2::{Digest, Sha256};

use crate::identity::{MatchKey, Normalizer};

/// Bump when normalization or the cell layout changes what a raw row becomes: every member is
/// then rebuilt once, on the next run.
const VERSION: &[u8] = b"cdp-meta-sync source digest v1";

/// Digests raw rows for one run's settings.
#[derive(Clone)]
pub struct SourceDigest {
    seed: Sha256,
}

impl SourceDigest {
    pub fn new(keys: &[MatchKey], normalizer: &Normalizer) -> Self {
        let mut seed = Sha256::new();
        seed.update(VERSION);
        for key in keys {
            seed.update(key.as_str().as_bytes());
            seed.update(b",");
        }
        seed.update(normalizer.default_country().unwrap_or("-").as_bytes());
        seed.update(normalizer.max_year().to_be_bytes());
        SourceDigest { seed }
    }

    /// The digest of one row's raw values (one per match key, in schema order): the first 8 bytes
    /// of a SHA-256, as stored in `source_digest`.
    pub fn of(&self, raw: &[Option<&str>]) -> i64 {
        let mut h = self.seed.clone();
        for value in raw {
            match value {
                // Absent and empty are different raw rows even if they make the same cells.
                None => h.update([0xff]),
                Some(v) => {
                    h.update([0x00]);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
            }
        }
        let out = h.finalize();
        i64::from_be_bytes(out[..8].try_into().expect("SHA-256 has 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [MatchKey; 2] = [MatchKey::Email, MatchKey::Phone];

    fn digest(country: &str) -> SourceDigest {
        SourceDigest::new(
            &KEYS,
            &Normalizer::new(Some(country)).unwrap().with_max_year(2026),
        )
    }

    #[test]
    fn the_same_raw_row_gets_the_same_digest() {
        let d = digest("AR");
        let row = [Some("a@example.com"), Some("11 5555-1234")];
        assert_eq!(d.of(&row), d.clone().of(&row));
    }

    #[test]
    fn any_change_to_a_raw_value_changes_the_digest() {
        let d = digest("AR");
        let base = d.of(&[Some("a@example.com"), Some("11 5555-1234")]);
        assert_ne!(base, d.of(&[Some("A@example.com"), Some("11 5555-1234")]));
        assert_ne!(base, d.of(&[Some("a@example.com"), Some("11 5555-1235")]));
        assert_ne!(base, d.of(&[Some("a@example.com"), None]));
    }

    #[test]
    fn an_absent_value_and_an_empty_value_differ() {
        let d = digest("AR");
        assert_ne!(d.of(&[None, Some("x")]), d.of(&[Some(""), Some("x")]));
    }

    #[test]
    fn values_cannot_run_into_each_other() {
        let d = digest("AR");
        assert_ne!(
            d.of(&[Some("ab"), Some("c")]),
            d.of(&[Some("a"), Some("bc")])
        );
    }

    #[test]
    fn settings_that_shape_the_cells_change_the_digest() {
        let row = [Some("a@example.com"), Some("11 5555-1234")];
        let base = digest("AR").of(&row);
        assert_ne!(base, digest("UY").of(&row), "default country");
        let later = SourceDigest::new(
            &KEYS,
            &Normalizer::new(Some("AR")).unwrap().with_max_year(2027),
        );
        assert_ne!(base, later.of(&row), "latest birth year");
        let swapped = SourceDigest::new(
            &[MatchKey::Phone, MatchKey::Email],
            &Normalizer::new(Some("AR")).unwrap().with_max_year(2026),
        );
        assert_ne!(base, swapped.of(&row), "match keys");
    }
}
