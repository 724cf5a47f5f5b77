//! FN, LN (fn, ln) and FI.
//!
//! Meta: lowercase, no punctuation, special characters in UTF-8 (`Valéry` → `valéry`,
//! `정` → `정`). We keep letters of any script (and their combining marks) and drop
//! punctuation, whitespace, digits and symbols: `O'Brien` → `obrien`, `Mary-Jane` → `maryjane`,
//! `John Smith1` → `johnsmith`. Honorifics (`Ms.`) are not recognised: they are data errors
//! we cannot fix without guessing.

use unicode_normalization::char::is_combining_mark;

use super::Rejection;
use super::text::letters_lower_into;

/// `s` is already trimmed and non-empty.
pub(super) fn name_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let start = out.len();
    letters_lower_into(s, out);
    if out.len() == start {
        return Err(Rejection::Invalid("no letters"));
    }
    Ok(())
}

/// FI: the first letter of the normalized first name (with its combining marks, so a
/// Devanagari or decomposed letter stays whole).
pub(super) fn initial_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let mut name = String::new();
    name_into(s, &mut name)?;
    let mut chars = name.char_indices();
    let _first = chars.next();
    let end = chars
        .find(|&(_, c)| !is_combining_mark(c))
        .map_or(name.len(), |(i, _)| i);
    out.push_str(&name[..end]);
    Ok(())
}
