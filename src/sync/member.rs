//! One customer row → one audience member: every match key normalized and hashed into the row of
//! cells sent to Meta, plus the member key that identifies the person across tenants.
//!
//! A customer is included when at least one strong key (EMAIL, PHONE, EXTERN_ID, MADID) survives
//! normalization: a phone or an external id alone still matches on Meta, so a missing email does
//! not drop the customer (the original design required an email). Names, city and the like only
//! refine a match; a row with nothing else is skipped and counted.
use sha2::{Digest, Sha256};

use super::cells::push_cell;
use super::system::STRONG_KEYS;
use crate::identity::{MatchKey, Normalizer, Rejection};

/// A member ready for staging: who it is, what we send, and how to pick one row among duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// SHA-256 of `KEY:cell` for the first strong key present, in the order EMAIL, PHONE,
    /// EXTERN_ID, MADID: the same person in two tenants gets the same key.
    pub member_key: [u8; 32],
    /// The packed row of cells (see [`super::cells`]).
    pub cells: Vec<u8>,
    /// Non-empty cells: among duplicates, the fullest row wins.
    pub filled: i16,
    pub tenant_id: i32,
    pub customer_id: i64,
    /// Bit `i` set: the value for match key `i` was invalid (an empty cell, counted in [`Tally`]).
    pub invalid_keys: i32,
    /// Bit `i` set: the cell for match key `i` is filled (the run's coverage, see [`Tally`]).
    pub filled_keys: i32,
}

/// What normalization dropped: invalid values per key (each became an empty cell) and rows with
/// no usable key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub rows: u64,
    pub no_usable_key: u64,
    /// Invalid values per match key, in schema order.
    pub invalid: Vec<u64>,
    /// Members (rows with a usable strong key) with a filled cell per match key, in schema order.
    pub filled: Vec<u64>,
}

impl Tally {
    pub fn new(keys: usize) -> Self {
        Tally {
            invalid: vec![0; keys],
            filled: vec![0; keys],
            ..Tally::default()
        }
    }

    /// Counts `rows` rows that were not normalized again because they did not change: their
    /// invalid values and filled cells come from the ledger's `invalid_keys` and `filled_keys`
    /// bits.
    pub fn add_unchanged(&mut self, invalid_keys: i32, filled_keys: i32, rows: u64) {
        self.rows += rows;
        for (i, count) in self.invalid.iter_mut().enumerate().take(32) {
            *count += rows * u64::from(invalid_keys >> i & 1 == 1);
        }
        self.add_filled(filled_keys, rows);
    }

    fn add_filled(&mut self, filled_keys: i32, rows: u64) {
        for (i, count) in self.filled.iter_mut().enumerate().take(32) {
            *count += rows * u64::from(filled_keys >> i & 1 == 1);
        }
    }

    pub fn add(&mut self, other: &Tally) {
        self.rows += other.rows;
        self.no_usable_key += other.no_usable_key;
        if self.invalid.len() < other.invalid.len() {
            self.invalid.resize(other.invalid.len(), 0);
        }
        for (mine, theirs) in self.invalid.iter_mut().zip(&other.invalid) {
            *mine += theirs;
        }
        if self.filled.len() < other.filled.len() {
            self.filled.resize(other.filled.len(), 0);
        }
        for (mine, theirs) in self.filled.iter_mut().zip(&other.filled) {
            *mine += theirs;
        }
    }

    /// `{"EMAIL": 0.93, …}` for the run row: per match key, the share of members (rows with a
    /// usable strong key) whose cell is filled; empty when there is no member.
    pub fn coverage_json(&self, keys: &[MatchKey]) -> serde_json::Value {
        let members = self.rows.saturating_sub(self.no_usable_key);
        if members == 0 {
            return serde_json::json!({});
        }
        let map: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .zip(&self.filled)
            .map(|(k, n)| {
                let share = (*n as f64 / members as f64 * 10_000.0).round() / 10_000.0;
                (k.as_str().to_string(), serde_json::Value::from(share))
            })
            .collect();
        serde_json::Value::Object(map)
    }

    /// `{"PHONE": 12, …}` for the run row; keys with no invalid value are left out.
    pub fn invalid_json(&self, keys: &[MatchKey]) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .zip(&self.invalid)
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.as_str().to_string(), serde_json::Value::from(*n)))
            .collect();
        serde_json::Value::Object(map)
    }
}

/// Builds members with reused buffers: a chunk of rows allocates nothing per row.
pub struct MemberBuilder<'a> {
    normalizer: &'a Normalizer,
    keys: &'a [MatchKey],
    cell: String,
    identity: String,
}

impl<'a> MemberBuilder<'a> {
    pub fn new(normalizer: &'a Normalizer, keys: &'a [MatchKey]) -> Self {
        MemberBuilder {
            normalizer,
            keys,
            cell: String::with_capacity(128),
            identity: String::with_capacity(128),
        }
    }

    /// Builds the member for one customer from its raw values (one per key, in `keys` order)
    /// into `member` (its buffers are reused), or returns false when no strong key is usable.
    /// `country` is the row's own country, for its national phone numbers. Counts into `tally`.
    pub fn build_into(
        &mut self,
        raw: &[Option<&str>],
        country: Option<&str>,
        tenant_id: i32,
        customer_id: i64,
        tally: &mut Tally,
        member: &mut Member,
    ) -> bool {
        tally.rows += 1;
        member.cells.clear();
        member.filled = 0;
        member.invalid_keys = 0;
        member.filled_keys = 0;
        let mut strongest: Option<usize> = None;
        for (i, key) in self.keys.iter().enumerate() {
            self.cell.clear();
            if let Some(value) = raw.get(i).copied().flatten()
                && let Err(Rejection::Invalid(_)) =
                    self.normalizer
                        .row_cell_into(*key, value, country, &mut self.cell)
            {
                tally.invalid[i] += 1;
                member.invalid_keys |= 1i32.checked_shl(i as u32).unwrap_or(0);
            }
            if !self.cell.is_empty() {
                member.filled += 1;
                member.filled_keys |= 1i32.checked_shl(i as u32).unwrap_or(0);
                if let Some(rank) = STRONG_KEYS.iter().position(|k| k == key)
                    && strongest.is_none_or(|best| rank < best)
                {
                    strongest = Some(rank);
                    self.identity.clear();
                    self.identity.push_str(key.as_str());
                    self.identity.push(':');
                    self.identity.push_str(&self.cell);
                }
            }
            push_cell(&mut member.cells, &self.cell);
        }
        if strongest.is_none() {
            tally.no_usable_key += 1;
            return false;
        }
        tally.add_filled(member.filled_keys, 1);
        member.member_key = Sha256::digest(self.identity.as_bytes()).into();
        member.tenant_id = tenant_id;
        member.customer_id = customer_id;
        true
    }
}

impl Member {
    /// An empty member to build into.
    pub fn empty() -> Self {
        Member {
            member_key: [0; 32],
            cells: Vec::with_capacity(256),
            filled: 0,
            tenant_id: 0,
            customer_id: 0,
            invalid_keys: 0,
            filled_keys: 0,
        }
    }
}

/// Builds the member for one customer (see [`MemberBuilder::build_into`]).
pub fn build_member(
    normalizer: &Normalizer,
    keys: &[MatchKey],
    raw: &[Option<&str>],
    tenant_id: i32,
    customer_id: i64,
    tally: &mut Tally,
) -> Option<Member> {
    let mut member = Member::empty();
    MemberBuilder::new(normalizer, keys)
        .build_into(raw, None, tenant_id, customer_id, tally, &mut member)
        .then_some(member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::cells::unpack;

    const KEYS: [MatchKey; 4] = [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];

    fn build(raw: [Option<&str>; 4], tally: &mut Tally) -> Option<Member> {
        let normalizer = Normalizer::new(Some("AR")).unwrap();
        build_member(&normalizer, &KEYS, &raw, 20, 1, tally)
    }

    #[test]
    fn the_same_person_in_two_tenants_gets_the_same_member_key() {
        let mut tally = Tally::new(4);
        let a = build(
            [Some("Mary@Example.com"), None, Some("Mary"), None],
            &mut tally,
        )
        .unwrap();
        let b = build(
            [
                Some("  mary@example.com "),
                Some("+54 9 11 5555-1234"),
                None,
                None,
            ],
            &mut tally,
        )
        .unwrap();
        assert_eq!(a.member_key, b.member_key);
        assert_ne!(a.cells, b.cells);
        assert_eq!((a.filled, b.filled), (2, 2));
    }

    #[test]
    fn a_customer_without_email_but_with_a_phone_is_kept_and_keyed_by_the_phone() {
        let mut tally = Tally::new(4);
        let member = build(
            [None, Some("+54 9 11 5555-1234"), Some("José"), None],
            &mut tally,
        )
        .unwrap();
        let cells = unpack(&member.cells).unwrap();
        assert_eq!(cells[0], "");
        assert_eq!(cells[1].len(), 64);
        let expected: [u8; 32] = Sha256::digest(format!("PHONE:{}", cells[1]).as_bytes()).into();
        assert_eq!(member.member_key, expected);
    }

    #[test]
    fn an_unchanged_row_counts_the_invalid_values_its_bits_record() {
        let mut tally = Tally::new(4);
        let member = build(
            [Some("not-an-email"), Some("+54 9 11 5555-1234"), None, None],
            &mut tally,
        )
        .unwrap();
        let mut again = Tally::new(4);
        again.add_unchanged(member.invalid_keys, member.filled_keys, 1);
        assert_eq!(again, tally);
        let mut thrice = Tally::new(4);
        thrice.add_unchanged(member.invalid_keys, member.filled_keys, 3);
        let mut sum = Tally::new(4);
        for _ in 0..3 {
            sum.add(&tally);
        }
        assert_eq!(thrice, sum);
    }

    #[test]
    fn coverage_is_the_share_of_members_per_key_and_rows_without_a_strong_key_are_not_members() {
        let mut tally = Tally::new(4);
        build([Some("a@example.com"), None, Some("Ana"), None], &mut tally).unwrap();
        build(
            [
                Some("b@example.com"),
                Some("+54 9 11 5555-1234"),
                None,
                None,
            ],
            &mut tally,
        )
        .unwrap();
        assert!(build([None, None, Some("Ana"), Some("Pérez")], &mut tally).is_none());
        assert_eq!(
            tally.coverage_json(&KEYS),
            serde_json::json!({"EMAIL": 1.0, "PHONE": 0.5, "FN": 0.5, "LN": 0.0})
        );
        assert_eq!(Tally::new(4).coverage_json(&KEYS), serde_json::json!({}));
    }

    #[test]
    fn a_row_with_only_names_is_skipped_and_counted() {
        let mut tally = Tally::new(4);
        assert!(
            build(
                [None, Some("not a phone"), Some("Ana"), Some("Pérez")],
                &mut tally
            )
            .is_none()
        );
        assert_eq!(tally.no_usable_key, 1);
        assert_eq!(tally.invalid, vec![0, 1, 0, 0]);
    }

    #[test]
    fn an_invalid_value_becomes_an_empty_cell_and_is_counted_against_its_key() {
        let mut tally = Tally::new(4);
        let member = build(
            [
                Some("juan-at-example.com"),
                Some("+54 9 11 5555-1234"),
                Some("Juan"),
                Some(""),
            ],
            &mut tally,
        )
        .unwrap();
        let cells = unpack(&member.cells).unwrap();
        assert_eq!(cells[0], "");
        assert_eq!(
            cells[3], "",
            "an empty value is an empty cell, not sha256(\"\")"
        );
        assert_eq!(tally.invalid, vec![1, 0, 0, 0]);
        assert_eq!(member.invalid_keys, 0b0001);
        assert_eq!(tally.invalid_json(&KEYS), serde_json::json!({"EMAIL": 1}));
    }
}
