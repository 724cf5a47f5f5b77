//! Reading a raw value: its digits, without formatting, symbols or a trailing extension, and
//! whether it carries its own country code (`+` or `00` in front).

use super::super::Rejection;
use super::{LETTERS, NO_DIGITS, NOT_POSSIBLE};

/// Longest digit string we look at: E.164 allows 15, plus `00`, a trunk `0` and slack.
const MAX_DIGITS: usize = 24;

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
pub(super) enum Origin {
    /// `+` or `00` in front.
    International,
    National,
}

/// Strips formatting and symbols. Returns the digits and where the country code comes from.
pub(super) fn scan(s: &str) -> Result<(Origin, heapless_digits::Digits), Rejection> {
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

/// A fixed-capacity ASCII digit buffer, so scanning a phone number does not allocate.
mod heapless_digits {
    use super::MAX_DIGITS;

    #[derive(Default)]
    pub(in crate::identity::phone) struct Digits {
        buf: [u8; MAX_DIGITS],
        start: usize,
        end: usize,
    }

    impl Digits {
        /// `false` when full.
        pub(in crate::identity::phone) fn push(&mut self, digit: u8) -> bool {
            if self.end == MAX_DIGITS {
                return false;
            }
            self.buf[self.end] = digit;
            self.end += 1;
            true
        }

        pub(in crate::identity::phone) fn is_empty(&self) -> bool {
            self.start == self.end
        }

        pub(in crate::identity::phone) fn drop_front(&mut self, n: usize) {
            self.start = (self.start + n).min(self.end);
        }

        pub(in crate::identity::phone) fn as_str(&self) -> &str {
            // Only ASCII digits are ever pushed.
            std::str::from_utf8(&self.buf[self.start..self.end]).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_cut_off_but_digits_alone_are_not() {
        assert_eq!(strip_extension("650 555 1212 ext. 12"), "650 555 1212 ");
        assert_eq!(strip_extension("6505551212x3"), "6505551212");
        assert_eq!(strip_extension("6505551212 #3"), "6505551212 ");
        assert_eq!(strip_extension("6505551212"), "6505551212");
        assert_eq!(strip_extension("x12"), "x12");
    }
}
