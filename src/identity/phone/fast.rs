//! The fast path: digit strings whose country needs no national-prefix handling, or only a
//! prefix stripped that the metadata's pattern lets us compute, read without the parser.

use super::plan::{code_table, country_code_prefix};
use super::region::Region;
use super::scan::Origin;

/// The fast path: `Some((code, start))` when the parser would do nothing but split the country
/// code off and strip a prefix, leaving `digits[start..]` as the national number.
pub(super) fn fast(origin: Origin, digits: &str, region: Option<&Region>) -> Option<(u16, usize)> {
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
