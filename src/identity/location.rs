//! CT (ct), ST (st) and ZIP (zp).
//!
//! * CT: lowercase, no punctuation, digits or whitespace. Letters of any script are kept in
//!   UTF-8 (CAPI docs allow UTF-8 for `ct`; one rule for both channels): `São Paulo` →
//!   `sãopaulo`. We do not transliterate: no Meta document says to.
//! * ST: US state and territory names → their 2-letter code (`New York` → `ny`); anything
//!   else lowercase letters only (`British Columbia` → `britishcolumbia`). The key has no
//!   country beside it, so a name is mapped whenever it is a US state name.
//! * ZIP: lowercase, keep letters and digits only (drops whitespace, dashes and other
//!   punctuation). A US ZIP+4 — nine digits, with or without the dash — becomes its first 5
//!   digits. Other shapes are kept whole (`SW1A 1AA` → `sw1a1aa`, `01310-100` → `01310100`).

use super::Rejection;
use super::text::{fold_key, letters_lower_into, lower_nfc, nfc};

/// `s` is already trimmed and non-empty.
pub(super) fn city_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let start = out.len();
    letters_lower_into(s, out);
    if out.len() == start {
        return Err(Rejection::Invalid("no letters"));
    }
    Ok(())
}

/// `s` is already trimmed and non-empty.
pub(super) fn state_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let mut letters = String::new();
    letters_lower_into(s, &mut letters);
    if letters.is_empty() {
        return Err(Rejection::Invalid("no letters"));
    }
    if letters.len() > 2 {
        let key = fold_key(&letters);
        if let Some(&(_, code)) = US_STATES.iter().find(|(name, _)| *name == key) {
            out.push_str(code);
            return Ok(());
        }
    }
    out.push_str(&letters);
    Ok(())
}

/// `s` is already trimmed and non-empty.
pub(super) fn zip_into(s: &str, out: &mut String) -> Result<(), Rejection> {
    let lower = lower_nfc(s);
    let start = out.len();
    if lower.is_ascii() {
        out.extend(lower.chars().filter(char::is_ascii_alphanumeric));
    } else {
        // Dropping characters can bring combining marks together: recompose and reorder.
        let kept: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
        out.push_str(&nfc(&kept));
    }
    let kept = &out[start..];
    if kept.is_empty() {
        return Err(Rejection::Invalid("no letters or digits"));
    }
    // Nine digits and nothing else but separators: a ZIP+4, with or without its dash.
    if kept.len() == 9 && kept.bytes().all(|b| b.is_ascii_digit()) {
        out.truncate(start + 5);
    }
    Ok(())
}

/// US states, DC and the inhabited territories, keyed by their name folded to ASCII letters.
static US_STATES: &[(&str, &str)] = &[
    ("alabama", "al"),
    ("alaska", "ak"),
    ("arizona", "az"),
    ("arkansas", "ar"),
    ("california", "ca"),
    ("colorado", "co"),
    ("connecticut", "ct"),
    ("delaware", "de"),
    ("districtofcolumbia", "dc"),
    ("washingtondc", "dc"),
    ("florida", "fl"),
    ("georgia", "ga"),
    ("hawaii", "hi"),
    ("idaho", "id"),
    ("illinois", "il"),
    ("indiana", "in"),
    ("iowa", "ia"),
    ("kansas", "ks"),
    ("kentucky", "ky"),
    ("louisiana", "la"),
    ("maine", "me"),
    ("maryland", "md"),
    ("massachusetts", "ma"),
    ("michigan", "mi"),
    ("minnesota", "mn"),
    ("mississippi", "ms"),
    ("missouri", "mo"),
    ("montana", "mt"),
    ("nebraska", "ne"),
    ("nevada", "nv"),
    ("newhampshire", "nh"),
    ("newjersey", "nj"),
    ("newmexico", "nm"),
    ("newyork", "ny"),
    ("northcarolina", "nc"),
    ("northdakota", "nd"),
    ("ohio", "oh"),
    ("oklahoma", "ok"),
    ("oregon", "or"),
    ("pennsylvania", "pa"),
    ("rhodeisland", "ri"),
    ("southcarolina", "sc"),
    ("southdakota", "sd"),
    ("tennessee", "tn"),
    ("texas", "tx"),
    ("utah", "ut"),
    ("vermont", "vt"),
    ("virginia", "va"),
    ("washington", "wa"),
    ("westvirginia", "wv"),
    ("wisconsin", "wi"),
    ("wyoming", "wy"),
    ("puertorico", "pr"),
    ("guam", "gu"),
    ("americansamoa", "as"),
    ("northernmarianaislands", "mp"),
    ("usvirginislands", "vi"),
    ("unitedstatesvirginislands", "vi"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_with_marks_brought_together_is_in_canonical_order() {
        // Found by the fuzz run: two Arabic marks separated by a dropped character.
        let mut once = String::new();
        zip_into("t\u{616}\u{14}\u{61a}x", &mut once).unwrap();
        let mut twice = String::new();
        zip_into(&once, &mut twice).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn the_state_table_has_fifty_states_dc_and_five_territories() {
        let mut codes: Vec<_> = US_STATES.iter().map(|(_, c)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 50 + 1 + 5);
        assert!(US_STATES.iter().all(|(n, c)| n.len() > 2 && c.len() == 2));
    }
}
