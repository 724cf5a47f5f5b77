//! Match-key names: Meta customer-list schema keys and Conversions API `user_data` fields.

use std::fmt;
use std::str::FromStr;

/// A column of Meta's customer-list (Custom Audience) multi-key schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchKey {
    Email,
    Phone,
    Fn,
    Ln,
    Fi,
    Ct,
    St,
    Zip,
    Country,
    Doby,
    Dobm,
    Dobd,
    Gen,
    ExternId,
    Madid,
    LookalikeValue,
}

impl MatchKey {
    pub const ALL: [MatchKey; 16] = [
        MatchKey::Email,
        MatchKey::Phone,
        MatchKey::Fn,
        MatchKey::Ln,
        MatchKey::Fi,
        MatchKey::Ct,
        MatchKey::St,
        MatchKey::Zip,
        MatchKey::Country,
        MatchKey::Doby,
        MatchKey::Dobm,
        MatchKey::Dobd,
        MatchKey::Gen,
        MatchKey::ExternId,
        MatchKey::Madid,
        MatchKey::LookalikeValue,
    ];

    /// The schema name Meta expects in `payload.schema`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKey::Email => "EMAIL",
            MatchKey::Phone => "PHONE",
            MatchKey::Fn => "FN",
            MatchKey::Ln => "LN",
            MatchKey::Fi => "FI",
            MatchKey::Ct => "CT",
            MatchKey::St => "ST",
            MatchKey::Zip => "ZIP",
            MatchKey::Country => "COUNTRY",
            MatchKey::Doby => "DOBY",
            MatchKey::Dobm => "DOBM",
            MatchKey::Dobd => "DOBD",
            MatchKey::Gen => "GEN",
            MatchKey::ExternId => "EXTERN_ID",
            MatchKey::Madid => "MADID",
            MatchKey::LookalikeValue => "LOOKALIKE_VALUE",
        }
    }

    /// Whether Meta wants this key SHA-256 hashed. `EXTERN_ID` (hashing optional; we send it
    /// as-is so it is the same value on both channels), `MADID` (never hashed) and
    /// `LOOKALIKE_VALUE` (a number) are sent in clear.
    pub fn is_hashed(self) -> bool {
        !matches!(
            self,
            MatchKey::ExternId | MatchKey::Madid | MatchKey::LookalikeValue
        )
    }
}

impl fmt::Display for MatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key name that is not one of Meta's. Its `Display` lists the accepted names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    accepted: &'static str,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown match key; accepted keys: {}", self.accepted)
    }
}

impl std::error::Error for UnknownKey {}

const MATCH_KEY_NAMES: &str = "EMAIL, PHONE, FN, LN, FI, CT, ST, ZIP, COUNTRY, DOBY, DOBM, DOBD, GEN, EXTERN_ID, MADID, LOOKALIKE_VALUE";
const USER_DATA_KEY_NAMES: &str = "em, ph, fn, ln, ct, st, zp, country, db, ge, external_id";

impl FromStr for MatchKey {
    type Err = UnknownKey;

    /// Case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        MatchKey::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownKey {
                accepted: MATCH_KEY_NAMES,
            })
    }
}

/// A Conversions API `user_data` field that carries customer information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl UserDataKey {
    pub const ALL: [UserDataKey; 11] = [
        UserDataKey::Em,
        UserDataKey::Ph,
        UserDataKey::Fn,
        UserDataKey::Ln,
        UserDataKey::Ct,
        UserDataKey::St,
        UserDataKey::Zp,
        UserDataKey::Country,
        UserDataKey::Db,
        UserDataKey::Ge,
        UserDataKey::ExternalId,
    ];

    /// The field name inside `user_data`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserDataKey::Em => "em",
            UserDataKey::Ph => "ph",
            UserDataKey::Fn => "fn",
            UserDataKey::Ln => "ln",
            UserDataKey::Ct => "ct",
            UserDataKey::St => "st",
            UserDataKey::Zp => "zp",
            UserDataKey::Country => "country",
            UserDataKey::Db => "db",
            UserDataKey::Ge => "ge",
            UserDataKey::ExternalId => "external_id",
        }
    }

    /// Whether Meta wants this field hashed. `external_id` is sent unhashed so it is the
    /// same value as `EXTERN_ID` in audiences (Meta: "use exactly the same format everywhere").
    pub fn is_hashed(self) -> bool {
        self != UserDataKey::ExternalId
    }

    /// The customer-list key whose rule this field follows; `None` for `db`, which is a full
    /// date (`YYYYMMDD`) with no customer-list twin.
    pub fn match_key(self) -> Option<MatchKey> {
        Some(match self {
            UserDataKey::Em => MatchKey::Email,
            UserDataKey::Ph => MatchKey::Phone,
            UserDataKey::Fn => MatchKey::Fn,
            UserDataKey::Ln => MatchKey::Ln,
            UserDataKey::Ct => MatchKey::Ct,
            UserDataKey::St => MatchKey::St,
            UserDataKey::Zp => MatchKey::Zip,
            UserDataKey::Country => MatchKey::Country,
            UserDataKey::Ge => MatchKey::Gen,
            UserDataKey::ExternalId => MatchKey::ExternId,
            UserDataKey::Db => return None,
        })
    }
}

impl fmt::Display for UserDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UserDataKey {
    type Err = UnknownKey;

    /// Case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        UserDataKey::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownKey {
                accepted: USER_DATA_KEY_NAMES,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_match_key_round_trips_through_its_schema_name() {
        for key in MatchKey::ALL {
            assert_eq!(key.as_str().parse::<MatchKey>(), Ok(key));
            assert_eq!(key.as_str().to_lowercase().parse::<MatchKey>(), Ok(key));
            assert_eq!(key.to_string(), key.as_str());
        }
    }

    #[test]
    fn every_user_data_key_round_trips_through_its_field_name() {
        for key in UserDataKey::ALL {
            assert_eq!(key.as_str().parse::<UserDataKey>(), Ok(key));
            assert_eq!(key.as_str().to_uppercase().parse::<UserDataKey>(), Ok(key));
        }
    }

    #[test]
    fn an_unknown_key_error_lists_the_accepted_keys() {
        let err = "E-MAIL".parse::<MatchKey>().unwrap_err().to_string();
        assert!(
            err.contains("EMAIL") && err.contains("LOOKALIKE_VALUE"),
            "{err}"
        );
        let err = "email".parse::<UserDataKey>().unwrap_err().to_string();
        assert!(err.contains("external_id"), "{err}");
    }

    #[test]
    fn only_extern_id_madid_and_lookalike_value_are_sent_unhashed() {
        let clear: Vec<_> = MatchKey::ALL
            .into_iter()
            .filter(|k| !k.is_hashed())
            .collect();
        assert_eq!(
            clear,
            [
                MatchKey::ExternId,
                MatchKey::Madid,
                MatchKey::LookalikeValue
            ]
        );
        let clear: Vec<_> = UserDataKey::ALL
            .into_iter()
            .filter(|k| !k.is_hashed())
            .collect();
        assert_eq!(clear, [UserDataKey::ExternalId]);
    }

    #[test]
    fn match_key_names_are_unique() {
        let mut names: Vec<_> = MatchKey::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MatchKey::ALL.len());
    }
}
