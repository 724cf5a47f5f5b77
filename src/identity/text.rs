//! Text helpers shared by the per-key rules: trimming, NFC, case folding, letter filtering.

use std::borrow::Cow;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Characters that carry nothing at the edges of a value: whitespace, control characters and
/// the invisible format characters CSV exports and copy-paste leave behind.
fn is_edge_junk(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
        )
}

/// Trim whitespace, control and zero-width characters from both ends.
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(is_edge_junk)
}

/// Unicode NFC, borrowing when the input is already NFC (always the case for ASCII).
pub(crate) fn nfc(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.nfc().collect())
    }
}

/// NFC, then full Unicode lowercase, then NFC again (lowercasing can un-compose, e.g. `İ`).
pub(crate) fn lower_nfc(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        let lower = nfc(s).to_lowercase();
        Cow::Owned(nfc(&lower).into_owned())
    }
}

/// A letter of any script, or a combining mark that belongs to one (Devanagari vowel signs,
/// viramas, Arabic harakat…). Digits, punctuation, symbols and whitespace are not.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_alphabetic() || is_combining_mark(c)
}

/// Meta's rule for FN, LN, CT and ST: NFC, lowercase, keep letters of any script, drop
/// punctuation, whitespace, digits and symbols. Appends to `out`.
pub(crate) fn letters_lower_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        out.extend(
            s.bytes()
                .filter(u8::is_ascii_alphabetic)
                .map(|b| b.to_ascii_lowercase() as char),
        );
        return;
    }
    let lower = lower_nfc(s);
    let kept: String = lower.chars().filter(|&c| is_name_char(c)).collect();
    // Dropping a character can put a base letter next to a mark: recompose.
    out.push_str(&nfc(&kept));
}

/// A case- and accent-insensitive lookup key: lowercase ASCII letters only, accents removed
/// (`México` → `mexico`, `Varón` → `varon`). Only used to look values up in tables whose
/// output is a code, never as a value sent to Meta.
pub(crate) fn fold_key(s: &str) -> String {
    if s.is_ascii() {
        return s
            .bytes()
            .filter(u8::is_ascii_alphabetic)
            .map(|b| b.to_ascii_lowercase() as char)
            .collect();
    }
    s.nfd()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_removes_zero_width_and_byte_order_marks_at_the_edges_only() {
        assert_eq!(trim("\u{FEFF} a b\u{200B}\t"), "a b");
        assert_eq!(trim("a\u{200C}b"), "a\u{200C}b");
    }

    #[test]
    fn lowercasing_recomposes_to_nfc() {
        // "É" written as E + combining acute becomes the single code point é.
        assert_eq!(lower_nfc("E\u{301}"), "\u{e9}");
    }

    #[test]
    fn letter_filtering_recomposes_a_mark_separated_from_its_letter() {
        let mut out = String::new();
        letters_lower_into("e'\u{301}", &mut out);
        assert_eq!(out, "\u{e9}");
    }

    #[test]
    fn fold_key_removes_accents_and_non_letters() {
        assert_eq!(fold_key("Méx-ico 2"), "mexico");
        assert_eq!(fold_key("E.E.U.U."), "eeuu");
    }
}
