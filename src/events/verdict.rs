//! Pure: what Meta's answer to one `/events` request means for the events in it, and how long a
//! transient failure holds them back.
//!
//! * Accepted: every event in the request is sent.
//! * Rejected: a non-transient error that is about the request's content (code 100, any Graph
//!   code that is neither transient nor about the caller, an HTTP 4xx such as 413): some event in
//!   it is to blame, so the request is split until the culprit stands alone (see `split.rs`).
//! * Stop: the error is about the caller or the moment, not the events — an expired token,
//!   missing permissions, a pixel that does not exist (100/33), a deprecated version, throttling
//!   or Meta-side trouble that outlasted the client's retries, a timeout. The events are left
//!   pending and never marked rejected: after a transient error they wait [`retry_delay`]; after
//!   one about the caller they go on the next run (once someone has fixed the token…).
use std::time::Duration;

use super::split::{Attempt, Stopped};
use crate::meta::{EventsResponse, MetaError, RetryClass};

/// Times an event may be handed to Meta without its outcome being recorded (the worker died, or
/// the recording failed after Meta answered) before it is recorded `failed` instead of resent.
/// Meta deduplicates an `event_id` + `event_name` within 48 hours, so these resends are harmless.
pub const MAX_UNRECORDED_SENDS: i32 = 3;

/// Meta's answer as the splitter needs it.
pub fn classify(result: Result<EventsResponse, MetaError>) -> Attempt {
    match result {
        Ok(response) => Attempt::Accepted {
            events_received: response.events_received,
            fbtrace_id: response.fbtrace_id,
        },
        Err(e) if blames_the_events(&e) => {
            let fbtrace_id = match &e {
                MetaError::Graph(g) => g.fbtrace_id.clone(),
                _ => None,
            };
            let mut message = e.to_string();
            if let MetaError::Graph(g) = &e
                && let Some(detail) = g.error_user_msg.as_deref().filter(|m| !m.is_empty())
                && !message.contains(detail)
            {
                message.push_str(": ");
                message.push_str(detail);
            }
            Attempt::Rejected {
                message,
                fbtrace_id,
            }
        }
        Err(e) => Attempt::Stop(Stopped {
            reason: e.to_string(),
            backoff: e.retry_class() == RetryClass::Retry || matches!(e, MetaError::Decode(_)),
        }),
    }
}

/// Whether a failed request says something is wrong with its events (rather than with the
/// caller, the pixel, or the moment).
fn blames_the_events(e: &MetaError) -> bool {
    if e.retry_class() == RetryClass::Retry {
        return false;
    }
    match e {
        MetaError::Graph(g) => !about_the_caller(g.code, g.subcode),
        // 401/403/404 are about the token, the app or the pixel; other 4xx (400, 413, 422) are
        // about the body.
        MetaError::Http { status } => !matches!(status, 401 | 403 | 404),
        // More events than a call takes: splitting fixes it.
        MetaError::TooLarge { .. } => true,
        // A 200 with a body we cannot read: Meta may have the events. Not their fault.
        MetaError::Decode(_) => false,
        // A proxy's page for a body too large or malformed is about the body; other pages are not.
        MetaError::NotJson { status, .. } => matches!(status, 400 | 413 | 422),
        MetaError::Timeout | MetaError::Connection(_) | MetaError::Connect(_) => false,
    }
}

/// Codes no event is to blame for: the token (190, 102), permissions (10, 200–299), the app's
/// tier (270), a deprecated version (2635), a pixel that does not exist or is not ours (100/33).
fn about_the_caller(code: i64, subcode: Option<i64>) -> bool {
    matches!(code, 190 | 102 | 10 | 200..=299 | 2635) || (code == 100 && subcode == Some(33))
}

/// How long events wait after their `failures`-th transient failure: `base · 2^(failures-1)`,
/// at most an hour (they expire on their own once Meta's window closes).
pub fn retry_delay(base: Duration, failures: i32) -> Duration {
    const MAX: Duration = Duration::from_secs(3600);
    let exponent = failures.clamp(1, 20) as u32 - 1;
    base.saturating_mul(1u32 << exponent).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::GraphError;

    fn graph(code: i64, subcode: Option<i64>, transient: bool) -> MetaError {
        MetaError::from(GraphError {
            http_status: 400,
            code,
            subcode,
            error_type: "OAuthException".into(),
            message: "Invalid parameter".into(),
            fbtrace_id: Some("T1".into()),
            is_transient: transient,
            error_user_title: None,
            error_user_msg: Some("event 3: value is required".into()),
        })
    }

    #[test]
    fn an_invalid_parameter_answer_blames_the_events_and_keeps_metas_message() {
        let Attempt::Rejected {
            message,
            fbtrace_id,
        } = classify(Err(graph(100, None, false)))
        else {
            panic!("expected a rejection");
        };
        assert!(message.contains("Meta error 100"), "{message}");
        assert!(message.contains("event 3: value is required"), "{message}");
        assert_eq!(fbtrace_id.as_deref(), Some("T1"));
    }

    #[test]
    fn any_other_permanent_error_about_the_content_blames_the_events() {
        assert!(matches!(
            classify(Err(graph(3, None, false))),
            Attempt::Rejected { .. }
        ));
        assert!(matches!(
            classify(Err(MetaError::Http { status: 413 })),
            Attempt::Rejected { .. }
        ));
    }

    #[test]
    fn a_missing_pixel_an_expired_token_or_a_transient_error_stops_instead_of_rejecting() {
        for e in [
            graph(100, Some(33), false),
            graph(190, Some(463), false),
            graph(200, None, false),
            graph(2, None, true),
            graph(80_003, None, false),
            graph(3, None, true),
            MetaError::Timeout,
            MetaError::Http { status: 503 },
            MetaError::Http { status: 403 },
            MetaError::Decode("not JSON".into()),
        ] {
            let shown = e.to_string();
            assert!(matches!(classify(Err(e)), Attempt::Stop(_)), "{shown}");
        }
    }

    #[test]
    fn only_a_transient_stop_makes_the_events_wait_out_a_backoff() {
        let backoff = |e| match classify(Err(e)) {
            Attempt::Stop(s) => s.backoff,
            other => panic!("{other:?}"),
        };
        assert!(backoff(graph(2, None, true)));
        assert!(backoff(graph(613, None, false)));
        assert!(backoff(MetaError::Timeout));
        assert!(!backoff(graph(190, Some(463), false)));
        assert!(!backoff(graph(100, Some(33), false)));
    }

    #[test]
    fn the_retry_delay_doubles_from_its_base_and_is_capped_at_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(30));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 4), Duration::from_secs(240));
        assert_eq!(retry_delay(base, 30), Duration::from_secs(3600));
        assert_eq!(retry_delay(base, 0), Duration::from_secs(30));
    }
}
