//! The numbering plan of each country calling code, from libphonenumber's metadata: the
//! national number lengths it allows, what the parser strips from a national number of each of
//! its regions, and its number ranges (compiled once).

use std::sync::OnceLock;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;

use super::super::Rejection;
use super::super::phone_pattern::PrefixTrie;
use super::{NOT_POSSIBLE, UNKNOWN_COUNTRY_CODE};

/// Per country calling code, what the fast path needs.
pub(super) struct CodeInfo {
    /// National significant number lengths of the code's main country (libphonenumber's
    /// `isPossibleNumber` uses the main country's metadata).
    possible: Vec<u16>,
    /// What the parser may strip from a national number, for every region of the code.
    pub(super) strips: Vec<Strip>,
    /// The parser always reads this code's national numbers with `strips[0]`'s metadata: the
    /// code has one region (the parser then skips its regex-based choice of region).
    pub(super) single_region: bool,
    /// The number-type patterns (fixed line, mobile, toll free…) of every region of the code.
    type_patterns: Vec<String>,
    /// Those patterns as one anchored regex, compiled on first use.
    valid: OnceLock<Option<regex::Regex>>,
}

impl CodeInfo {
    /// libphonenumber's `is_valid` for a national number of this code: it matches one of its
    /// regions' number-type patterns. Compiled here, once: the crate's own regexes sit behind a
    /// global mutex and a small cache (README "Performance" has what asking the parser cost).
    fn is_valid(&self, national: &str) -> bool {
        self.possible.contains(&(national.len() as u16))
            && self
                .valid
                .get_or_init(|| {
                    let alternatives: Vec<String> = self
                        .type_patterns
                        .iter()
                        .map(|p| format!("(?:{p})"))
                        .collect();
                    // The numbers are short: a small lazy-DFA cache is enough, and every thread
                    // that matches keeps one.
                    (!alternatives.is_empty())
                        .then(|| {
                            regex::RegexBuilder::new(&format!("^(?:{})$", alternatives.join("|")))
                                .dfa_size_limit(1 << 18)
                                .build()
                                .ok()
                        })
                        .flatten()
                })
                .as_ref()
                .is_some_and(|re| re.is_match(national))
    }
}

/// The number-type descriptors of one region (fixed line, mobile, toll free…), in the order
/// libphonenumber's `number_type` tries them.
fn type_descriptors(
    meta: &phonenumber::Metadata,
) -> impl Iterator<Item = &phonenumber::metadata::Descriptor> {
    let d = meta.descriptors();
    [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ]
    .into_iter()
    .flatten()
}

/// The number-type patterns of one region.
fn type_patterns(meta: &phonenumber::Metadata) -> Vec<String> {
    type_descriptors(meta)
        .map(|desc| desc.national_number().as_str().split_whitespace().collect())
        .collect()
}

/// What the parser may strip from the front of a national number of one region: its national
/// prefix (always tried) and its `national_prefix_for_parsing` pattern, classified.
#[derive(Debug, Clone)]
pub(super) struct Strip {
    national_prefix: Option<String>,
    pattern: Pattern,
    /// The region has a `national_prefix_transform_rule`.
    transform: bool,
    /// The general descriptor's possible lengths and local-only lengths, for the parser's
    /// "too short after stripping" check.
    general_lengths: Vec<u16>,
    local_lengths: Vec<u16>,
}

#[derive(Debug, Clone)]
enum Pattern {
    None,
    /// Alternatives of plain digits, e.g. GB's `0|180020`.
    Literals(Vec<String>),
    /// `(C\d{N})$|P…`, e.g. the NANPA islands' `([2-9]\d{6})$|1` or Jersey's
    /// `([0-24-8]\d{5})$|0|180020`: matches at the start only a local number of `len` digits
    /// or a number starting with one of `prefixes`.
    LocalOrPrefixes {
        len: usize,
        prefixes: Vec<String>,
    },
    /// A loop-free pattern (Argentina's `0?(?:(11|2(?:2(?:02?|…))…)15)?`) compiled to a trie
    /// that gives the regex's preferred match at the start of a number.
    Finite(PrefixTrie),
    /// Anything else (Brazil's carrier codes…): always ask the parser.
    Complex,
}

/// Recognises `(C\d{N})$|P1|P2…`: C a digit or a class of digits and ranges, N a count, the
/// Ps plain digits. Such a pattern matches at the start of a national number only when the
/// number is exactly N + 1 digits long (a local number) or starts with one of the Ps.
/// Returns (N + 1, Ps).
fn local_or_prefix(p: &str) -> Option<(usize, Vec<String>)> {
    let (group, prefixes) = p.strip_prefix('(')?.split_once(")$|")?;
    let (class, count) = group.split_once("\\d{")?;
    let count: usize = count.strip_suffix('}')?.parse().ok()?;
    let class_ok = match class.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
        Some(inner) => !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit() || b == b'-'),
        None => class.len() == 1 && class.as_bytes()[0].is_ascii_digit(),
    };
    let prefixes = literal_alternatives(prefixes)?;
    class_ok.then_some((count + 1, prefixes))
}

/// `0|180020` → `["0", "180020"]`; `None` unless every alternative is plain digits.
fn literal_alternatives(p: &str) -> Option<Vec<String>> {
    p.split('|')
        .map(|a| (!a.is_empty() && a.bytes().all(|b| b.is_ascii_digit())).then(|| a.to_owned()))
        .collect()
}

impl Strip {
    pub(super) fn of(meta: &phonenumber::Metadata) -> Strip {
        let pattern = match meta.national_prefix_for_parsing() {
            None => Pattern::None,
            Some(re) => {
                let p: String = re.as_str().split_whitespace().collect();
                if let Some(alternatives) = literal_alternatives(&p) {
                    Pattern::Literals(alternatives)
                } else if let Some((len, prefixes)) = local_or_prefix(&p) {
                    Pattern::LocalOrPrefixes { len, prefixes }
                } else if let Some(trie) = PrefixTrie::compile(&p) {
                    Pattern::Finite(trie)
                } else {
                    Pattern::Complex
                }
            }
        };
        let general = meta.descriptors().general();
        Strip {
            national_prefix: meta.national_prefix().map(str::to_owned),
            pattern,
            transform: meta.national_prefix_transform_rule().is_some(),
            general_lengths: general.possible_length().to_vec(),
            local_lengths: general.possible_local_length().to_vec(),
        }
    }

    /// How many leading digits the parser strips from the national number `national` (its
    /// `national_number` step, then its national prefix, undone when that leaves a number too
    /// short): `Some(0)` when it leaves it alone, `None` when it may rewrite it (a transform
    /// rule) or we cannot tell.
    pub(super) fn stripped(&self, national: &str) -> Option<usize> {
        let Pattern::Finite(trie) = &self.pattern else {
            return self.leaves_alone(national).then_some(0);
        };
        // `national_number`: no match at the start leaves the number alone; a match whose last
        // group took part is rewritten by the transform rule (when there is one), any other
        // match is cut off.
        let cut = match trie.match_start(national) {
            None => 0,
            Some(m) if m.last_group && self.transform => return None,
            Some(m) => m.len,
        };
        let mut rest = &national[cut..];
        // Then the national prefix, once more.
        if let Some(prefix) = self.national_prefix.as_deref() {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        // `validator::length(meta, potential, Unknown) == TooShort` keeps the number as it was.
        if self.too_short(rest.len()) {
            return Some(0);
        }
        Some(national.len() - rest.len())
    }

    /// The parser's `validator::length(…, Type::Unknown) == TooShort`, on the general
    /// descriptor's lengths (the first listed length is its minimum).
    fn too_short(&self, len: usize) -> bool {
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        match self.general_lengths.first() {
            None => false,
            Some(&minimum) => !self.local_lengths.contains(&len) && len < minimum,
        }
    }

    /// Whether the parser certainly leaves `national` as it is for this region.
    pub(super) fn leaves_alone(&self, national: &str) -> bool {
        let prefix_ok = self
            .national_prefix
            .as_deref()
            .is_none_or(|p| !national.starts_with(p));
        prefix_ok
            && match &self.pattern {
                Pattern::None => true,
                Pattern::Literals(alternatives) => !alternatives
                    .iter()
                    .any(|a| national.starts_with(a.as_str())),
                Pattern::LocalOrPrefixes { len, prefixes } => {
                    national.len() != *len
                        && !prefixes.iter().any(|p| national.starts_with(p.as_str()))
                }
                Pattern::Finite(_) => self.stripped(national) == Some(0),
                Pattern::Complex => false,
            }
    }
}

pub(super) fn code_table() -> &'static [Option<CodeInfo>] {
    static TABLE: OnceLock<Vec<Option<CodeInfo>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0u16..1000)
            .map(|code| {
                let metas = DATABASE.by_code(&code)?;
                let main = metas.first()?;
                // `validator::source_for`: one region, `001` or a known country id.
                let regions = DATABASE.region(&code).unwrap_or_default();
                let single_region = metas.len() == 1
                    && regions.len() == 1
                    && regions[0] == main.id()
                    && (regions[0] == "001" || regions[0].parse::<Id>().is_ok());
                Some(CodeInfo {
                    possible: possible_lengths(main),
                    strips: metas.iter().map(|m| Strip::of(m)).collect(),
                    single_region,
                    type_patterns: metas.iter().flat_map(|m| type_patterns(m)).collect(),
                    valid: OnceLock::new(),
                })
            })
            .collect()
    })
}

/// The national number lengths a country allows, for any type of number. libphonenumber's
/// metadata builder computes this union into the general descriptor; this crate's copy of the
/// metadata leaves that empty, so we take the union ourselves.
fn possible_lengths(meta: &phonenumber::Metadata) -> Vec<u16> {
    let mut lengths: Vec<u16> = meta.descriptors().general().possible_length().to_vec();
    for desc in type_descriptors(meta) {
        lengths.extend_from_slice(desc.possible_length());
    }
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

pub(super) fn is_possible(code: u16, national_len: usize) -> Result<(), Rejection> {
    let info = code_table()
        .get(usize::from(code))
        .and_then(Option::as_ref)
        .ok_or(UNKNOWN_COUNTRY_CODE)?;
    if info.possible.contains(&(national_len as u16)) {
        Ok(())
    } else {
        Err(NOT_POSSIBLE)
    }
}

/// The country code at the front of bare digits that could be an international number: no
/// leading zero, at most 15 digits, the parser's shortest known code. Returns the code and its
/// length in digits.
pub(super) fn leading_code(digits: &str) -> Option<(u16, usize)> {
    if !(4..=15).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    country_code_prefix(digits)
}

/// The shortest prefix of `digits` that is a known country code, as the parser reads it: the
/// code and its length in digits.
pub(super) fn country_code_prefix(digits: &str) -> Option<(u16, usize)> {
    let table = code_table();
    (1..=3).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        table[usize::from(code)].as_ref().map(|_| (code, len))
    })
}

/// Whether `national` is a valid number of the country code (its number ranges, not only its
/// length). Only asked when a cheaper check left two readings of the digits.
pub(super) fn is_valid_number(code: u16, national: &str) -> bool {
    code_table()
        .get(usize::from(code))
        .and_then(Option::as_ref)
        .is_some_and(|info| info.is_valid(national))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_validity_agrees_with_libphonenumbers_is_valid() {
        let numbers = [
            "16505551212",
            "15559876543",
            "442079460958",
            "447700900123",
            "5491123456789",
            "541143215678",
            "543814567890",
            "3814567890",
            "6505551212",
            "2125551234",
            "4915112345678",
            "33612345678",
            "390612345678",
            "919432457768",
            "8613800138000",
            "61412345678",
            "5511987654321",
            "43215678",
        ];
        for digits in numbers {
            let parsed = phonenumber::parse(None, format!("+{digits}")).unwrap();
            let (code, national) = (parsed.code().value(), parsed.national().to_string());
            assert_eq!(
                is_valid_number(code, &national),
                phonenumber::is_valid(&parsed),
                "{digits}"
            );
        }
    }

    #[test]
    fn the_code_table_knows_nanpa_and_the_uk() {
        let t = code_table();
        assert_eq!(t[1].as_ref().unwrap().possible, [10]);
        assert_eq!(t[44].as_ref().unwrap().possible, [7, 9, 10]);
        assert_eq!(t[54].as_ref().unwrap().possible, [10, 11]);
    }

    #[test]
    fn national_prefix_patterns_are_classified_conservatively() {
        let t = code_table();
        let kinds = |code: usize| -> Vec<String> {
            t[code]
                .as_ref()
                .unwrap()
                .strips
                .iter()
                .map(|s| format!("{:?}", s.pattern))
                .collect()
        };
        let nanpa_local = r#"LocalOrPrefixes { len: 7, prefixes: ["1"] }"#;
        assert!(kinds(1).iter().all(|k| k == "None" || k == nanpa_local));
        assert!(kinds(1).iter().any(|k| k == nanpa_local));
        assert_eq!(kinds(44)[0], r#"Literals(["0", "180020"])"#);
        assert!(!kinds(44).iter().any(|k| k == "Complex"));
        assert_eq!(kinds(54).len(), 1);
        assert!(
            kinds(54)[0].starts_with("Finite(PrefixTrie("),
            "{:?}",
            kinds(54)
        );
        assert!(t[54].as_ref().unwrap().single_region);
        assert!(!t[1].as_ref().unwrap().single_region);
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(local_or_prefix(r"(5\d{6})$|1"), Some((7, strings(&["1"]))));
        assert_eq!(
            local_or_prefix(r"([25-9]\d{5})$|0|180020"),
            Some((6, strings(&["0", "180020"])))
        );
        assert_eq!(local_or_prefix(r"([2-9]\d{6})$|1(5)"), None);
        assert_eq!(local_or_prefix(r"(\d{6})$|1"), None);
        assert_eq!(local_or_prefix(r"(183[12])|0"), None);
        assert_eq!(literal_alternatives("0|80?"), None);
        assert!(t[0].is_none() && t[999].is_none());
    }
}
