//! Custom-audience payloads: schema keys, cell validation and the compact member encoding.
//!
//! Parsing and validation are pure and run outside the state lock; the result is a list of
//! canonical members ready to insert or remove.
mod rows;
mod set;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;

use super::error::GraphError;
use super::params::Param;
use rows::RawPayload;
pub use set::{Member, MemberSet, decode_member};

/// Most rows one `/users` or `/usersreplace` call may carry.
pub const MAX_ROWS: usize = 10_000;
/// Most invalid-entry samples returned per call (Meta: "up to 100").
const MAX_SAMPLES: usize = 100;
/// `sha256("")`: what a client that hashes empty values sends; Meta counts it as garbage.
const SHA256_OF_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A multi-key schema column. The discriminant orders keys in the canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Key {
    ExternId,
    Email,
    Phone,
    Gen,
    Doby,
    Dobm,
    Dobd,
    Ln,
    Fn,
    Fi,
    Ct,
    St,
    Zip,
    Madid,
    Country,
    LookalikeValue,
}

const ALL_KEYS: [Key; 16] = [
    Key::ExternId,
    Key::Email,
    Key::Phone,
    Key::Gen,
    Key::Doby,
    Key::Dobm,
    Key::Dobd,
    Key::Ln,
    Key::Fn,
    Key::Fi,
    Key::Ct,
    Key::St,
    Key::Zip,
    Key::Madid,
    Key::Country,
    Key::LookalikeValue,
];

impl Key {
    pub fn name(self) -> &'static str {
        match self {
            Key::ExternId => "EXTERN_ID",
            Key::Email => "EMAIL",
            Key::Phone => "PHONE",
            Key::Gen => "GEN",
            Key::Doby => "DOBY",
            Key::Dobm => "DOBM",
            Key::Dobd => "DOBD",
            Key::Ln => "LN",
            Key::Fn => "FN",
            Key::Fi => "FI",
            Key::Ct => "CT",
            Key::St => "ST",
            Key::Zip => "ZIP",
            Key::Madid => "MADID",
            Key::Country => "COUNTRY",
            Key::LookalikeValue => "LOOKALIKE_VALUE",
        }
    }

    fn from_name(s: &str) -> Option<Key> {
        ALL_KEYS.iter().copied().find(|k| k.name() == s)
    }

    fn from_byte(b: u8) -> Key {
        ALL_KEYS[usize::from(b)]
    }

    /// Keys whose cells must be SHA-256 (64 lowercase hex); the others are free-form.
    fn hashed(self) -> bool {
        !matches!(self, Key::ExternId | Key::Madid | Key::LookalikeValue)
    }
}

/// Multi-key array schemas and single-string schemas are different data sources at Meta; an
/// audience keeps the one it was first filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Shape {
    MultiKey,
    SingleKey,
}

impl Shape {
    pub fn data_source(self) -> &'static str {
        match self {
            Shape::MultiKey => "FILE_IMPORTED.MULTI_HASHES",
            Shape::SingleKey => "FILE_IMPORTED.HASHES_OR_USER_IDS",
        }
    }
}

/// A validated upload: canonical members of the valid rows, plus what Meta reports back.
#[derive(Debug)]
pub struct Upload {
    pub shape: Shape,
    /// The schema has LOOKALIKE_VALUE (a value-based audience's uploads must, others must not).
    pub valued: bool,
    pub members: Vec<Member>,
    pub received: usize,
    pub invalid: usize,
    /// `invalid value → schema key` (an all-empty row shows as `"row N" → "EMPTY_ROW"`).
    pub samples: BTreeMap<String, String>,
}

/// Parses and validates `payload` (object, or JSON-encoded string in form bodies). A cell in
/// `flagged` makes its row invalid (see [`super::Faults::invalid_cells`]).
pub fn parse_payload(payload: Option<Param<'_>>, flagged: &[String]) -> Result<Upload, GraphError> {
    let payload = payload.ok_or_else(|| GraphError::required("payload"))?;
    let raw: RawPayload<'_> = payload.parse().map_err(|e| {
        GraphError::invalid(format!(
            "Param payload must be a JSON object with schema and data (an array of rows of strings): {e}"
        ))
    })?;
    let (keys, shape) = parse_schema(raw.schema)?;
    let rows = raw
        .data
        .ok_or_else(|| GraphError::invalid("Missing data in payload"))?;
    if rows.is_empty() {
        return Err(GraphError::invalid(
            "Param payload.data must be a non-empty array",
        ));
    }
    if rows.len() > MAX_ROWS {
        return Err(GraphError::invalid(format!(
            "Too many records in one request: {} (the maximum is {MAX_ROWS})",
            rows.len()
        )));
    }
    // Cells are encoded in key order, whatever the schema's column order.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| keys[i]);

    let mut upload = Upload {
        shape,
        valued: keys.contains(&Key::LookalikeValue),
        members: Vec::with_capacity(rows.len()),
        received: rows.len(),
        invalid: 0,
        samples: BTreeMap::new(),
    };
    let mut buf = Vec::with_capacity(keys.len() * 33);
    for (n, row) in rows.iter().enumerate() {
        if row.0.len() != keys.len() {
            return Err(GraphError::invalid(format!(
                "Row {n} of payload.data has {} values but the schema has {} keys",
                row.0.len(),
                keys.len()
            )));
        }
        buf.clear();
        let mut bad: Option<(String, Key)> = None;
        for &i in &order {
            let (key, cell) = (keys[i], row.0[i].as_ref());
            if cell.is_empty() {
                continue;
            }
            if !encode_cell(key, cell, &mut buf) || flagged.iter().any(|f| f == cell) {
                bad = Some((cell.chars().take(100).collect(), key));
                break;
            }
        }
        let sample = match bad {
            Some((value, key)) => Some((value, key.name())),
            None if buf.is_empty() => Some((format!("row {n}"), "EMPTY_ROW")),
            None => None,
        };
        match sample {
            Some((value, what)) => {
                upload.invalid += 1;
                if upload.samples.len() < MAX_SAMPLES {
                    upload.samples.insert(value, what.to_string());
                }
            }
            None => upload.members.push(Member::new(&buf)),
        }
    }
    Ok(upload)
}

/// Appends one non-empty cell; false when Meta would count it as an invalid entry.
fn encode_cell(key: Key, cell: &str, buf: &mut Vec<u8>) -> bool {
    if key.hashed() {
        let mut raw = [0u8; 32];
        // Lowercase hex only: the decode checks for hex digits, the fold (a few vector
        // instructions, no early exit) for uppercase ones.
        let ok = cell.len() == 64
            && const_hex::decode_to_slice(cell, &mut raw).is_ok()
            && cell
                .bytes()
                .fold(true, |lower, b| lower & !b.is_ascii_uppercase())
            && cell != SHA256_OF_EMPTY;
        if ok {
            buf.push(key as u8);
            buf.extend_from_slice(&raw);
        }
        ok
    } else {
        let numeric_ok = key != Key::LookalikeValue
            || cell.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0);
        let Ok(len) = u16::try_from(cell.len()) else {
            return false;
        };
        if numeric_ok {
            buf.push(key as u8);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(cell.as_bytes());
        }
        numeric_ok
    }
}

fn parse_schema(schema: Option<&RawValue>) -> Result<(Vec<Key>, Shape), GraphError> {
    let schema = schema.ok_or_else(|| GraphError::invalid("Missing schema in payload"))?;
    let single = |name: &str| match name {
        "EMAIL_SHA256" => Some(Key::Email),
        "PHONE_SHA256" => Some(Key::Phone),
        "MOBILE_ADVERTISER_ID" => Some(Key::Madid),
        "EXTERN_ID" => Some(Key::ExternId),
        _ => None,
    };
    if let Ok(name) = serde_json::from_str::<Cow<'_, str>>(schema.get()) {
        return match single(&name) {
            Some(k) => Ok((vec![k], Shape::SingleKey)),
            None => Err(GraphError::invalid(format!(
                "Invalid schema {name}: a single-key schema must be one of EMAIL_SHA256, PHONE_SHA256, MOBILE_ADVERTISER_ID, EXTERN_ID"
            ))),
        };
    }
    let names: Vec<Cow<'_, str>> = serde_json::from_str(schema.get()).map_err(|_| {
        GraphError::invalid("Param payload.schema must be a string or an array of strings")
    })?;
    if names.is_empty() {
        return Err(GraphError::invalid(
            "Param payload.schema must not be empty",
        ));
    }
    // `["EMAIL_SHA256"]` (one single-key name in an array) is the single-key source too.
    if let [only] = names.as_slice()
        && Key::from_name(only).is_none()
        && let Some(key) = single(only)
    {
        return Ok((vec![key], Shape::SingleKey));
    }
    let mut keys = Vec::with_capacity(names.len());
    for name in &names {
        let key = Key::from_name(name).ok_or_else(|| {
            GraphError::invalid(format!(
                "Invalid schema key {name}: supported keys are {}",
                ALL_KEYS.map(Key::name).join(", ")
            ))
        })?;
        if keys.contains(&key) {
            return Err(GraphError::invalid(format!("Duplicate schema key {name}")));
        }
        keys.push(key);
    }
    Ok((keys, Shape::MultiKey))
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn upload(json: &str) -> Result<Upload, GraphError> {
        parse_payload(Some(Param::Text(Cow::Borrowed(json))), &[])
    }

    const A: &str = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79";
    const B: &str = "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e";

    #[test]
    fn canonical_members_do_not_depend_on_column_order() {
        let a = upload(&format!(
            r#"{{"schema":["EMAIL","PHONE"],"data":[["{A}","{B}"]]}}"#
        ))
        .unwrap();
        let b = upload(&format!(
            r#"{{"schema":["PHONE","EMAIL"],"data":[["{B}","{A}"]]}}"#
        ))
        .unwrap();
        assert_eq!(a.members, b.members);
        let m = decode_member(&a.members[0]);
        assert_eq!(m["EMAIL"], A);
        assert_eq!(m["PHONE"], B);
    }

    #[test]
    fn malformed_cells_and_empty_rows_are_counted_not_added() {
        let sha_empty = SHA256_OF_EMPTY;
        let upper = A.to_uppercase();
        let u = upload(&format!(
            r#"{{"schema":["EMAIL","EXTERN_ID"],"data":[["john@x.com",""],["{upper}",""],["{sha_empty}",""],["",""],["{A}","c-1"]]}}"#
        ))
        .unwrap();
        assert_eq!((u.received, u.invalid, u.members.len()), (5, 4, 1));
        assert_eq!(u.samples["john@x.com"], "EMAIL");
        assert_eq!(u.samples["row 3"], "EMPTY_ROW");
        assert_eq!(decode_member(&u.members[0])["EXTERN_ID"], "c-1");
    }

    #[test]
    fn single_key_data_may_be_flat_or_nested() {
        let flat = upload(&format!(r#"{{"schema":"EMAIL_SHA256","data":["{A}"]}}"#)).unwrap();
        let nested = upload(&format!(
            r#"{{"schema":["EMAIL_SHA256"],"data":[["{A}"]]}}"#
        ))
        .unwrap();
        assert_eq!(flat.shape, Shape::SingleKey);
        assert_eq!(nested.shape, Shape::SingleKey);
        assert_eq!(flat.members, nested.members);
    }

    #[test]
    fn lookalike_value_must_be_numeric() {
        let u = upload(&format!(
            r#"{{"schema":["EMAIL","LOOKALIKE_VALUE"],"data":[["{A}","12.5"],["{B}","lots"],["{B}",7]]}}"#
        ))
        .unwrap();
        assert_eq!((u.members.len(), u.invalid), (2, 1));
    }
}
