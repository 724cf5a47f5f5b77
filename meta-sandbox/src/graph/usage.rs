//! The usage headers Meta sends with every answer, and where they point.
use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::faults::UsageFault;

/// Where the usage headers point: an ad account (audience calls) or a pixel (events).
pub(super) enum UsageKey {
    Account(String),
    Pixel(String),
    None,
}

/// `X-Business-Use-Case-Usage`, `X-App-Usage` and (for audience calls) `X-Ad-Account-Usage`.
pub(super) fn usage_headers(headers: &mut HeaderMap, key: &UsageKey, usage: Option<UsageFault>) {
    let (pct, regain) = match usage {
        Some(u) => (u.call_count_pct, u.estimated_time_to_regain_access),
        None => (1, 0),
    };
    let entry = |kind: &str| {
        json!([{
            "type": kind,
            "call_count": pct,
            "total_cputime": pct,
            "total_time": pct,
            "estimated_time_to_regain_access": regain,
            "ads_api_access_tier": "standard_access",
        }])
    };
    let buc = match key {
        UsageKey::Account(id) => Some(json!({ id.as_str(): entry("custom_audience") })),
        UsageKey::Pixel(id) => Some(json!({ id.as_str(): entry("ads_management") })),
        UsageKey::None => None,
    };
    let mut put = |name: &'static str, v: Value| {
        if let Ok(h) = HeaderValue::from_str(&v.to_string()) {
            headers.insert(name, h);
        }
    };
    if let Some(b) = buc {
        put("x-business-use-case-usage", b);
    }
    put(
        "x-app-usage",
        json!({ "call_count": pct, "total_cputime": pct, "total_time": pct }),
    );
    if let UsageKey::Account(_) = key {
        put(
            "x-ad-account-usage",
            json!({ "acc_id_util_pct": pct, "reset_time_duration": regain * 60, "ads_api_access_tier": "standard_access" }),
        );
    }
}
