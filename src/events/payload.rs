//! Pure event building: one outbox row (+ its customer, + the system's options) → one Conversions
//! API server event, and the checks that keep a bad event out of a batch.
//!
//! Flat mode: identity columns (or, when all are empty, the `customers_master` row of
//! `customer_id`) become `user_data`. Structured mode: the `user_data` JSON is used as given, with
//! the hashed keys normalized and hashed unless already SHA-256. Invalid values are dropped, never
//! sent as `sha256("")`.
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

/// Normalizes and hashes one `user_data` value as sent (`None`: invalid, leave it out).
/// `key` is the CAPI name: `em ph fn ln ct st zp country db ge external_id`; `country` is the
/// event's own country (raw), which completes a national phone number.
pub trait UserDataHasher {
    fn cell(&self, key: &str, raw: &str, country: Option<&str>) -> Option<String>;
}

/// `user_data` keys that are normalized (and, but for `external_id`, hashed).
pub const NORMALIZED_KEYS: &[&str] = &[
    "em",
    "ph",
    "fn",
    "ln",
    "ct",
    "st",
    "zp",
    "country",
    "db",
    "ge",
    "external_id",
];

/// `user_data` keys Meta documents as sent unhashed ("Customer Information Parameters").
pub const PLAIN_KEYS: &[&str] = &[
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
];

/// A structured `user_data` key as sent: `zip`, a common misspelling of `zp` (the Omni-CAPI
/// sample sends it), becomes `zp`; `None` for a key Meta does not document (`emial`,
/// `email_address`…). Such a key is dropped and counted, never sent: its value is most likely
/// personal data that Meta requires hashed, and sending it raw would leak it. Dropping (rather
/// than refusing the event) keeps the event's documented identifiers flowing; an event left with
/// no identifier at all is refused by [`event_json`] anyway.
pub fn documented_key(key: &str) -> Option<&str> {
    let key = if key == "zip" { "zp" } else { key };
    (NORMALIZED_KEYS.contains(&key) || PLAIN_KEYS.contains(&key)).then_some(key)
}

/// The structured `user_data` keys of `event` that [`event_json`] leaves out.
pub fn undocumented_keys(event: &OutboxEvent) -> Vec<&str> {
    match &event.user_data {
        Some(Value::Object(given)) => given
            .keys()
            .map(String::as_str)
            .filter(|k| documented_key(k).is_none())
            .collect(),
        _ => Vec::new(),
    }
}

/// Person identifiers, from the event's flat columns or from `customers_master`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
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
}

impl Identity {
    fn cells(&self) -> [(&'static str, &Option<String>); 11] {
        [
            ("em", &self.email),
            ("ph", &self.phone),
            ("fn", &self.first_name),
            ("ln", &self.last_name),
            ("ct", &self.city),
            ("st", &self.state),
            ("zp", &self.zip),
            ("country", &self.country),
            ("db", &self.birth_date),
            ("ge", &self.gender),
            ("external_id", &self.external_id),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.cells()
            .iter()
            .all(|(_, v)| v.as_deref().is_none_or(|s| s.trim().is_empty()))
    }
}

/// One outbox row as the pump reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxEvent {
    pub row_id: i64,
    pub event_name: String,
    pub event_time: DateTime<Utc>,
    pub action_source: String,
    pub event_id: String,
    pub event_source_url: Option<String>,
    pub identity: Identity,
    /// The `customers_master` row of `customer_id`, when there is one.
    pub customer: Option<Identity>,
    pub client_ip_address: Option<String>,
    pub client_user_agent: Option<String>,
    pub fbc: Option<String>,
    pub fbp: Option<String>,
    pub value: Option<f64>,
    pub currency: Option<String>,
    pub order_id: Option<String>,
    pub contents: Option<Value>,
    pub custom_data: Option<Value>,
    pub user_data: Option<Value>,
}

/// Per-system Limited Data Use options (off when `data_processing_options` is NULL).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessingOptions {
    pub data_processing_options: Option<Vec<String>>,
    pub country: Option<i32>,
    pub state: Option<i32>,
}

/// Meta refuses a whole batch for one event older than this (62 days for `physical_store`).
pub fn delivery_window(action_source: &str) -> Duration {
    if action_source == "physical_store" {
        Duration::days(62)
    } else {
        Duration::days(7)
    }
}

/// Events this close to the end of their window are expired rather than sent: the request may
/// spend minutes in retries, and one event past the window fails the whole batch.
pub const EXPIRY_MARGIN_MINUTES: i64 = 15;

pub fn is_expired(action_source: &str, event_time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - event_time > delivery_window(action_source) - Duration::minutes(EXPIRY_MARGIN_MINUTES)
}

/// The server event JSON, or why it must not be sent (it would fail its whole batch).
pub fn event_json(
    event: &OutboxEvent,
    options: &ProcessingOptions,
    hasher: &impl UserDataHasher,
) -> Result<Value, String> {
    if event.event_id.trim().is_empty() {
        return Err(
            "event_id is empty: Meta deduplicates on it, so it is never sent without one".into(),
        );
    }
    let user_data = user_data(event, hasher);
    if user_data.is_empty() {
        return Err("no customer information: user_data would be empty".into());
    }
    let mut out = Map::new();
    out.insert("event_name".into(), json!(event.event_name));
    out.insert("event_time".into(), json!(event.event_time.timestamp()));
    out.insert("action_source".into(), json!(event.action_source));
    out.insert("event_id".into(), json!(event.event_id));
    if let Some(url) = non_empty(&event.event_source_url) {
        out.insert("event_source_url".into(), json!(url));
    }
    out.insert("user_data".into(), Value::Object(user_data));
    let custom_data = custom_data(event);
    if !custom_data.is_empty() {
        out.insert("custom_data".into(), Value::Object(custom_data));
    }
    if let Some(dpo) = &options.data_processing_options {
        out.insert("data_processing_options".into(), json!(dpo));
        if let Some(country) = options.country {
            out.insert("data_processing_options_country".into(), json!(country));
        }
        if let Some(state) = options.state {
            out.insert("data_processing_options_state".into(), json!(state));
        }
    }
    Ok(Value::Object(out))
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn user_data(event: &OutboxEvent, hasher: &impl UserDataHasher) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(Value::Object(given)) = &event.user_data {
        let country = match given.get("country") {
            Some(Value::String(c)) => Some(c.as_str()),
            Some(Value::Array(list)) => list.iter().find_map(Value::as_str),
            _ => None,
        };
        for (key, value) in given {
            let Some(key) = documented_key(key) else {
                continue;
            };
            if NORMALIZED_KEYS.contains(&key) {
                if let Some(v) = hashed_value(key, value, country, hasher) {
                    out.insert(key.to_string(), v);
                }
            } else if !value.is_null() {
                out.insert(key.to_string(), value.clone());
            }
        }
        return out;
    }
    let identity = match &event.customer {
        Some(customer) if event.identity.is_empty() => customer,
        _ => &event.identity,
    };
    let country = non_empty(&identity.country);
    for (key, raw) in identity.cells() {
        if let Some(raw) = non_empty(raw)
            && let Some(cell) = hasher.cell(key, raw, country)
        {
            out.insert(key.into(), json!(cell));
        }
    }
    for (key, raw) in [
        ("client_ip_address", &event.client_ip_address),
        ("client_user_agent", &event.client_user_agent),
        ("fbc", &event.fbc),
        ("fbp", &event.fbp),
    ] {
        if let Some(raw) = non_empty(raw) {
            out.insert(key.into(), json!(raw));
        }
    }
    out
}

/// A structured value: a string or a list of strings, each normalized and hashed.
fn hashed_value(
    key: &str,
    value: &Value,
    country: Option<&str>,
    hasher: &impl UserDataHasher,
) -> Option<Value> {
    let one = |v: &Value| match v {
        Value::String(s) if !s.trim().is_empty() => hasher.cell(key, s, country),
        Value::Number(n) => hasher.cell(key, &n.to_string(), country),
        _ => None,
    };
    match value {
        Value::Array(items) => {
            let cells: Vec<Value> = items.iter().filter_map(one).map(Value::String).collect();
            (!cells.is_empty()).then_some(Value::Array(cells))
        }
        other => one(other).map(Value::String),
    }
}

fn custom_data(event: &OutboxEvent) -> Map<String, Value> {
    let mut out = match &event.custom_data {
        Some(Value::Object(given)) => given.clone(),
        _ => Map::new(),
    };
    // The columns win over the same keys in the JSON: they are the typed, validated values.
    if let Some(value) = event.value {
        out.insert("value".into(), json!(value));
    }
    if let Some(currency) = non_empty(&event.currency) {
        // Lowercase, as Meta's SDK normalizes it; Meta reads the ISO 4217 code in either case.
        out.insert("currency".into(), json!(currency.to_ascii_lowercase()));
    } else if let Some(Value::String(c)) = out.get("currency") {
        let lower = c.to_ascii_lowercase();
        out.insert("currency".into(), json!(lower));
    }
    if let Some(contents) = &event.contents
        && !contents.is_null()
    {
        out.insert("contents".into(), contents.clone());
    }
    if let Some(order_id) = non_empty(&event.order_id) {
        out.insert("order_id".into(), json!(order_id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Stands in for the identity normalizer: marks what it was given, refuses "bad".
    struct Marker;
    impl UserDataHasher for Marker {
        fn cell(&self, key: &str, raw: &str, country: Option<&str>) -> Option<String> {
            let within = country.map_or(String::new(), |c| format!(" in {c}"));
            (raw != "bad").then(|| format!("{key}({}{within})", raw.trim()))
        }
    }

    fn event() -> OutboxEvent {
        OutboxEvent {
            row_id: 1,
            event_name: "Purchase".into(),
            event_time: Utc.timestamp_opt(1_719_852_447, 0).unwrap(),
            action_source: "website".into(),
            event_id: "e-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_flat_event_hashes_identity_and_keeps_network_fields_plain() {
        let mut e = event();
        e.identity.email = Some("a@b.c".into());
        e.identity.phone = Some("bad".into());
        e.client_ip_address = Some("203.0.113.7".into());
        e.fbp = Some("fb.1.1.2".into());
        e.value = Some(50.0);
        e.currency = Some("USD".into());
        e.order_id = Some("O1".into());
        e.contents = Some(json!([{"id": "p", "quantity": 1}]));
        e.custom_data = Some(json!({"status": "gold", "value": 1}));
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(
            json,
            json!({
                "event_name": "Purchase", "event_time": 1_719_852_447, "action_source": "website",
                "event_id": "e-1",
                "user_data": {"em": "em(a@b.c)", "client_ip_address": "203.0.113.7", "fbp": "fb.1.1.2"},
                "custom_data": {"value": 50.0, "currency": "usd", "order_id": "O1",
                                "contents": [{"id": "p", "quantity": 1}], "status": "gold"}
            })
        );
    }

    #[test]
    fn an_event_without_identity_takes_its_customers_identity() {
        let mut e = event();
        e.client_user_agent = Some("UA".into());
        e.customer = Some(Identity {
            email: Some("c@d.e".into()),
            birth_date: Some("1990-01-02".into()),
            ..Default::default()
        });
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(
            json["user_data"],
            json!({"em": "em(c@d.e)", "db": "db(1990-01-02)", "client_user_agent": "UA"})
        );
    }

    #[test]
    fn an_event_with_its_own_identity_ignores_the_customer() {
        let mut e = event();
        e.identity.last_name = Some("Own".into());
        e.customer = Some(Identity {
            email: Some("c@d.e".into()),
            ..Default::default()
        });
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(json["user_data"], json!({"ln": "ln(Own)"}));
    }

    #[test]
    fn structured_user_data_is_hashed_key_by_key_and_documented_plain_keys_pass_through() {
        let mut e = event();
        e.identity.email = Some("ignored@flat.col".into());
        e.user_data = Some(json!({
            "em": ["x@y.z", "bad", ""], "ph": "bad", "zip": "1000",
            "fbc": "fb.1.2.3", "subscription_id": "s1", "external_id": ["u1"]
        }));
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(
            json["user_data"],
            json!({"em": ["em(x@y.z)"], "zp": "zp(1000)", "fbc": "fb.1.2.3",
                   "subscription_id": "s1", "external_id": ["external_id(u1)"]})
        );
    }

    #[test]
    fn undocumented_user_data_keys_are_left_out_and_named() {
        let mut e = event();
        e.user_data = Some(json!({
            "emial": "raw@example.com", "email_address": "raw@example.com",
            "em": "x@y.z", "lead_id": "L1", "zip": "1000"
        }));
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(
            json["user_data"],
            json!({"em": "em(x@y.z)", "lead_id": "L1", "zp": "zp(1000)"})
        );
        assert!(!json.to_string().contains("raw@example.com"));
        let mut dropped = undocumented_keys(&e);
        dropped.sort();
        assert_eq!(dropped, vec!["email_address", "emial"]);
    }

    #[test]
    fn an_event_with_only_undocumented_keys_is_refused_for_empty_user_data() {
        let mut e = event();
        e.user_data = Some(json!({"emial": "raw@example.com"}));
        let err = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap_err();
        assert!(err.contains("user_data would be empty"), "{err}");
    }

    #[test]
    fn a_blank_event_id_is_refused_before_sending() {
        for blank in ["", "   ", "\t\n"] {
            let mut e = event();
            e.event_id = blank.into();
            e.fbp = Some("fb.1.1.2".into());
            let err = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap_err();
            assert!(err.contains("event_id is empty"), "{err}");
        }
    }

    #[test]
    fn identity_values_are_normalized_with_the_events_own_country() {
        let mut e = event();
        e.identity.phone = Some("020 7946 0958".into());
        e.identity.country = Some("GB".into());
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(json["user_data"]["ph"], json!("ph(020 7946 0958 in GB)"));
        e.user_data = Some(json!({"ph": "020 7946 0958", "country": ["uk"]}));
        let json = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert_eq!(json["user_data"]["ph"], json!("ph(020 7946 0958 in uk)"));
    }

    #[test]
    fn an_event_with_no_customer_information_is_refused_before_sending() {
        let mut e = event();
        e.identity.email = Some("bad".into());
        let err = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap_err();
        assert!(err.contains("user_data"));
    }

    #[test]
    fn processing_options_are_sent_only_when_set() {
        let mut e = event();
        e.fbp = Some("fb.1.1.2".into());
        let off = event_json(&e, &ProcessingOptions::default(), &Marker).unwrap();
        assert!(off.get("data_processing_options").is_none());
        let ldu = ProcessingOptions {
            data_processing_options: Some(vec!["LDU".into()]),
            country: Some(1),
            state: Some(1000),
        };
        let on = event_json(&e, &ldu, &Marker).unwrap();
        assert_eq!(on["data_processing_options"], json!(["LDU"]));
        assert_eq!(on["data_processing_options_country"], json!(1));
        assert_eq!(on["data_processing_options_state"], json!(1000));
    }

    #[test]
    fn store_events_keep_62_days_and_others_7_less_the_margin() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let days = |d: i64| now - Duration::days(d);
        assert!(!is_expired("website", days(6), now));
        assert!(is_expired("website", days(7), now));
        assert!(is_expired("website", days(7) + Duration::minutes(10), now));
        assert!(!is_expired("physical_store", days(61), now));
        assert!(is_expired("physical_store", days(63), now));
    }
}
