//! INTERIM: a stand-in for `crate::identity` (branch `identity`), with the same names and
//! signatures as its contract, so the pump can be built and tested before that branch lands.
//! Delete this file and import `crate::identity::{Normalizer, UserDataKey}` in `pump.rs` once it
//! has. Meta's documented rules, simplified (no country-name mapping, no US-state table).
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDataKey {
    Em,
    Ph,
    Fn,
    Ln,
    Ct,
    St,
    Zp,
    Country,
    Db,
    Ge,
    ExternalId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection;

pub struct Normalizer {
    default_country: Option<phonenumber::country::Id>,
}

impl Normalizer {
    pub fn new(default_country: Option<&str>) -> Self {
        Self {
            default_country: default_country
                .and_then(|c| c.trim().to_ascii_uppercase().parse().ok()),
        }
    }

    pub fn user_data_cell(&self, key: UserDataKey, raw: &str) -> Result<String, Rejection> {
        let raw = raw.trim();
        if key != UserDataKey::ExternalId
            && raw.len() == 64
            && raw.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Ok(raw.to_ascii_lowercase());
        }
        let letters = |s: &str| -> String {
            s.to_lowercase()
                .chars()
                .filter(|c| c.is_alphabetic())
                .collect()
        };
        let normalized = match key {
            UserDataKey::ExternalId => return non_empty(raw.to_string()),
            UserDataKey::Em => {
                let e = raw.to_lowercase();
                if !e.contains('@') || e.contains(' ') {
                    return Err(Rejection);
                }
                e
            }
            UserDataKey::Ph => self.phone(raw)?,
            UserDataKey::Fn | UserDataKey::Ln | UserDataKey::Ct | UserDataKey::St => letters(raw),
            UserDataKey::Zp => raw
                .to_lowercase()
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect(),
            UserDataKey::Country => {
                let c = letters(raw);
                if c.len() != 2 {
                    return Err(Rejection);
                }
                c
            }
            UserDataKey::Db => {
                let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
                if digits.len() != 8 {
                    return Err(Rejection);
                }
                digits
            }
            UserDataKey::Ge => match raw.to_lowercase().chars().next() {
                Some(c @ ('m' | 'f')) => c.to_string(),
                _ => return Err(Rejection),
            },
        };
        let normalized = non_empty(normalized)?;
        Ok(const_hex::encode(Sha256::digest(normalized.as_bytes())))
    }

    fn phone(&self, raw: &str) -> Result<String, Rejection> {
        let parsed = phonenumber::parse(self.default_country, raw).map_err(|_| Rejection)?;
        let code = parsed.code().value();
        let national = parsed.national().value();
        Ok(format!("{code}{national}"))
    }
}

fn non_empty(s: String) -> Result<String, Rejection> {
    if s.is_empty() { Err(Rejection) } else { Ok(s) }
}
