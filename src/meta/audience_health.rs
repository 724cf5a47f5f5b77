//! Audience health: an audience as Meta reports it
//! (`GET /{audience_id}?fields=operation_status,delivery_status,approximate_count_*`), and which of
//! its codes are problems (a sync that finds one ends `partial`, with Meta's code and words in
//! `error_log`; see `crate::sync::readback`).
//!
//! Which codes are problems ([`problem`]), from Meta's Custom Audience reference:
//! * `operation_status` 415 (the last replace failed: the audience may hold only part of the
//!   upload), 470 (the account that created the audience is inactive), 471 (flagged for integrity:
//!   Meta blocks ads on it and refuses member updates with 100/1713230), and 500 or above (error).
//! * `delivery_status` 400 or above: Meta says the audience cannot be used for ads.
//!
//! Not problems, though shown: 200 Normal, 441 (Meta is still populating the audience, as it does
//! for a while after uploads), 414 (a replace is being applied), 100 (expiring soon), 410–412
//! (no upload yet, low match rate, many invalid entries: data the run's own counts and rejections
//! tell better), and `delivery_status` 300 (too small to deliver, as a new or small audience is).
use serde::Serialize;

use super::{AudienceInfo, StatusInfo};

/// What Meta reported about an audience: each part `None` when Meta left it out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AudienceHealth {
    pub operation_status: Option<i32>,
    pub operation_message: Option<String>,
    pub delivery_status: Option<i32>,
    pub delivery_message: Option<String>,
    pub approximate_count_lower: Option<i64>,
    pub approximate_count_upper: Option<i64>,
}

/// Longest status description kept (Meta's are a sentence or two).
const MAX_MESSAGE_CHARS: usize = 500;

impl AudienceHealth {
    pub fn from_info(info: &AudienceInfo) -> Self {
        let code = |s: &Option<StatusInfo>| {
            s.as_ref()
                .map(|s| i32::try_from(s.code).unwrap_or(i32::MAX))
        };
        let message = |s: &Option<StatusInfo>| {
            s.as_ref().map(|s| {
                s.description
                    .trim()
                    .chars()
                    .take(MAX_MESSAGE_CHARS)
                    .collect()
            })
        };
        AudienceHealth {
            operation_status: code(&info.operation_status),
            operation_message: message(&info.operation_status),
            delivery_status: code(&info.delivery_status),
            delivery_message: message(&info.delivery_status),
            approximate_count_lower: info.approximate_count_lower_bound,
            approximate_count_upper: info.approximate_count_upper_bound,
        }
    }
}

/// `operation_status` codes that are problems (see the module docs); 500 and above are too.
const OPERATION_PROBLEMS: [i32; 3] = [415, 470, 471];

/// Meta's report as one sentence for `error_log` when it is a problem, else `None`.
pub fn problem(audience_id: &str, health: &AudienceHealth) -> Option<String> {
    let says = |what: &str, code: i32, message: &Option<String>| match message.as_deref() {
        Some(m) if !m.is_empty() => format!("{what}{code} {m}"),
        _ => format!("{what}{code}"),
    };
    let mut found = Vec::new();
    if let Some(code) = health
        .operation_status
        .filter(|c| OPERATION_PROBLEMS.contains(c) || *c >= 500)
    {
        found.push(says("", code, &health.operation_message));
    }
    if let Some(code) = health.delivery_status.filter(|c| *c >= 400) {
        found.push(says("delivery ", code, &health.delivery_message));
    }
    (!found.is_empty())
        .then(|| format!("Meta reports audience {audience_id}: {}", found.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(operation: Option<i32>, delivery: Option<i32>) -> AudienceHealth {
        AudienceHealth {
            operation_status: operation,
            operation_message: operation.map(|c| format!("op text {c}")),
            delivery_status: delivery,
            delivery_message: delivery.map(|c| format!("delivery text {c}")),
            approximate_count_lower: Some(1_000),
            approximate_count_upper: Some(1_100),
        }
    }

    #[test]
    fn a_flagged_failed_or_undeliverable_audience_is_a_problem_in_metas_words() {
        assert_eq!(
            problem("123", &health(Some(471), Some(200))).as_deref(),
            Some("Meta reports audience 123: 471 op text 471")
        );
        for code in [415, 470, 500, 503] {
            assert!(
                problem("1", &health(Some(code), Some(200))).is_some(),
                "{code}"
            );
        }
        assert_eq!(
            problem("9", &health(Some(200), Some(400))).as_deref(),
            Some("Meta reports audience 9: delivery 400 delivery text 400")
        );
        assert_eq!(
            problem("9", &health(Some(471), Some(400))).as_deref(),
            Some("Meta reports audience 9: 471 op text 471; delivery 400 delivery text 400")
        );
        let bare = AudienceHealth {
            operation_status: Some(471),
            ..AudienceHealth::default()
        };
        assert_eq!(
            problem("5", &bare).as_deref(),
            Some("Meta reports audience 5: 471")
        );
    }

    #[test]
    fn normal_populating_small_or_in_progress_audiences_are_not_problems() {
        for op in [0, 100, 200, 400, 410, 411, 412, 414, 441] {
            for delivery in [200, 300] {
                assert_eq!(
                    problem("1", &health(Some(op), Some(delivery))),
                    None,
                    "{op}/{delivery}"
                );
            }
        }
        assert_eq!(problem("1", &AudienceHealth::default()), None);
    }

    #[test]
    fn metas_answer_becomes_codes_messages_and_bounds() {
        let info: AudienceInfo = serde_json::from_value(serde_json::json!({
            "id": "238",
            "operation_status": {"code": 471, "description": "  flagged  "},
            "delivery_status": {"code": "300", "description": "too small"},
            "approximate_count_lower_bound": 1000,
            "approximate_count_upper_bound": "1200"
        }))
        .unwrap();
        let h = AudienceHealth::from_info(&info);
        assert_eq!(h.operation_status, Some(471));
        assert_eq!(h.operation_message.as_deref(), Some("flagged"));
        assert_eq!(h.delivery_status, Some(300));
        assert_eq!(h.approximate_count_lower, Some(1000));
        assert_eq!(h.approximate_count_upper, Some(1200));
        let none: AudienceInfo = serde_json::from_value(serde_json::json!({"id": "1"})).unwrap();
        assert_eq!(AudienceHealth::from_info(&none), AudienceHealth::default());
    }
}
