//! What goes to Meta and what comes back, as plain types.
//!
//! Requests borrow the caller's rows, so a 10,000-row upload is serialized straight from them
//! (no copy). Responses are parsed tolerantly where Meta's docs disagree with themselves: numbers
//! that arrive as numeric strings, `session_id` as string or number, `invalid_entry_samples` as an
//! array or a map.
use std::fmt;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Meta accepts at most this many rows per `/users` or `/usersreplace` call.
pub const MAX_USERS_PER_CALL: usize = 10_000;
/// Meta accepts at most this many events per `/events` call.
pub const MAX_EVENTS_PER_CALL: usize = 1_000;

/// The rows of one `/users` call: anything that serializes as Meta's `data` (an array of rows,
/// each an array of cell strings) and can say how many rows it holds.
pub trait UserRows: Serialize {
    fn row_count(&self) -> usize;

    /// Appends the rows as JSON, the bytes `serde_json` makes of them; a type may write them
    /// faster than serde can (see [`crate::sync::cells::PackedRows`]).
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

impl UserRows for [Vec<String>] {
    fn row_count(&self) -> usize {
        self.len()
    }
}

impl UserRows for Vec<Vec<String>> {
    fn row_count(&self) -> usize {
        self.len()
    }
}

/// Which way an upload session changes an audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Remove,
    Add,
    Replace,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Remove => "remove",
            Direction::Add => "add",
            Direction::Replace => "replace",
        }
    }
}

/// One batch of an upload session: multi-key `schema` and rows of cells (hashed, or `""`).
pub struct UsersUpload<'a, R: UserRows + ?Sized = [Vec<String>]> {
    pub schema: &'a [&'a str],
    pub rows: &'a R,
    pub session: UploadSession,
}

impl<'a, R: UserRows + ?Sized> UsersUpload<'a, R> {
    /// The body parameters of the call, besides the token (the one place they are built).
    pub(crate) fn params(&self) -> UsersParams<'a, R> {
        UsersParams {
            payload: Payload {
                schema: self.schema,
                data: self.rows,
                is_raw: true,
            },
            session: self.session,
        }
    }

    /// The body as it would be sent, without the token: what `sync --dry-run` prints.
    pub fn body_preview(&self) -> serde_json::Value {
        serde_json::to_value(self.params()).unwrap_or(serde_json::Value::Null)
    }
}

/// Never prints cells: they are (hashed) personal data.
impl<R: UserRows + ?Sized> fmt::Debug for UsersUpload<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsersUpload")
            .field("schema", &self.schema)
            .field("rows", &self.rows.row_count())
            .field("session", &self.session)
            .finish()
    }
}

/// Meta's `session` object: one session per run and direction, `batch_seq` from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UploadSession {
    pub session_id: i64,
    pub batch_seq: u32,
    pub last_batch_flag: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_num_total: Option<u64>,
}

/// Body parameters of `/users` and `/usersreplace` (besides the token).
#[derive(Serialize)]
pub(crate) struct UsersParams<'a, R: UserRows + ?Sized> {
    pub payload: Payload<'a, R>,
    pub session: UploadSession,
}

#[derive(Serialize)]
pub(crate) struct Payload<'a, R: UserRows + ?Sized> {
    pub schema: &'a [&'a str],
    pub data: &'a R,
    /// "If the keys are combinational keys like LN_FN_ZIP, set this to false, otherwise set
    /// this to true" (Meta); ours are separate keys, as Meta's own SDK sends them.
    pub is_raw: bool,
}

/// Meta's answer to `/users` and `/usersreplace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersResponse {
    pub audience_id: Option<String>,
    pub session_id: Option<String>,
    pub num_received: u64,
    /// An approximation by Meta's own docs ("represents the number range").
    pub num_invalid_entries: u64,
    /// Up to 100 samples; a map form `{value: reason}` becomes `"value: reason"`.
    pub invalid_entry_samples: Vec<String>,
}

impl<'de> Deserialize<'de> for UsersResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            audience_id: Option<Value>,
            session_id: Option<Value>,
            num_received: Option<Value>,
            num_invalid_entries: Option<Value>,
            invalid_entry_samples: Option<Value>,
        }
        let raw = Raw::deserialize(d)?;
        Ok(UsersResponse {
            audience_id: id_string(raw.audience_id.as_ref()),
            session_id: id_string(raw.session_id.as_ref()),
            num_received: count(raw.num_received.as_ref()),
            num_invalid_entries: count(raw.num_invalid_entries.as_ref()),
            invalid_entry_samples: samples(raw.invalid_entry_samples),
        })
    }
}

/// Meta's `{code, description}` status objects on an audience.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    #[serde(deserialize_with = "lenient_i64")]
    pub code: i64,
    #[serde(default)]
    pub description: String,
}

/// The fields of a custom audience the sync reads back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AudienceInfo {
    #[serde(deserialize_with = "lenient_id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub operation_status: Option<StatusInfo>,
    pub delivery_status: Option<StatusInfo>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub approximate_count_lower_bound: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub approximate_count_upper_bound: Option<i64>,
}

/// One upload session of an audience, as `GET /{audience_id}/sessions` lists it (Meta sends the
/// numbers as numeric strings).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    #[serde(deserialize_with = "lenient_id")]
    pub session_id: String,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub start_time: Option<i64>,
    /// 0 or absent while the session is open.
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub end_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub num_received: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub num_invalid_entries: Option<i64>,
    #[serde(default)]
    pub stage: Option<String>,
}

impl SessionInfo {
    /// Whether Meta still takes batches for it.
    pub fn is_open(&self) -> bool {
        self.end_time.unwrap_or(0) == 0
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SessionPage {
    #[serde(default)]
    pub data: Vec<SessionInfo>,
}

/// The fields requested by `get_audience`.
pub(crate) const AUDIENCE_FIELDS: &str = "id,name,operation_status,delivery_status,approximate_count_lower_bound,approximate_count_upper_bound";

/// One Conversions API call: at most [`MAX_EVENTS_PER_CALL`] server events, built by the caller.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EventsRequest<'a> {
    pub data: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_event_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_agent: Option<&'a str>,
}

/// Meta's answer to `/events`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventsResponse {
    #[serde(deserialize_with = "lenient_u64")]
    pub events_received: u64,
    #[serde(default, deserialize_with = "lenient_messages")]
    pub messages: Vec<String>,
    pub fbtrace_id: Option<String>,
}

/// `POST /act_{id}/customaudiences` parameters.
#[derive(Serialize)]
pub(crate) struct CreateAudience<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub subtype: &'static str,
    pub customer_file_source: &'static str,
    /// `1` for a value-based audience; not sent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_value_based: Option<u8>,
}

/// `{id}` answers (create) and `{data:[{id,name}], paging}` pages (list).
#[derive(Deserialize)]
pub(crate) struct Created {
    #[serde(deserialize_with = "lenient_id")]
    pub id: String,
}

#[derive(Deserialize)]
pub(crate) struct AudiencePage {
    #[serde(default)]
    pub data: Vec<AudienceRef>,
    pub paging: Option<Paging>,
}

#[derive(Deserialize)]
pub(crate) struct AudienceRef {
    #[serde(deserialize_with = "lenient_id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize)]
pub(crate) struct Paging {
    pub cursors: Option<Cursors>,
    /// Only tells whether a next page exists: Meta's `next` URL carries the token, so it is
    /// never followed (the client builds its own request from `cursors.after`).
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Cursors {
    pub after: Option<String>,
}

fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn count(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn samples(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(v)))
            .collect(),
        Some(Value::String(s)) => vec![s],
        _ => Vec::new(),
    }
}

fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_string(Some(&Value::deserialize(d)?))
        .ok_or_else(|| serde::de::Error::custom("expected an id as string or number"))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    lenient_opt_i64(d)?.ok_or_else(|| serde::de::Error::custom("expected an integer"))
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| serde::de::Error::custom("expected a count"))
}

fn lenient_messages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => vec![text(&other)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn users(v: Value) -> UsersResponse {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn users_response_accepts_session_id_as_string_or_number() {
        let a = users(json!({"audience_id": "23850000", "session_id": "9778993",
            "num_received": 3, "num_invalid_entries": 0, "invalid_entry_samples": {}}));
        let b = users(json!({"audience_id": "23850000", "session_id": 9778993,
            "num_received": 3, "num_invalid_entries": 0, "invalid_entry_samples": []}));
        assert_eq!(a.session_id.as_deref(), Some("9778993"));
        assert_eq!(a, b);
        assert_eq!(a.num_received, 3);
    }

    #[test]
    fn invalid_entry_samples_as_array_or_map_become_strings() {
        let a = users(json!({"num_received": 2, "num_invalid_entries": 2,
            "invalid_entry_samples": ["abc", "def"]}));
        assert_eq!(a.invalid_entry_samples, vec!["abc", "def"]);
        let m = users(json!({"num_received": "2", "num_invalid_entries": "1",
            "invalid_entry_samples": {"abc": "invalid email"}}));
        assert_eq!(m.invalid_entry_samples, vec!["abc: invalid email"]);
        assert_eq!((m.num_received, m.num_invalid_entries), (2, 1));
    }

    #[test]
    fn a_usersreplace_answer_without_audience_id_still_parses() {
        let r = users(
            json!({"account_id": "123", "session_id": 5, "num_received": 10,
            "num_invalid_entries": 0, "invalid_entry_samples": {}}),
        );
        assert_eq!(r.audience_id, None);
        assert_eq!(r.session_id.as_deref(), Some("5"));
        assert!(r.invalid_entry_samples.is_empty());
    }

    #[test]
    fn audience_info_reads_statuses_and_bounds() {
        let a: AudienceInfo = serde_json::from_value(json!({"id": "238", "name": "cdp x",
            "operation_status": {"code": 200, "description": "Normal"},
            "delivery_status": {"code": 300, "description": "too small"},
            "approximate_count_lower_bound": 1000, "approximate_count_upper_bound": "1200"}))
        .unwrap();
        assert_eq!(a.operation_status.as_ref().unwrap().code, 200);
        assert_eq!(a.delivery_status.as_ref().unwrap().description, "too small");
        assert_eq!(a.approximate_count_lower_bound, Some(1000));
        assert_eq!(a.approximate_count_upper_bound, Some(1200));
        let bare: AudienceInfo = serde_json::from_value(json!({"id": 238})).unwrap();
        assert_eq!(bare.id, "238");
        assert_eq!(bare.operation_status, None);
        assert_eq!(bare.approximate_count_lower_bound, None);
    }

    #[test]
    fn events_response_parses_and_requires_events_received() {
        let r: EventsResponse = serde_json::from_value(json!({"events_received": 2,
            "messages": [], "fbtrace_id": "AbC"}))
        .unwrap();
        assert_eq!(r.events_received, 2);
        assert_eq!(r.fbtrace_id.as_deref(), Some("AbC"));
        assert!(serde_json::from_value::<EventsResponse>(json!({"messages": []})).is_err());
    }

    #[test]
    fn the_users_body_is_the_documented_multi_key_shape() {
        let rows = vec![vec!["h1".to_string(), String::new()]];
        let params = UsersParams {
            payload: Payload {
                schema: &["EMAIL", "PHONE"],
                data: &rows,
                is_raw: true,
            },
            session: UploadSession {
                session_id: 42,
                batch_seq: 1,
                last_batch_flag: true,
                estimated_num_total: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&params).unwrap(),
            json!({"payload": {"schema": ["EMAIL", "PHONE"], "data": [["h1", ""]], "is_raw": true},
                   "session": {"session_id": 42, "batch_seq": 1, "last_batch_flag": true}})
        );
    }

    #[test]
    fn upload_debug_shows_counts_not_cells() {
        let rows = vec![vec!["f1904cf1a9d73a55".to_string()]];
        let upload = UsersUpload {
            schema: &["EMAIL"],
            rows: &rows,
            session: UploadSession {
                session_id: 1,
                batch_seq: 1,
                last_batch_flag: false,
                estimated_num_total: Some(1),
            },
        };
        let shown = format!("{upload:?}");
        assert!(!shown.contains("f1904cf1"), "{shown}");
        assert!(shown.contains("rows: 1"), "{shown}");
    }
}
