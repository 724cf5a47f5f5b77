//! The pure step of an import: one CSV row, through its file's [`Layout`], into a validated
//! outbox row or a reason for rejecting it that never quotes the row's values.
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::{EventIdFrom, Field, Layout};

/// Meta's `action_source` values (the same list as the table's CHECK constraint).
pub const ACTION_SOURCES: &[&str] = &[
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
];

/// One validated outbox row (tenant added at insert time).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_name: String,
    pub event_time: DateTime<Utc>,
    pub action_source: String,
    pub event_id: String,
    pub customer_id: Option<i64>,
    pub event_source_url: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    pub external_id: Option<String>,
    pub client_ip_address: Option<String>,
    pub client_user_agent: Option<String>,
    pub fbc: Option<String>,
    pub fbp: Option<String>,
    pub order_id: Option<String>,
    pub currency: Option<String>,
    /// Decimal text as the column takes it (`"220.50"`).
    pub value: Option<String>,
    pub contents: Option<serde_json::Value>,
}

impl Layout {
    /// Validates one data row. The reason never quotes the row's values (they may be PII).
    pub fn parse_row(&self, record: &[&str]) -> Result<NewEvent, String> {
        if record.len() != self.width {
            return Err(format!(
                "expected {} columns, found {}",
                self.width,
                record.len()
            ));
        }
        let get = |field: Field| -> Option<String> {
            let from_column = self
                .columns
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, i)| record[*i].trim())
                .filter(|v| !v.is_empty());
            from_column
                .map(str::to_string)
                .or_else(|| self.constants.get(&field).cloned())
        };
        let event_name = get(Field::EventName).ok_or("event_name is empty")?;
        if event_name.chars().count() > 100 {
            return Err("event_name is longer than 100 characters".into());
        }
        let raw_time = get(Field::EventTime).ok_or("event_time is empty")?;
        let event_time = self
            .parse_time(&raw_time)
            .ok_or("event_time is not a date in any of the map's time_formats")?;
        let action_source = get(Field::ActionSource)
            .ok_or("action_source is empty")?
            .to_ascii_lowercase();
        if !ACTION_SOURCES.contains(&action_source.as_str()) {
            return Err("action_source is not one of Meta's action sources".into());
        }
        let value = match get(Field::Value) {
            Some(raw) => Some(self.parse_value(&raw)?),
            None => None,
        };
        let currency = match get(Field::Currency) {
            Some(c) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
                Some(c.to_ascii_uppercase())
            }
            Some(_) => return Err("currency is not a 3-letter ISO 4217 code".into()),
            None => None,
        };
        let customer_id = match get(Field::CustomerId) {
            Some(raw) => Some(
                raw.parse::<i64>()
                    .map_err(|_| "customer_id is not an integer")?,
            ),
            None => None,
        };
        let contents = self.contents(&get)?;
        let order_id = get(Field::OrderId);
        let has_event_id_column = self.columns.iter().any(|(f, _)| *f == Field::EventId);
        let event_id = match get(Field::EventId) {
            Some(id) => id,
            // The file has event ids: a row without one is an error, not one to make up (Meta
            // deduplicates on it, against the browser's events with the real id).
            None if has_event_id_column => {
                return Err("event_id is empty (Meta deduplicates on it)".into());
            }
            None => match self.event_id_from {
                EventIdFrom::OrderId => order_id
                    .clone()
                    .ok_or("event_id and order_id are both empty")?,
                EventIdFrom::RowHash => self.row_hash(record),
            },
        };
        if event_id.chars().count() > 200 {
            return Err("event_id is longer than 200 characters".into());
        }
        Ok(NewEvent {
            event_name,
            event_time,
            action_source,
            event_id,
            customer_id,
            event_source_url: get(Field::EventSourceUrl),
            email: get(Field::Email),
            phone: get(Field::Phone),
            first_name: get(Field::FirstName),
            last_name: get(Field::LastName),
            city: get(Field::City),
            state: get(Field::State),
            zip: get(Field::Zip),
            country: get(Field::Country),
            birth_date: get(Field::BirthDate),
            gender: get(Field::Gender),
            external_id: get(Field::ExternalId),
            client_ip_address: get(Field::ClientIpAddress),
            client_user_agent: get(Field::ClientUserAgent),
            fbc: get(Field::Fbc),
            fbp: get(Field::Fbp),
            order_id,
            currency,
            value,
            contents,
        })
    }

    fn parse_time(&self, raw: &str) -> Option<DateTime<Utc>> {
        self.time_formats.iter().find_map(|format| {
            if format == "unix" {
                return raw
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| DateTime::from_timestamp(s, 0));
            }
            if let Ok(t) = DateTime::parse_from_str(raw, format) {
                return Some(t.with_timezone(&Utc));
            }
            let naive = NaiveDateTime::parse_from_str(raw, format)
                .ok()
                .or_else(|| {
                    NaiveDate::parse_from_str(raw, format)
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })?;
            self.timezone
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        })
    }

    /// A non-negative amount with at most 2 decimals that fits NUMERIC(14, 2), as decimal text.
    fn parse_value(&self, raw: &str) -> Result<String, String> {
        let text = if self.decimal_separator == '.' {
            raw.to_string()
        } else {
            raw.replace(self.decimal_separator, ".")
        };
        let invalid = || "value is not a non-negative amount".to_string();
        let number: f64 = text.parse().map_err(|_| invalid())?;
        if !(0.0..1e12).contains(&number) {
            return Err(invalid());
        }
        if text.chars().any(|c| !(c.is_ascii_digit() || c == '.')) {
            return Err(invalid());
        }
        Ok(format!("{number:.2}"))
    }

    fn contents(
        &self,
        get: &dyn Fn(Field) -> Option<String>,
    ) -> Result<Option<serde_json::Value>, String> {
        let Some(id) = get(Field::ContentId) else {
            return Ok(None);
        };
        let mut item = serde_json::Map::new();
        item.insert("id".into(), id.into());
        if let Some(q) = get(Field::ContentQuantity) {
            let quantity: u32 = q
                .parse()
                .map_err(|_| "content quantity is not a whole number")?;
            item.insert("quantity".into(), quantity.into());
        }
        if let Some(d) = get(Field::ContentDelivery) {
            item.insert("delivery_category".into(), d.to_ascii_lowercase().into());
        }
        Ok(Some(serde_json::Value::Array(vec![item.into()])))
    }

    /// `csv-` + 32 hex of SHA-256 over the mapped columns: stable across re-imports of the row.
    fn row_hash(&self, record: &[&str]) -> String {
        let mut hasher = Sha256::new();
        for (field, index) in &self.columns {
            hasher.update(format!("{field:?}"));
            hasher.update([0x1f]);
            hasher.update(record[*index].trim());
            hasher.update([0x1e]);
        }
        let digest = const_hex::encode(hasher.finalize());
        format!("csv-{}", &digest[..32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::map::CsvMap;

    fn layout(map: &str, headers: &[&[&str]]) -> Layout {
        let headers: Vec<Vec<String>> = headers
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        CsvMap::parse(map).unwrap().resolve(&headers).unwrap()
    }

    const STORE: &str = r#"
        delimiter = ";"
        header_rows = 1
        decimal_separator = ","
        time_formats = ["%d/%m/%Y %H:%M"]
        timezone = "America/Sao_Paulo"
        event_id_from = "order_id"
        [constants]
        action_source = "physical_store"
        [columns]
        event_name = "Event"
        event_time = 1
        email = "E-mail"
        order_id = 3
        currency = 4
        value = 5
        content_id = 6
        content_quantity = 7
    "#;
    const HEADERS: &[&str] = &[
        "Event", "When", "E-mail", "Order", "Cur", "Value", "Sku", "Qty",
    ];

    #[test]
    fn a_store_row_becomes_an_event_with_its_order_as_event_id() {
        let l = layout(STORE, &[HEADERS]);
        let e = l
            .parse_row(&[
                "Purchase",
                "01/07/2024 13:47",
                "a@b.com",
                "ATN1",
                "brl",
                "220,5",
                "p1",
                "2",
            ])
            .unwrap();
        assert_eq!(e.event_id, "ATN1");
        assert_eq!(e.action_source, "physical_store");
        assert_eq!(e.currency.as_deref(), Some("BRL"));
        assert_eq!(e.value.as_deref(), Some("220.50"));
        assert_eq!(e.event_time.timestamp(), 1_719_852_420);
        assert_eq!(
            e.contents,
            Some(serde_json::json!([{"id": "p1", "quantity": 2}]))
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_columns_is_rejected() {
        let l = layout(STORE, &[HEADERS]);
        let err = l.parse_row(&["Purchase", "01/07/2024 13:47"]).unwrap_err();
        assert_eq!(err, "expected 8 columns, found 2");
    }

    #[test]
    fn a_bad_date_a_bad_value_and_a_bad_currency_are_named_without_quoting_the_row() {
        let l = layout(STORE, &[HEADERS]);
        let row = |time: &'static str, cur: &'static str, value: &'static str| {
            l.parse_row(&["Purchase", time, "a@b.com", "O1", cur, value, "", ""])
        };
        assert!(
            row("31/02/2024 10:00", "BRL", "1")
                .unwrap_err()
                .contains("event_time")
        );
        assert!(
            row("01/07/2024 13:47", "BRL", "12a")
                .unwrap_err()
                .contains("value")
        );
        assert!(
            row("01/07/2024 13:47", "BRL", "-3")
                .unwrap_err()
                .contains("value")
        );
        assert!(
            row("01/07/2024 13:47", "R$", "1")
                .unwrap_err()
                .contains("currency")
        );
        let err = row("01/07/2024 13:47", "BRL", "abc@x").unwrap_err();
        assert!(!err.contains("abc"), "{err}");
    }

    #[test]
    fn a_row_hash_event_id_is_stable_and_differs_between_rows() {
        let map = r#"
            [columns]
            event_name = 0
            event_time = 1
            action_source = 2
            email = 3
        "#;
        let l = layout(map, &[&["a", "b", "c", "d"]]);
        let one = l
            .parse_row(&["Lead", "1719852447", "website", "x@y.z"])
            .unwrap();
        let again = l
            .parse_row(&["Lead", "1719852447", "website", " x@y.z "])
            .unwrap();
        let other = l
            .parse_row(&["Lead", "1719852447", "website", "w@y.z"])
            .unwrap();
        assert_eq!(one.event_id, again.event_id);
        assert_ne!(one.event_id, other.event_id);
        assert!(one.event_id.starts_with("csv-"));
    }

    #[test]
    fn an_unknown_action_source_is_rejected() {
        let map = "[columns]\nevent_name = 0\nevent_time = 1\naction_source = 2\n";
        let l = layout(map, &[&["a", "b", "c"]]);
        let err = l.parse_row(&["Lead", "1719852447", "shop"]).unwrap_err();
        assert!(err.contains("action_source"));
    }
}
