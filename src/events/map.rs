//! Column maps for CSV imports (`config/maps/*.toml`), and the pure step that turns one CSV row
//! into a validated outbox row or a reason for rejecting it (`map/row.rs`).
//!
//! A map names the delimiter, how many header rows to skip, which column feeds which outbox field
//! (by 0-based index or by header name), constant fields (e.g. `action_source = "physical_store"`)
//! and the accepted time formats. Store and website exports differ only in their map.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

mod row;

pub use row::{ACTION_SOURCES, NewEvent};

/// Outbox fields a map may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    EventName,
    EventTime,
    ActionSource,
    EventId,
    EventSourceUrl,
    CustomerId,
    Email,
    Phone,
    FirstName,
    LastName,
    City,
    State,
    Zip,
    Country,
    BirthDate,
    Gender,
    ExternalId,
    ClientIpAddress,
    ClientUserAgent,
    Fbc,
    Fbp,
    OrderId,
    Currency,
    Value,
    /// `contents[0].id`.
    ContentId,
    /// `contents[0].quantity`.
    ContentQuantity,
    /// `contents[0].delivery_category`.
    ContentDelivery,
}

/// Where a field's value comes from: a 0-based column index or a header name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

/// How an event without an `event_id` column gets one (it must be the same on every import of
/// the same row, so that a re-import inserts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventIdFrom {
    /// `order_id` (rows without one are rejected): one event per order.
    OrderId,
    /// A SHA-256 of the row's mapped values: one event per distinct row.
    #[default]
    RowHash,
}

/// A map file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvMap {
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Rows skipped before the data starts.
    #[serde(default = "default_header_rows")]
    pub header_rows: usize,
    /// 1-based header row holding the column names that `columns` may refer to (default: the last).
    pub names_row: Option<usize>,
    /// Expected number of columns per data row (default: the names row's count).
    pub columns_per_row: Option<usize>,
    /// chrono formats tried in order; `"unix"` accepts epoch seconds.
    #[serde(default = "default_time_formats")]
    pub time_formats: Vec<String>,
    /// IANA zone for times written without an offset (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// `","` for exports that write `220,50`.
    #[serde(default = "default_decimal_separator")]
    pub decimal_separator: char,
    #[serde(default)]
    pub event_id_from: EventIdFrom,
    #[serde(default)]
    pub constants: BTreeMap<Field, String>,
    pub columns: BTreeMap<Field, Column>,
}

fn default_delimiter() -> char {
    ','
}
fn default_header_rows() -> usize {
    1
}
fn default_decimal_separator() -> char {
    '.'
}
fn default_time_formats() -> Vec<String> {
    vec![
        "%Y-%m-%dT%H:%M:%S%:z".into(),
        "%Y-%m-%d %H:%M:%S".into(),
        "unix".into(),
    ]
}

impl CsvMap {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read the map {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("Invalid map {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let map: CsvMap = toml::from_str(text)?;
        if !map.delimiter.is_ascii() {
            bail!("delimiter must be one ASCII character");
        }
        if let Some(row) = map.names_row
            && (row == 0 || row > map.header_rows)
        {
            bail!(
                "names_row {row} is not one of the {} header rows",
                map.header_rows
            );
        }
        for field in [Field::EventName, Field::EventTime, Field::ActionSource] {
            if !map.columns.contains_key(&field) && !map.constants.contains_key(&field) {
                bail!("{field:?} needs a column or a constant");
            }
        }
        if let Some(zone) = &map.timezone {
            zone.parse::<chrono_tz::Tz>()
                .map_err(|_| anyhow::anyhow!("unknown timezone {zone}"))?;
        }
        Ok(map)
    }

    /// Resolves header names against the header rows; gives the layout used for every data row.
    pub fn resolve(&self, header_rows: &[Vec<String>]) -> anyhow::Result<Layout> {
        let names = match self.names_row {
            Some(row) => header_rows.get(row - 1),
            None => header_rows.last(),
        };
        let mut columns = Vec::with_capacity(self.columns.len());
        for (field, column) in &self.columns {
            let index = match column {
                Column::Index(i) => *i,
                Column::Name(name) => names
                    .and_then(|row| {
                        row.iter()
                            .position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
                    })
                    .with_context(|| format!("no header column named {name:?} for {field:?}"))?,
            };
            columns.push((*field, index));
        }
        let width = match (self.columns_per_row, names) {
            (Some(n), _) => n,
            (None, Some(row)) => row.len(),
            (None, None) => columns.iter().map(|(_, i)| i + 1).max().unwrap_or(0),
        };
        if let Some((field, index)) = columns.iter().find(|(_, i)| *i >= width) {
            bail!("{field:?} maps to column {index}, but rows have {width} columns");
        }
        let timezone = match &self.timezone {
            Some(zone) => zone
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown timezone"))?,
            None => chrono_tz::UTC,
        };
        Ok(Layout {
            columns,
            width,
            constants: self.constants.clone(),
            time_formats: self.time_formats.clone(),
            timezone,
            decimal_separator: self.decimal_separator,
            event_id_from: self.event_id_from,
        })
    }
}

/// A map resolved against a file's headers: what [`Layout::parse_row`] needs.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: Vec<(Field, usize)>,
    pub width: usize,
    constants: BTreeMap<Field, String>,
    time_formats: Vec<String>,
    timezone: chrono_tz::Tz,
    decimal_separator: char,
    event_id_from: EventIdFrom,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_without_an_event_time_is_refused() {
        let err = CsvMap::parse("[columns]\nevent_name = 0\naction_source = 2\n").unwrap_err();
        assert!(err.to_string().contains("EventTime"), "{err}");
    }

    #[test]
    fn a_header_name_that_is_not_in_the_file_is_named() {
        let map = "[columns]\nevent_name = \"Evento\"\nevent_time = 1\naction_source = 2\n";
        let err = CsvMap::parse(map)
            .unwrap()
            .resolve(&[vec!["a".into(), "b".into(), "c".into()]])
            .unwrap_err();
        assert!(err.to_string().contains("Evento"), "{err}");
    }
}
