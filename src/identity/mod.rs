//! Identity: Meta's documented normalization and SHA-256 hashing of customer identifiers.
//!
//! Pure functions turning raw CRM values into the form Meta normalizes its own users to, for
//! the customer-list keys ([`MatchKey`]) and the Conversions API `user_data` fields
//! ([`UserDataKey`]). A value that cannot be normalized is an empty cell with a
//! [`Rejection`] reason, never an error that fails a batch and never `sha256("")`.
//!
//! The per-key rules and every decision taken where Meta's documents leave room are written
//! at the top of each rule's file: `email`, `phone`, `name` (FN, LN, FI),
//! `location` (CT, ST, ZIP), `country`, `date` (DOBY, DOBM, DOBD, `db`), `gender`, `ids`
//! (EXTERN_ID, MADID, LOOKALIKE_VALUE). Common to all keys:
//!
//! * Leading/trailing whitespace, control and zero-width characters are trimmed; what is left
//!   empty is [`Rejection::Empty`].
//! * Text is put in Unicode NFC before anything else, so `José` typed on a Mac (NFD) hashes
//!   like `José` typed on Windows.
//! * For hashed keys, a value that is already a SHA-256 (64 hex digits) passes through
//!   lowercased, unhashed again.
//! * Normalization is idempotent: the normalized form normalizes to itself (for PHONE, given
//!   with its `+`, since bare digits could be a national number).

mod command;
mod country;
mod country_table;
mod date;
mod email;
mod gender;
pub mod hash;
mod ids;
mod key;
mod location;
mod name;
mod normalizer;
mod phone;
mod phone_pattern;
mod rejection;
mod text;

pub use command::{MAX_LINE_BYTES, NormalizeSummary, run_normalize};
pub use country::alpha2 as country_alpha2;
pub use key::{MatchKey, UnknownKey, UserDataKey};
pub use normalizer::Normalizer;
pub use rejection::{InvalidCountry, Rejection};

/// Builds now what the rules load on first use, on the calling thread: the `phonenumber`
/// crate's metadata (about 80 ms of CPU, the crate checking every one of its regexes) and the
/// numbering plans made from it. A run calls this on a thread of its own as it starts, while it
/// connects and asks Meta for its audiences, so its first rows do not wait for it.
pub fn prepare() {
    phone::prepare();
    country::prepare();
}

#[cfg(test)]
mod tests;
