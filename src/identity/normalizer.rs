//! [`Normalizer`]: per-system context plus the dispatch from key to rule.

use chrono::Datelike;

use super::hash::{hash_tail_in_place, is_sha256_hex};
use super::phone::{Region, region_of};
use super::text::trim;
use super::{
    InvalidCountry, MatchKey, Rejection, UserDataKey, country, date, email, gender, ids, location,
    name, phone,
};

/// Normalizes and hashes raw CRM values the way Meta documents.
///
/// Holds per-system context: the default country for national phone numbers, and the latest
/// plausible birth year. A row may bring its own country (its COUNTRY value), which national phone
/// numbers take before the default (see `phone.rs`). Cheap to clone, `Send + Sync`; all methods
/// are pure.
#[derive(Debug, Clone)]
pub struct Normalizer {
    country: Option<&'static str>,
    region: Option<&'static Region>,
    max_year: u16,
}

/// Whether a value went through its key's rule or was passed through as an existing SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Normalized,
    PreHashed,
}

impl Normalizer {
    /// `default_country` is the system's country for phone numbers written without a country
    /// code: an ISO alpha-2 or alpha-3 code or a country name (`"AR"`, `"ar"`, `"ARG"`,
    /// `"Argentina"`). `None` or a blank string: national numbers are rejected.
    pub fn new(default_country: Option<&str>) -> Result<Self, InvalidCountry> {
        let country = match default_country.map(trim) {
            None | Some("") => None,
            Some(c) => Some(country::alpha2(c).ok_or(InvalidCountry)?),
        };
        Ok(Normalizer {
            country,
            // Countries without a numbering plan in the phone metadata (Antarctica, Bouvet
            // Island…) behave as if no default country was given, for phones only.
            region: country.and_then(region_of),
            max_year: u16::try_from(chrono::Utc::now().year()).unwrap_or(u16::MAX),
        })
    }

    /// The default country as a lowercase alpha-2 code.
    pub fn default_country(&self) -> Option<&'static str> {
        self.country
    }

    /// The latest accepted birth year.
    pub fn max_year(&self) -> u16 {
        self.max_year
    }

    /// Birth years after `year` are rejected (default: the current year, Meta's documented
    /// upper bound). For reproducible tests and backfills.
    pub fn with_max_year(mut self, year: u16) -> Self {
        self.max_year = year;
        self
    }

    /// The numbering plan for a row's national phone numbers: the row's own country when it names
    /// one with a plan, else the default country.
    fn phone_region(&self, row_country: Option<&str>) -> Option<&'static Region> {
        row_country
            .map(trim)
            .filter(|c| !c.is_empty())
            .and_then(country::alpha2)
            .and_then(region_of)
            .or(self.region)
    }

    fn dispatch(
        &self,
        key: MatchKey,
        raw: &str,
        row_country: Option<&str>,
        out: &mut String,
    ) -> Result<Form, Rejection> {
        let s = trim(raw);
        if s.is_empty() {
            return Err(Rejection::Empty);
        }
        if key.is_hashed() && is_sha256_hex(s) {
            out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
            return Ok(Form::PreHashed);
        }
        match key {
            MatchKey::Email => email::normalize_into(s, out),
            MatchKey::Phone => phone::normalize_into(s, self.phone_region(row_country), out),
            MatchKey::Fn | MatchKey::Ln => name::name_into(s, out),
            MatchKey::Fi => name::initial_into(s, out),
            MatchKey::Ct => location::city_into(s, out),
            MatchKey::St => location::state_into(s, out),
            MatchKey::Zip => location::zip_into(s, out),
            MatchKey::Country => country::normalize_into(s, out),
            MatchKey::Doby => date::year_into(s, self.max_year, out),
            MatchKey::Dobm => date::month_into(s, self.max_year, out),
            MatchKey::Dobd => date::day_into(s, self.max_year, out),
            MatchKey::Gen => gender::normalize_into(s, out),
            MatchKey::ExternId => ids::extern_id_into(s, out),
            MatchKey::Madid => ids::madid_into(s, out),
            MatchKey::LookalikeValue => ids::lookalike_value_into(s, out),
        }?;
        Ok(Form::Normalized)
    }

    fn dispatch_user_data(
        &self,
        key: UserDataKey,
        raw: &str,
        row_country: Option<&str>,
        out: &mut String,
    ) -> Result<Form, Rejection> {
        if let Some(key) = key.match_key() {
            return self.dispatch(key, raw, row_country, out);
        }
        // db: a full date, YYYYMMDD.
        let s = trim(raw);
        if s.is_empty() {
            return Err(Rejection::Empty);
        }
        if is_sha256_hex(s) {
            out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
            return Ok(Form::PreHashed);
        }
        date::db_into(s, self.max_year, out)?;
        Ok(Form::Normalized)
    }

    /// Appends the documented normalized form (before hashing) of `raw` to `out`. A
    /// pre-hashed 64-hex input of a hashed key is appended lowercased. On error `out` is left
    /// as it was.
    pub fn normalize_into(
        &self,
        key: MatchKey,
        raw: &str,
        out: &mut String,
    ) -> Result<(), Rejection> {
        let start = out.len();
        self.dispatch(key, raw, None, out)
            .map(drop)
            .inspect_err(|_| out.truncate(start))
    }

    /// The documented normalized form (before hashing). Pre-hashed 64-hex input returns
    /// itself lowercased for hashed keys.
    pub fn normalize(&self, key: MatchKey, raw: &str) -> Result<String, Rejection> {
        let mut out = String::new();
        self.normalize_into(key, raw, &mut out)?;
        Ok(out)
    }

    /// Appends the cell exactly as sent to Meta to `out` (see [`Normalizer::cell`]); the hot
    /// path: no allocation once `out` has room for 64 bytes more. On error `out` is left as
    /// it was.
    pub fn cell_into(&self, key: MatchKey, raw: &str, out: &mut String) -> Result<(), Rejection> {
        self.row_cell_into(key, raw, None, out)
    }

    /// [`Normalizer::cell_into`] for a value of a row that names its own country (raw, as stored:
    /// `AR`, `Argentina`…): a national phone number takes that country before the default one.
    pub fn row_cell_into(
        &self,
        key: MatchKey,
        raw: &str,
        row_country: Option<&str>,
        out: &mut String,
    ) -> Result<(), Rejection> {
        append_cell(key.is_hashed(), out, |out| {
            self.dispatch(key, raw, row_country, out)
        })
    }

    /// The cell exactly as sent to Meta: lowercase-hex SHA-256 of the normalized value for
    /// hashed keys, the normalized value itself for EXTERN_ID / MADID / LOOKALIKE_VALUE.
    pub fn cell(&self, key: MatchKey, raw: &str) -> Result<String, Rejection> {
        let mut out = String::with_capacity(64);
        self.cell_into(key, raw, &mut out)?;
        Ok(out)
    }

    /// Conversions API `user_data` normalized form (`db` = `YYYYMMDD`).
    pub fn normalize_user_data(&self, key: UserDataKey, raw: &str) -> Result<String, Rejection> {
        let mut out = String::new();
        self.dispatch_user_data(key, raw, None, &mut out)?;
        Ok(out)
    }

    /// [`Normalizer::user_data_cell`], appending to `out`; on error `out` is left as it was.
    pub fn user_data_cell_into(
        &self,
        key: UserDataKey,
        raw: &str,
        row_country: Option<&str>,
        out: &mut String,
    ) -> Result<(), Rejection> {
        append_cell(key.is_hashed(), out, |out| {
            self.dispatch_user_data(key, raw, row_country, out)
        })
    }

    /// The `user_data` value as sent: SHA-256 hex for hashed fields; `external_id` unhashed,
    /// exactly like `EXTERN_ID`, so it is the same value on both channels.
    pub fn user_data_cell(&self, key: UserDataKey, raw: &str) -> Result<String, Rejection> {
        self.event_user_data_cell(key, raw, None)
    }

    /// [`Normalizer::user_data_cell`] for an event that names its own country (its `country`
    /// value, raw): a national phone number takes it before the default country.
    pub fn event_user_data_cell(
        &self,
        key: UserDataKey,
        raw: &str,
        row_country: Option<&str>,
    ) -> Result<String, Rejection> {
        let mut out = String::with_capacity(64);
        self.user_data_cell_into(key, raw, row_country, &mut out)?;
        Ok(out)
    }
}

/// Appends what `normalize` writes, hashed in place when the key is hashed; on error `out` is
/// left as it was. Shared by the customer-list and Conversions API paths.
#[inline]
fn append_cell(
    hashed: bool,
    out: &mut String,
    normalize: impl FnOnce(&mut String) -> Result<Form, Rejection>,
) -> Result<(), Rejection> {
    let start = out.len();
    match normalize(out) {
        Ok(form) => {
            finish_cell(hashed, form, start, out);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Replaces the normalized value at `out[start..]` by its hash when the key is hashed.
#[inline]
fn finish_cell(hashed: bool, form: Form, start: usize, out: &mut String) {
    if hashed && form == Form::Normalized {
        hash_tail_in_place(out, start);
    }
}
