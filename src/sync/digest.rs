//! The source digest: a fingerprint of the raw values a customer row feeds into its member, and of
//! everything else that shapes the member (the match keys, the default country, the latest
//! accepted birth year, the digest's version). A ledger member whose source row comes back with
//! the same digest is unchanged: an incremental run neither normalizes nor hashes it again, and its
//! values never leave Postgres.
//!
//! Postgres computes it, inside the extraction, with `hash_record_extended` (PostgreSQL 14+): the
//! row of raw values, one per match key, hashed to 64 bits with a seed that the worker derives
//! from the settings. It is built from the per-type hash functions that hash partitioning relies
//! on, which are stable across servers and upgrades (were a future server to hash differently, its
//! first run would only refresh every member once, without a call to Meta). It hashes each value
//! on its own (values cannot run into each other) and a NULL differently from an empty string
//! (tests/it/digest.rs). It only has to notice a change, not resist an attacker: at worst a change
//! it missed (a 2^-64 chance) waits for that customer's next change.
use sha2::{Digest, Sha256};

use crate::identity::{MatchKey, Normalizer};

/// Bump when normalization or the cell layout changes what a raw row becomes: every member is
/// then rebuilt once, on the next run (members whose cells come out the same are only refreshed
/// in the ledger; Meta is not called for them).
const VERSION: &[u8] =
    b"cdp-meta-sync source digest v4 (hash_record_extended; phones as Meta documents them; \
      ledger filled_keys)";

/// The seed of one run's digests: it changes with every setting that shapes the cells.
pub fn seed(keys: &[MatchKey], normalizer: &Normalizer) -> i64 {
    let mut h = Sha256::new();
    h.update(VERSION);
    for key in keys {
        h.update(key.as_str().as_bytes());
        h.update(b",");
    }
    h.update(normalizer.default_country().unwrap_or("-").as_bytes());
    h.update(normalizer.max_year().to_be_bytes());
    i64::from_be_bytes(h.finalize()[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// The SQL expression of the digest over `values` (one text expression per match key, in schema
/// order), seeded by the query parameter `seed_param` (e.g. `$4`, a bigint).
pub fn sql(values: &[String], seed_param: &str) -> String {
    let row: Vec<String> = values.iter().map(|v| format!("({v})::text")).collect();
    format!(
        "hash_record_extended(ROW({}), {seed_param})",
        row.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [MatchKey; 2] = [MatchKey::Email, MatchKey::Phone];

    fn normalizer(country: &str, max_year: u16) -> Normalizer {
        Normalizer::new(Some(country))
            .unwrap()
            .with_max_year(max_year)
    }

    #[test]
    fn the_same_settings_give_the_same_seed() {
        assert_eq!(
            seed(&KEYS, &normalizer("AR", 2026)),
            seed(&KEYS, &normalizer("AR", 2026))
        );
    }

    #[test]
    fn settings_that_shape_the_cells_change_the_seed() {
        let base = seed(&KEYS, &normalizer("AR", 2026));
        assert_ne!(
            base,
            seed(&KEYS, &normalizer("UY", 2026)),
            "default country"
        );
        assert_ne!(
            base,
            seed(&KEYS, &normalizer("AR", 2027)),
            "latest birth year"
        );
        assert_ne!(
            base,
            seed(&[MatchKey::Phone, MatchKey::Email], &normalizer("AR", 2026)),
            "match keys"
        );
    }
}
