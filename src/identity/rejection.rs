//! Why a value became an empty cell, and the errors of constructing a [`super::Normalizer`].

use std::fmt;

/// Why a value became an empty cell. The pipeline counts these per key.
///
/// Reasons are static strings: they never contain the raw value (it is PII).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Nothing there: empty, or only whitespace / invisible characters.
    Empty,
    /// A value was there but cannot be a value of this key.
    Invalid(&'static str),
}

impl Rejection {
    /// Every reason a rejection can carry, `"empty"` first: a fixed set, so the pipeline can
    /// use them as metric labels and pre-register its counters.
    pub const ALL_REASONS: &'static [&'static str] = &[
        "empty",
        // EMAIL
        "no @",
        "empty local part",
        "empty domain",
        "inner whitespace",
        // PHONE
        "contains letters",
        "non-ASCII digits",
        "no digits",
        "no country code",
        "unknown country code",
        "not a possible phone number",
        "looks like a national number",
        // FN, LN, FI, CT, ST, ZIP
        "no letters",
        "no letters or digits",
        // COUNTRY
        "unknown country",
        // DOBY, DOBM, DOBD, db
        "not a date",
        "ambiguous day/month order",
        "impossible date",
        "year out of range",
        "month out of range",
        "day out of range",
        "unknown month name",
        // GEN
        "not m or f",
        // EXTERN_ID, MADID, LOOKALIKE_VALUE
        "contains control characters",
        "not a device id",
        "zeroed device id",
        "not a number",
        "negative",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::Invalid(reason) => reason,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Rejection {}

/// The default country given to [`super::Normalizer::new`] is not a country we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCountry;

impl fmt::Display for InvalidCountry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "unknown default country: expected an ISO 3166-1 alpha-2 or alpha-3 code or an English country name",
        )
    }
}

impl std::error::Error for InvalidCountry {}
