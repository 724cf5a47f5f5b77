//! Fault injection: what the sandbox does wrong on purpose, deterministically from the seed.
use serde::{Deserialize, Serialize};

use super::error::{GraphError, default_transient};

/// Faults to inject. Set at start (flags / [`super::SandboxOptions`]), and at run time through
/// `POST /_sandbox/faults` or [`super::Sandbox::set_faults`]; every field defaults to "off".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share (0.0–1.0) of Graph calls (not `/_sandbox`) that fail, drawn from the seeded RNG.
    pub error_rate: f64,
    /// Errors the failing calls answer with, drawn uniformly from the seeded RNG; empty = `[{code: 2}]`.
    pub error_codes: Vec<FaultCode>,
    /// Fixed delay on every Graph call, before anything else happens.
    pub latency_ms: u64,
    /// Every Graph call answers 190/463 "Error validating access token: Session has expired…".
    pub token_error: bool,
    /// Usage headers near the limit (normally they are low).
    pub usage: Option<UsageFault>,
    /// After this many accepted user-write calls (add/remove/replace) counted from the moment these
    /// faults were set, further user-write calls hang without answering until faults change; then
    /// they answer code 2 (transient) without touching state.
    pub stall_after_writes: Option<u64>,
    /// `usersreplace` is refused for every audience (2650/1870144), as Meta refuses it for an
    /// audience it cannot replace; `/users` still works.
    pub refuse_replace: bool,
    /// Misbehaviour on the wire of stateful calls, each spent after `times` matching calls.
    #[serde(default)]
    pub wire: Vec<WireFault>,
    /// Cells (as sent) Meta judges invalid although they are well-formed, as it does for values
    /// it has flagged: a row holding one is an invalid entry (counted, sampled, not a member).
    #[serde(default)]
    pub invalid_cells: Vec<String>,
    /// `GET /{audience_id}` reports this `operation_status` for every audience instead of the
    /// emulated one (e.g. 471, flagged for integrity).
    pub audience_operation_status: Option<AudienceStatus>,
    /// `GET /{audience_id}` reports this `delivery_status` for every audience.
    pub audience_delivery_status: Option<AudienceStatus>,
    /// `GET /{audience_id}` answers this error, every time, until faults change.
    pub audience_read_error: Option<FaultCode>,
    /// What is true of particular tokens (by value): expiry, scopes, validity. Any other
    /// non-empty token is valid, never expires and has the default scopes (see
    /// [`super::tokens`]). An expired or revoked token is refused on every call.
    #[serde(default)]
    pub tokens: std::collections::BTreeMap<String, super::tokens::SandboxToken>,
}

/// A `{code, description}` status as Meta reports it on an audience; an empty description is
/// Meta's own wording for the codes the sandbox knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceStatus {
    pub code: i64,
    #[serde(default)]
    pub description: String,
}

impl AudienceStatus {
    pub fn new(code: i64) -> Self {
        AudienceStatus {
            code,
            description: String::new(),
        }
    }

    /// The status object as Meta sends it.
    pub fn to_json(&self) -> serde_json::Value {
        let description = match (self.description.is_empty(), self.code) {
            (false, _) => self.description.as_str(),
            (true, 200) => "Normal",
            (true, 300) => "This audience is too small to use for advertising.",
            (true, 414) => "Replace in progress",
            (true, 415) => "Replace error",
            (true, 441) => {
                "We're finding people who are part of your audience. Check back in a little while."
            }
            (true, 470) => "The account that created this audience is inactive.",
            (true, 471) => {
                "The custom audience or lookalike is blocked because it suggests the use of \
                 information (e.g., health, financial) not allowed under Meta's terms, and is \
                 restricted from running ads. Review the audience and remove prohibited \
                 information, or choose a different one."
            }
            (true, _) => "",
        };
        serde_json::json!({ "code": self.code, "description": description })
    }
}

/// Misbehaviour on the wire of stateful calls (Meta or a proxy in front of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFault {
    pub kind: WireFaultKind,
    pub on: WireTarget,
    /// How many matching calls get the fault (then it is spent). Default 1.
    #[serde(default = "one")]
    pub times: u32,
    /// slow_body: how long the body takes to trickle out. Default 30_000.
    #[serde(default = "thirty_seconds")]
    pub slow_ms: u64,
}

fn one() -> u32 {
    1
}

fn thirty_seconds() -> u64 {
    30_000
}

impl WireFault {
    /// `kind` on `on`, once, with the default `slow_ms`.
    pub fn new(kind: WireFaultKind, on: WireTarget) -> Self {
        WireFault {
            kind,
            on,
            times: one(),
            slow_ms: thirty_seconds(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFaultKind {
    /// The call takes effect, then the connection is closed without an answer.
    DropAfterSuccess,
    /// A proxy answers 502 with an HTML page; the call did not reach Meta (no effect).
    BadGatewayHtml,
    /// The call takes effect; the JSON answer is cut off halfway (status 200).
    TruncatedJson,
    /// The call takes effect; headers come at once, the body trickles over slow_ms.
    SlowBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireTarget {
    /// POST /act_{id}/customaudiences
    AudienceCreate,
    /// POST /{audience}/usersreplace with batch_seq 1
    ReplaceFirstBatch,
    /// POST /{audience}/users (add or remove, any batch)
    UsersWrite,
    /// POST /{pixel}/events
    Events,
}

impl WireFaultKind {
    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).ok()
    }
}

impl WireTarget {
    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).ok()
    }
}

/// Parses `--wire-fault KIND:TARGET[:TIMES[:SLOW_MS]]`, e.g. `drop_after_success:audience_create`
/// or `slow_body:events:2:5000` (`-` may stand for `_`).
pub fn parse_wire_fault(s: &str) -> Result<WireFault, String> {
    let usage = || {
        format!(
            "invalid wire fault {s:?}: expected KIND:TARGET[:TIMES[:SLOW_MS]], KIND one of \
             drop_after_success, bad_gateway_html, truncated_json, slow_body, TARGET one of \
             audience_create, replace_first_batch, users_write, events"
        )
    };
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=4).contains(&parts.len()) {
        return Err(usage());
    }
    let kind = WireFaultKind::parse(parts[0]).ok_or_else(usage)?;
    let on = WireTarget::parse(parts[1]).ok_or_else(usage)?;
    let mut fault = WireFault::new(kind, on);
    if let Some(t) = parts.get(2) {
        fault.times = t.parse().map_err(|_| usage())?;
    }
    if let Some(ms) = parts.get(3) {
        fault.slow_ms = ms.parse().map_err(|_| usage())?;
    }
    Ok(fault)
}

/// One error an injected failure answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultCode {
    pub code: i64,
    #[serde(default)]
    pub subcode: Option<i64>,
    /// Overrides the `is_transient` Meta would send for this code.
    #[serde(default)]
    pub is_transient: Option<bool>,
}

impl FaultCode {
    pub fn new(code: i64) -> Self {
        FaultCode {
            code,
            subcode: None,
            is_transient: None,
        }
    }

    /// The error body Meta sends for this code (messages as Meta words them where known).
    pub fn to_error(&self) -> GraphError {
        let message = match (self.code, self.subcode) {
            (1, _) => "An unknown error occurred".to_string(),
            (2, _) => "An unexpected error has occurred. Please retry your request later.".into(),
            (4, _) => "(#4) Application request limit reached".into(),
            (17, _) => "(#17) User request limit reached".into(),
            (341, _) => "(#341) Application limit reached".into(),
            (368, _) => {
                "(#368) The action attempted has been deemed abusive or is otherwise disallowed"
                    .into()
            }
            (613, _) => "(#613) Calls to this api have exceeded the rate limit.".into(),
            (80000..=80014, _) => format!(
                "(#{}) There have been too many calls to this ad-account. Wait a bit and try again. \
                 For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
                self.code
            ),
            (190, _) => GraphError::token_expired().message,
            (100, _) => "(#100) Invalid parameter".into(),
            (200, _) => "(#200) Permissions error".into(),
            (2650, Some(1870145)) => {
                "(#2650) Failed to update the custom audience: Audience update in progress".into()
            }
            (2650, _) => "(#2650) Failed to update the custom audience".into(),
            (2654, _) => "(#2654) Failed to create custom audience".into(),
            (code, _) => format!("(#{code}) Injected sandbox error"),
        };
        let mut e = GraphError::new(self.code, message);
        if let Some(s) = self.subcode {
            e = e.with_subcode(s);
        }
        e.with_transient(
            self.is_transient
                .unwrap_or_else(|| default_transient(self.code, self.subcode)),
        )
    }
}

/// "Usage near the limit": what the usage headers report while this fault is on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UsageFault {
    /// Percentage reported as `call_count` (and `total_cputime`/`total_time`).
    pub call_count_pct: u32,
    /// Minutes reported as `estimated_time_to_regain_access`.
    #[serde(default)]
    pub estimated_time_to_regain_access: u32,
}

/// Parses `--error-codes 2,4,80003/2446079` (code or code/subcode, comma separated).
pub fn parse_error_codes(s: &str) -> Result<Vec<FaultCode>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (code, sub) = match p.split_once('/') {
                Some((c, s)) => (c, Some(s)),
                None => (p, None),
            };
            let code = code
                .parse::<i64>()
                .map_err(|_| format!("invalid error code {p:?}: expected CODE or CODE/SUBCODE"))?;
            let subcode = sub
                .map(|s| s.parse::<i64>())
                .transpose()
                .map_err(|_| format!("invalid error subcode in {p:?}"))?;
            Ok(FaultCode {
                code,
                subcode,
                is_transient: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_parse_with_and_without_subcodes() {
        let v = parse_error_codes("2, 4,80003/2446079").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].code, 80003);
        assert_eq!(v[2].subcode, Some(2446079));
        assert!(parse_error_codes("x").is_err());
        assert!(parse_error_codes("2/y").is_err());
    }

    #[test]
    fn throttling_codes_are_transient_and_permanent_ones_are_not() {
        assert!(FaultCode::new(80003).to_error().is_transient);
        assert!(FaultCode::new(2).to_error().is_transient);
        assert!(!FaultCode::new(190).to_error().is_transient);
        let forced = FaultCode {
            code: 100,
            subcode: None,
            is_transient: Some(true),
        };
        assert!(forced.to_error().is_transient);
    }

    #[test]
    fn wire_faults_parse_from_the_flag_with_times_and_slow_ms_defaults() {
        let f = parse_wire_fault("drop_after_success:audience_create").unwrap();
        assert_eq!(
            f,
            WireFault {
                kind: WireFaultKind::DropAfterSuccess,
                on: WireTarget::AudienceCreate,
                times: 1,
                slow_ms: 30_000
            }
        );
        let f = parse_wire_fault("slow-body:events:3:500").unwrap();
        assert_eq!(
            (f.kind, f.on, f.times, f.slow_ms),
            (WireFaultKind::SlowBody, WireTarget::Events, 3, 500)
        );
        for bad in [
            "drop_after_success",
            "nope:events",
            "slow_body:nowhere",
            "slow_body:events:x",
            "a:b:1:2:3",
        ] {
            assert!(parse_wire_fault(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wire_fault_json_is_snake_case_with_defaults() {
        let f: Faults = serde_json::from_str(
            r#"{"wire":[{"kind":"bad_gateway_html","on":"replace_first_batch"}]}"#,
        )
        .unwrap();
        assert_eq!(
            f.wire,
            vec![WireFault::new(
                WireFaultKind::BadGatewayHtml,
                WireTarget::ReplaceFirstBatch
            )]
        );
        assert_eq!(f.wire[0].times, 1);
        assert_eq!(f.wire[0].slow_ms, 30_000);
        let back = serde_json::to_value(&f.wire[0]).unwrap();
        assert_eq!(back["kind"], "bad_gateway_html");
        assert_eq!(back["on"], "replace_first_batch");
    }

    #[test]
    fn partial_fault_json_fills_defaults() {
        let f: Faults = serde_json::from_str(r#"{"error_rate":0.5}"#).unwrap();
        assert_eq!(f.error_rate, 0.5);
        assert!(f.error_codes.is_empty() && !f.token_error && f.usage.is_none());
        assert!(f.wire.is_empty());
    }
}
