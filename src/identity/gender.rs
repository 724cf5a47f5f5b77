//! GEN / ge: `m` or `f`.
//!
//! Common spellings in English, Spanish, Portuguese and Italian, compared case- and
//! accent-insensitively with punctuation removed (`Female`, `F.`, `Varón`, `mulher`, `donna`).
//! Anything else — `unknown`, `other`, `x`, `u`, `h` — becomes an empty cell: Meta only knows
//! `m` and `f`, and guessing would send a wrong value. Note `M` means male here even though
//! some Spanish forms use H/M (hombre/mujer): the single letter follows Meta's own code.

use super::Rejection;
use super::text::fold_key;

const MALE: &[&str] = &[
    "m",
    "male",
    "man",
    "masculine",
    "masc", // en
    "masculino",
    "hombre",
    "varon", // es (+pt masculino)
    "homem", // pt
    "maschio",
    "maschile",
    "uomo", // it
];
const FEMALE: &[&str] = &[
    "f",
    "female",
    "woman",
    "feminine",
    "fem", // en
    "femenino",
    "mujer", // es
    "feminino",
    "mulher", // pt
    "femmina",
    "femminile",
    "donna", // it
];

/// `s` is already trimmed and non-empty.
pub(super) fn normalize_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let key = fold_key(s);
    if MALE.contains(&key.as_str()) {
        out.push('m');
    } else if FEMALE.contains(&key.as_str()) {
        out.push('f');
    } else {
        return Err(Rejection::Invalid("not m or f"));
    }
    Ok(())
}
