//! A Graph call's parameters, merged from the body (JSON or form) and the query string.
//!
//! Meta's SDKs send form bodies whose object parameters (`payload`, `session`, `data`) are
//! JSON-encoded strings, and put GET/DELETE parameters in the query string; our client sends JSON
//! bodies. All three end up here, borrowed from the request bytes where possible.
use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::GraphError;

/// One parameter value: text (form fields, query values, JSON strings) or a raw JSON value.
#[derive(Debug)]
pub enum Param<'a> {
    Text(Cow<'a, str>),
    Json(&'a RawValue),
}

impl Param<'_> {
    /// Text form: the string itself, or the JSON text of a number/bool/object.
    pub fn text(&self) -> &str {
        match self {
            Param::Text(s) => s,
            Param::Json(r) => r.get(),
        }
    }

    /// Parses the value as JSON (a text parameter holds JSON-encoded text).
    pub fn parse<'p, T: Deserialize<'p>>(&'p self) -> serde_json::Result<T> {
        serde_json::from_str(self.text())
    }
}

#[derive(Debug, Default)]
pub struct Params<'a> {
    body: Vec<(Cow<'a, str>, Param<'a>)>,
    query: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Params<'a> {
    pub fn parse(
        query: Option<&'a str>,
        content_type: Option<&str>,
        body: &'a [u8],
    ) -> Result<Self, GraphError> {
        let query = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
            .unwrap_or_default();
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            form_urlencoded::parse(body)
                .map(|(k, v)| (k, Param::Text(v)))
                .collect()
        } else if ct.starts_with("multipart/") {
            return Err(GraphError::invalid(
                "The sandbox accepts application/json and application/x-www-form-urlencoded bodies, not multipart",
            ));
        } else {
            let map: HashMap<Cow<'a, str>, &'a RawValue> =
                serde_json::from_slice(body).map_err(|e| {
                    GraphError::invalid(format!("Invalid JSON in the request body: {e}"))
                })?;
            map.into_iter()
                .map(|(k, raw)| {
                    let v = if raw.get().starts_with('"') {
                        match serde_json::from_str::<&'a str>(raw.get()) {
                            Ok(s) => Param::Text(Cow::Borrowed(s)),
                            Err(_) => Param::Text(Cow::Owned(
                                serde_json::from_str::<String>(raw.get()).map_err(|e| {
                                    GraphError::invalid(format!("Invalid JSON string for {k}: {e}"))
                                })?,
                            )),
                        }
                    } else {
                        Param::Json(raw)
                    };
                    Ok((k, v))
                })
                .collect::<Result<_, GraphError>>()?
        };
        Ok(Params { body, query })
    }

    /// Body parameters win over query parameters of the same name.
    pub fn get(&self, name: &str) -> Option<Param<'_>> {
        if let Some((_, v)) = self.body.iter().find(|(k, _)| k == name) {
            return Some(match v {
                Param::Text(s) => Param::Text(Cow::Borrowed(s)),
                Param::Json(r) => Param::Json(r),
            });
        }
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Param::Text(Cow::Borrowed(v)))
    }

    /// A parameter as text; JSON `null` and empty strings count as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|p| p.text().to_string())
            .filter(|s| !s.is_empty() && s != "null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_form_bodies_and_query_strings_read_alike() {
        let json = br#"{"access_token":"t","limit":5,"payload":{"schema":"EMAIL_SHA256"}}"#;
        let p = Params::parse(None, Some("application/json"), json).unwrap();
        assert_eq!(p.text("access_token").as_deref(), Some("t"));
        assert_eq!(p.text("limit").as_deref(), Some("5"));
        let v: serde_json::Value = p.get("payload").unwrap().parse().unwrap();
        assert_eq!(v["schema"], "EMAIL_SHA256");

        let form = b"access_token=t&payload=%7B%22schema%22%3A%22EMAIL_SHA256%22%7D";
        let p = Params::parse(None, Some("application/x-www-form-urlencoded"), form).unwrap();
        let v: serde_json::Value = p.get("payload").unwrap().parse().unwrap();
        assert_eq!(v["schema"], "EMAIL_SHA256");

        let p = Params::parse(Some("access_token=q&fields=id%2Cname"), None, b"").unwrap();
        assert_eq!(p.text("fields").as_deref(), Some("id,name"));
        assert_eq!(p.text("access_token").as_deref(), Some("q"));
    }

    #[test]
    fn a_body_that_is_not_json_is_a_code_100_error() {
        let e = Params::parse(None, Some("application/json"), b"{nope").unwrap_err();
        assert_eq!(e.code, 100);
    }
}
