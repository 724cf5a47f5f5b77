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
use std::collections::HashMap;
use std::sync::OnceLock;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;

use super::Rejection;
use super::phone_pattern::PrefixTrie;

const NO_COUNTRY_CODE: Rejection = Rejection::Invalid("no country code");
const UNKNOWN_COUNTRY_CODE: Rejection = Rejection::Invalid("unknown country code");
const NOT_POSSIBLE: Rejection = Rejection::Invalid("not a possible phone number");
const LETTERS: Rejection = Rejection::Invalid("contains letters");
const NO_DIGITS: Rejection = Rejection::Invalid("no digits");
/// See [`refuse_foreign_lookalike`].
const AMBIGUOUS: Rejection = Rejection::Invalid("looks like a national number");

/// Longest digit string we look at: E.164 allows 15, plus `00`, a trunk `0` and slack.
const MAX_DIGITS: usize = 24;

/// Per country calling code, what the fast path needs.
struct CodeInfo {
    /// National significant number lengths of the code's main country (libphonenumber's
    /// `isPossibleNumber` uses the main country's metadata).
    possible: Vec<u16>,
    /// What the parser may strip from a national number, for every region of the code.
    strips: Vec<Strip>,
    /// The parser always reads this code's national numbers with `strips[0]`'s metadata: the
    /// code has one region (the parser then skips its regex-based choice of region).
    single_region: bool,
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
struct Strip {
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
    fn of(meta: &phonenumber::Metadata) -> Strip {
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
    fn stripped(&self, national: &str) -> Option<usize> {
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
    fn leaves_alone(&self, national: &str) -> bool {
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

fn code_table() -> &'static [Option<CodeInfo>] {
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

/// The default country of a system, resolved once.
#[derive(Clone)]
pub(super) struct Region {
    id: Id,
    meta: &'static phonenumber::Metadata,
    code: u16,
    code_digits: String,
    strip: Strip,
    /// When the international prefix pattern can only match digits starting with this digit
    /// (`011` in the US), numbers starting otherwise skip running it.
    idd_first_digit: Option<u8>,
    /// When the international prefix pattern is plain digits (`00` in Argentina): it matches
    /// at the start exactly when the number starts with them, no need to run it.
    idd_literal: Option<String>,
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
    pub(super) fn new(alpha2: &str) -> Option<Region> {
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
pub(super) fn region_of(alpha2: &str) -> Option<&'static Region> {
    static REGIONS: OnceLock<HashMap<&'static str, OnceLock<Option<Region>>>> = OnceLock::new();
    let regions = REGIONS.get_or_init(|| {
        super::country_table::COUNTRIES
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

/// Cuts a trailing extension (`ext. 12`, `extension 12`, `x12`, `#12`) off `s`.
fn strip_extension(s: &str) -> &str {
    let b = s.as_bytes();
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    let digits = b.len() - i;
    if !(1..=7).contains(&digits) {
        return s;
    }
    while i > 0 && matches!(b[i - 1], b' ' | b'.' | b':') {
        i -= 1;
    }
    let head = &b[..i];
    for marker in [&b"extension"[..], b"ext", b"x", b"#"] {
        if head.len() > marker.len()
            && head[head.len() - marker.len()..].eq_ignore_ascii_case(marker)
        {
            return &s[..head.len() - marker.len()];
        }
    }
    s
}

/// Where the country code of a number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `+` or `00` in front.
    International,
    National,
}

/// Strips formatting and symbols. Returns the digits and where the country code comes from.
fn scan(s: &str) -> Result<(Origin, heapless_digits::Digits), Rejection> {
    let s = strip_extension(s);
    let mut digits = heapless_digits::Digits::default();
    let mut plus = false;
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c as u8).then_some(()).ok_or(NOT_POSSIBLE)?,
            '+' if digits.is_empty() => plus = true,
            c if c.is_alphabetic() => return Err(LETTERS),
            // Digits of other scripts (Arabic-Indic, full-width…) would be dropped silently
            // and leave a wrong number.
            c if c.is_numeric() => return Err(Rejection::Invalid("non-ASCII digits")),
            _ => {} // formatting and symbols: removed, as documented
        }
    }
    if digits.is_empty() {
        return Err(NO_DIGITS);
    }
    if plus || digits.as_str().starts_with("00") {
        // No leading zeros (Meta's rule): `+0044…`, `+001…` and `00 44…` all mean `+44…`.
        let zeros = digits.as_str().bytes().take_while(|&b| b == b'0').count();
        digits.drop_front(zeros);
        if digits.is_empty() {
            return Err(NOT_POSSIBLE);
        }
        return Ok((Origin::International, digits));
    }
    Ok((Origin::National, digits))
}

fn is_possible(code: u16, national_len: usize) -> Result<(), Rejection> {
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

fn push_e164(out: &mut String, code: u16, national: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{code}");
    out.push_str(national);
}

/// The fast path: `Some((code, start))` when the parser would do nothing but split the country
/// code off and strip a prefix, leaving `digits[start..]` as the national number.
fn fast(origin: Origin, digits: &str, region: Option<&Region>) -> Option<(u16, usize)> {
    let (code, national_at, strip) = match origin {
        Origin::International => {
            if digits.len() <= 2 || digits.starts_with('0') {
                return None;
            }
            let (code, len) = country_code_prefix(digits)?;
            let info = code_table()[usize::from(code)].as_ref()?;
            let national = &digits[len..];
            if national.len() < 2 {
                return None;
            }
            let strip = if info.single_region {
                info.strips[0].stripped(national)?
            } else {
                // Which region's metadata the parser uses depends on the number: all must
                // leave it alone.
                let plain = !national.starts_with('0')
                    && info.strips.iter().all(|strip| strip.leaves_alone(national));
                plain.then_some(0)?
            };
            (code, len, strip)
        }
        Origin::National => {
            let region = region?;
            // The parser reads a national number that starts with the country's own code as
            // carrying it (its length check never passes with this metadata): `1 650…` in the
            // US, `44 20…` in the UK.
            let code_len = if digits.starts_with(&region.code_digits) {
                region.code_digits.len()
            } else {
                0
            };
            let national = &digits[code_len..];
            if national.len() < 2 {
                return None;
            }
            // An international prefix dialled from this country (`011` in the US) makes the
            // parser read a country code after it.
            let idd_at_start = match &region.idd_literal {
                Some(literal) => digits.starts_with(literal.as_str()),
                None => {
                    region
                        .idd_first_digit
                        .is_none_or(|d| digits.as_bytes()[0] == d)
                        && region
                            .meta
                            .international_prefix()
                            .and_then(|re| re.find(digits))
                            .is_some_and(|m| m.start() == 0)
                }
            };
            if idd_at_start {
                return None;
            }
            (region.code, code_len, region.strip.stripped(national)?)
        }
    };
    let start = national_at + strip;
    let national = &digits[start..];
    // What the parser then reads as a `NationalNumber` (leading zeros counted, the rest as a
    // `u64`) prints back the same, unless it is all zeros or too long; a stripped number that
    // starts with a zero (again, or after a country code) is left to the parser.
    let plain = national.len() >= 2
        && national.len() <= 16
        && national.bytes().any(|b| b != b'0')
        && ((origin == Origin::National && strip == 0) || !national.starts_with('0'));
    plain.then_some((code, start))
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

/// The country code at the front of bare digits that could be an international number: no
/// leading zero, at most 15 digits, the parser's shortest known code. Returns the code and its
/// length in digits.
fn leading_code(digits: &str) -> Option<(u16, usize)> {
    if !(4..=15).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    country_code_prefix(digits)
}

/// The shortest prefix of `digits` that is a known country code, as the parser reads it: the
/// code and its length in digits.
fn country_code_prefix(digits: &str) -> Option<(u16, usize)> {
    let table = code_table();
    (1..=3).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        table[usize::from(code)].as_ref().map(|_| (code, len))
    })
}

/// Whether `national` is a valid number of the country code (its number ranges, not only its
/// length). Only asked when a cheaper check left two readings of the digits.
fn is_valid_number(code: u16, national: &str) -> bool {
    code_table()
        .get(usize::from(code))
        .and_then(Option::as_ref)
        .is_some_and(|info| info.is_valid(national))
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

/// A fixed-capacity ASCII digit buffer, so scanning a phone number does not allocate.
mod heapless_digits {
    use super::MAX_DIGITS;

    #[derive(Default)]
    pub(super) struct Digits {
        buf: [u8; MAX_DIGITS],
        start: usize,
        end: usize,
    }

    impl Digits {
        /// `false` when full.
        pub(super) fn push(&mut self, digit: u8) -> bool {
            if self.end == MAX_DIGITS {
                return false;
            }
            self.buf[self.end] = digit;
            self.end += 1;
            true
        }

        pub(super) fn is_empty(&self) -> bool {
            self.start == self.end
        }

        pub(super) fn drop_front(&mut self, n: usize) {
            self.start = (self.start + n).min(self.end);
        }

        pub(super) fn as_str(&self) -> &str {
            // Only ASCII digits are ever pushed.
            std::str::from_utf8(&self.buf[self.start..self.end]).unwrap_or_default()
        }
    }
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
    fn extensions_are_cut_off_but_digits_alone_are_not() {
        assert_eq!(strip_extension("650 555 1212 ext. 12"), "650 555 1212 ");
        assert_eq!(strip_extension("6505551212x3"), "6505551212");
        assert_eq!(strip_extension("6505551212 #3"), "6505551212 ");
        assert_eq!(strip_extension("6505551212"), "6505551212");
        assert_eq!(strip_extension("x12"), "x12");
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
        assert_eq!(idd_first_digit("011"), Some(b'0'));
        assert_eq!(idd_first_digit("0(?:0|1[0-9])"), Some(b'0'));
        assert_eq!(idd_first_digit("00|810"), None);
        assert_eq!(idd_first_digit("0?0"), None);
        assert_eq!(idd_first_digit("(?:00|810)"), None);
        assert!(t[0].is_none() && t[999].is_none());
    }
}
