//! The payload's borrowing deserializer: rows of cells read straight from the body, escapes
//! and numbers aside.
use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub(super) struct RawPayload<'a> {
    #[serde(borrow, default)]
    pub(super) schema: Option<&'a RawValue>,
    /// Parsed in the same pass as the payload (rows are checked against the schema after).
    #[serde(borrow, default)]
    pub(super) data: Option<Vec<Row<'a>>>,
}

/// One row: an array of cells, or a bare cell (single-key data is a flat array of strings).
pub(super) struct Row<'a>(pub(super) Vec<Cell<'a>>);

/// A cell, borrowed from the body unless it had escapes; numbers become their text.
pub(super) struct Cell<'a>(Cow<'a, str>);

impl Cell<'_> {
    pub(super) fn as_ref(&self) -> &str {
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
