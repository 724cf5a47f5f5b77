//! Custom-audience payloads: schema keys, cell validation and the compact member encoding.
//!
//! Parsing and validation are pure and run outside the state lock; the result is a list of
//! canonical members ready to insert or remove.
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::GraphError;
use super::params::Param;

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

/// One member, encoded compactly: for each non-empty cell in key order, the key byte, then 32
/// raw bytes for hashed keys or a `u16` LE length and the bytes for free-form keys. Equal
/// canonical rows ⇔ equal bytes, whatever the schema's column order.
pub type Member = Box<[u8]>;

/// The member set: SipHash dominated inserts (members are mostly SHA-256 bytes already, and
/// HashDoS is no concern for a local emulator), so a multiply-rotate hasher in the Fx style.
pub type MemberSet = std::collections::HashSet<Member, std::hash::BuildHasherDefault<FastHasher>>;

#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    fn add(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(Self::K).rotate_left(32)
    }
}

pub fn decode_member(m: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < m.len() {
        let key = Key::from_byte(m[i]);
        i += 1;
        let value = if key.hashed() {
            let v = const_hex::encode(&m[i..i + 32]);
            i += 32;
            v
        } else {
            let len = usize::from(u16::from_le_bytes([m[i], m[i + 1]]));
            let v = String::from_utf8_lossy(&m[i + 2..i + 2 + len]).into_owned();
            i += 2 + len;
            v
        };
        out.insert(key.name().to_string(), value);
    }
    out
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
            None => upload.members.push(buf.as_slice().into()),
        }
    }
    Ok(upload)
}

/// Appends one non-empty cell; false when Meta would count it as an invalid entry.
fn encode_cell(key: Key, cell: &str, buf: &mut Vec<u8>) -> bool {
    if key.hashed() {
        let mut raw = [0u8; 32];
        let ok = cell.len() == 64
            && cell.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && cell != SHA256_OF_EMPTY
            && const_hex::decode_to_slice(cell, &mut raw).is_ok();
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

#[derive(Deserialize)]
struct RawPayload<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    /// Parsed in the same pass as the payload (rows are checked against the schema after).
    #[serde(borrow, default)]
    data: Option<Vec<Row<'a>>>,
}

/// One row: an array of cells, or a bare cell (single-key data is a flat array of strings).
struct Row<'a>(Vec<Cell<'a>>);

/// A cell, borrowed from the body unless it had escapes; numbers become their text.
struct Cell<'a>(Cow<'a, str>);

impl Cell<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

struct CellVisitor;

impl<'de> Visitor<'de> for CellVisitor {
    type Value = Cell<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cell(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cell(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cell(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cell(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cell(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cell(Cow::Owned(v.to_string())))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Cell<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CellVisitor)
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Row<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings or a string")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut cells = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(c) = seq.next_element::<Cell<'de>>()? {
            cells.push(c);
        }
        Ok(Row(cells))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        CellVisitor.visit_borrowed_str(v).map(|c| Row(vec![c]))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        CellVisitor.visit_str(v).map(|c| Row(vec![c]))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        CellVisitor.visit_string(v).map(|c| Row(vec![c]))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        CellVisitor.visit_i64(v).map(|c| Row(vec![c]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        CellVisitor.visit_u64(v).map(|c| Row(vec![c]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        CellVisitor.visit_f64(v).map(|c| Row(vec![c]))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Row<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RowVisitor)
    }
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
