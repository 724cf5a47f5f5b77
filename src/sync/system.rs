//! A system's configuration row, and its validation into a [`SyncPlan`] the pipeline can trust.
//!
//! Validation is pure: a row that fails it is marked `invalid_config` with every problem listed in
//! plain words, and the other systems carry on.
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use super::consent::Consent;
use crate::db::LedgerScope;
use crate::db::configurations::SystemRow;
use crate::identity::{MatchKey, Normalizer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Add newcomers, remove leavers (via the ledger).
    Mirror,
    /// Add only: the original design's behaviour.
    Append,
    /// Meta's `usersreplace`: the audience becomes exactly the uploaded set.
    Replace,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Mirror => "mirror",
            SyncMode::Append => "append",
            SyncMode::Replace => "replace",
        }
    }
}

/// What the first run does with an audience the worker did not fill (`custom_audience_id` set,
/// or found by name, while the ledger is empty): its content is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptMode {
    /// Rebuild it to exactly the source set with `usersreplace` (the default).
    Replace,
    /// Keep what is there and only add.
    Append,
}

/// When a system is due again after a successful run.
#[derive(Debug, Clone)]
pub enum Schedule {
    EveryHours(i64),
    Cron(Box<croner::Cron>),
}

/// A validated configuration: everything one sync needs, in typed form.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub id: i32,
    pub system_name: String,
    pub ad_account_id: String,
    pub tenant_ids: Vec<i32>,
    pub custom_audience_id: Option<String>,
    pub audience_name: String,
    pub mode: SyncMode,
    pub adopt: AdoptMode,
    pub match_keys: Vec<MatchKey>,
    pub excluded_segments: Vec<String>,
    pub normalizer: Normalizer,
    pub schedule: Schedule,
    pub schedule_hours: i64,
    pub max_removal_share: Option<f64>,
    pub force_removals: bool,
    pub consecutive_failures: i32,
    /// Who must never be uploaded, when the row names a rule.
    pub consent: Option<Consent>,
    /// The variable holding this system's token (`None`: `FACEBOOK_ACCESS_TOKEN`).
    pub token_ref: Option<String>,
    /// Which of the system's audiences this plan syncs: [`OWN_AUDIENCE`], or the id of an
    /// audience definition (see [`super::definition`]).
    pub definition_id: i32,
    /// The definition's name, for logs and messages (`None`: the system's own audience).
    pub definition_name: Option<String>,
    /// Only customers in one of these segments (`None`: every segment not excluded).
    pub included_segments: Option<Vec<String>>,
    /// A value-based audience: created with `is_value_based`, each member with LOOKALIKE_VALUE.
    pub value_based: bool,
}

/// The `definition_id` of a system's own audience (the one its configuration row describes).
pub const OWN_AUDIENCE: i32 = 0;

impl SyncPlan {
    pub fn scope(&self) -> LedgerScope {
        LedgerScope {
            configuration_id: self.id,
            definition_id: self.definition_id,
        }
    }

    /// The match keys as the ledger stores them and uploads name them: `EMAIL,PHONE,FN,LN`.
    pub fn schema(&self) -> String {
        self.match_keys
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How logs and messages name the audience: the system, and the definition if any.
    pub fn label(&self) -> String {
        match &self.definition_name {
            Some(name) => format!("{} / {name}", self.system_name),
            None => self.system_name.clone(),
        }
    }
}

/// Keys that identify a person on their own; a row needs one of them to be worth sending.
pub const STRONG_KEYS: [MatchKey; 4] = [
    MatchKey::Email,
    MatchKey::Phone,
    MatchKey::ExternId,
    MatchKey::Madid,
];

impl SystemRow {
    /// Checks every column and lists all problems at once, so one fix round is enough.
    pub fn validate(&self) -> Result<SyncPlan, Vec<String>> {
        let mut problems = self.unreadable.clone();
        if !is_ad_account_id(&self.ad_account_id) {
            problems.push(format!(
                "ad_account_id '{}' is not of the form act_<digits>",
                self.ad_account_id.chars().take(60).collect::<String>()
            ));
        }
        let tenant_ids: Vec<i32> = self.tenant_ids.iter().flatten().copied().collect();
        if tenant_ids.is_empty() || tenant_ids.len() != self.tenant_ids.len() {
            problems.push("tenant_ids must list at least one tenant and no NULLs".to_string());
        }
        let audience = AudienceColumns {
            custom_audience_id: self.custom_audience_id.as_deref(),
            sync_mode: &self.sync_mode,
            excluded_segments: &self.excluded_segments,
            max_removal_share: self.max_removal_share,
        };
        let mode = audience.check(&mut problems);
        let adopt = match self.adopt_mode.as_str() {
            "replace" => Some(AdoptMode::Replace),
            "append" => Some(AdoptMode::Append),
            other => {
                problems.push(format!(
                    "adopt_mode '{other}' is not one of replace, append"
                ));
                None
            }
        };
        let mut match_keys = Vec::new();
        if self.match_keys.iter().any(Option::is_none) {
            problems.push("match_keys must not contain NULL".to_string());
        }
        for name in self.match_keys.iter().flatten() {
            match MatchKey::from_str(name) {
                Ok(key) if match_keys.contains(&key) => {
                    problems.push(format!("match key {key} is listed twice"))
                }
                Ok(key) => match_keys.push(key),
                Err(e) => problems.push(format!("match key '{name}': {e}")),
            }
        }
        if !match_keys.iter().any(|k| STRONG_KEYS.contains(k)) {
            problems.push(
                "match_keys must include at least one of EMAIL, PHONE, EXTERN_ID, MADID"
                    .to_string(),
            );
        }
        let normalizer = match Normalizer::new(self.default_country.as_deref()) {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(format!(
                    "default_country '{}' is not an ISO 3166-1 country code",
                    self.default_country.as_deref().unwrap_or_default()
                ));
                None
            }
        };
        let schedule_hours = i64::from(self.schedule_hours.unwrap_or(48));
        if schedule_hours <= 0 {
            problems.push(format!(
                "schedule_hours must be at least 1 (is {schedule_hours})"
            ));
        }
        let schedule = match self
            .schedule_cron
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            None => Some(Schedule::EveryHours(schedule_hours.max(1))),
            Some(expr) => match expr.parse::<croner::Cron>() {
                Ok(cron) => Some(Schedule::Cron(Box::new(cron))),
                Err(e) => {
                    problems.push(format!("schedule_cron '{expr}' does not parse: {e}"));
                    None
                }
            },
        };
        let consent = Consent::from_row(
            self.opt_out_column.as_deref(),
            self.suppression_table.as_deref(),
        )
        .map_err(|more| problems.extend(more))
        .ok();
        if let Some(name) = &self.token_ref
            && !crate::configuration::named_tokens::is_token_variable(name)
        {
            problems.push(format!(
                "token_ref '{}' is not FACEBOOK_ACCESS_TOKEN or a variable name starting with FACEBOOK_ACCESS_TOKEN_",
                name.chars().take(100).collect::<String>()
            ));
        }
        match (
            mode,
            adopt,
            normalizer,
            schedule,
            consent,
            problems.is_empty(),
        ) {
            (Some(mode), Some(adopt), Some(normalizer), Some(schedule), Some(consent), true) => {
                Ok(SyncPlan {
                    id: self.id,
                    system_name: self.system_name.clone(),
                    ad_account_id: self.ad_account_id.clone(),
                    tenant_ids,
                    custom_audience_id: self.custom_audience_id.clone(),
                    audience_name: self
                        .audience_name
                        .clone()
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| format!("CDP - {}", self.system_name)),
                    mode,
                    adopt,
                    match_keys,
                    excluded_segments: self.excluded_segments.iter().flatten().cloned().collect(),
                    normalizer,
                    schedule,
                    schedule_hours,
                    max_removal_share: self.max_removal_share,
                    force_removals: self.force_removals,
                    consecutive_failures: self.consecutive_failures,
                    consent,
                    token_ref: self.token_ref.clone(),
                    definition_id: OWN_AUDIENCE,
                    definition_name: None,
                    included_segments: None,
                    value_based: false,
                })
            }
            _ => Err(problems),
        }
    }
}

/// The columns a system row and an audience definition both have for their audience, checked
/// alike (see [`super::definition`]).
pub(super) struct AudienceColumns<'a> {
    pub custom_audience_id: Option<&'a str>,
    pub sync_mode: &'a str,
    pub excluded_segments: &'a [Option<String>],
    pub max_removal_share: Option<f64>,
}

impl AudienceColumns<'_> {
    /// Adds each problem to `problems`; the sync mode when it is one.
    pub fn check(&self, problems: &mut Vec<String>) -> Option<SyncMode> {
        if let Some(id) = self.custom_audience_id
            && (id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()))
        {
            problems.push(format!(
                "custom_audience_id '{}' is not a numeric Meta id",
                id.chars().take(60).collect::<String>()
            ));
        }
        // A NULL segment would make `rfm_segment <> ALL(...)` NULL for everyone: nobody eligible.
        if self.excluded_segments.iter().any(Option::is_none) {
            problems.push("excluded_segments must not contain NULL".to_string());
        }
        if let Some(share) = self.max_removal_share
            && !(0.0..=1.0).contains(&share)
        {
            problems.push(format!(
                "max_removal_share must be between 0 and 1 (is {share})"
            ));
        }
        match self.sync_mode {
            "mirror" => Some(SyncMode::Mirror),
            "append" => Some(SyncMode::Append),
            "replace" => Some(SyncMode::Replace),
            other => {
                problems.push(format!(
                    "sync_mode '{other}' is not one of mirror, append, replace"
                ));
                None
            }
        }
    }
}

fn is_ad_account_id(id: &str) -> bool {
    id.strip_prefix("act_").is_some_and(|digits| {
        !digits.is_empty() && digits.len() <= 30 && digits.chars().all(|c| c.is_ascii_digit())
    })
}

impl Schedule {
    /// The next due time after a successful run that ended at `now`, in the worker's time zone.
    pub fn next_after(&self, now: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
        match self {
            Schedule::EveryHours(h) => now + Duration::hours(*h),
            Schedule::Cron(cron) => cron
                .find_next_occurrence(&now.with_timezone(&tz), false)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| now + Duration::hours(48)),
        }
    }
}

/// Retry time after a failure: 5 minutes, doubling with each consecutive failure, capped at
/// `schedule_hours`.
pub fn failure_backoff(
    now: DateTime<Utc>,
    consecutive_failures_before: i32,
    schedule_hours: i64,
) -> DateTime<Utc> {
    let doublings = consecutive_failures_before.clamp(0, 20) as u32;
    let minutes = 5i64.saturating_mul(1i64 << doublings);
    let cap = schedule_hours.max(1) * 60;
    now + Duration::minutes(minutes.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> SystemRow {
        SystemRow {
            id: 1,
            system_name: "kangoo_system".into(),
            ad_account_id: "act_323379512251780".into(),
            tenant_ids: vec![Some(20), Some(25)],
            custom_audience_id: None,
            schedule_hours: Some(48),
            sync_mode: "mirror".into(),
            match_keys: ["EMAIL", "PHONE", "FN", "LN"]
                .map(|k| Some(k.to_string()))
                .to_vec(),
            excluded_segments: vec![Some("Lost".into()), Some("Hibernating".into())],
            default_country: Some("AR".into()),
            schedule_cron: None,
            audience_name: None,
            max_removal_share: None,
            force_removals: false,
            consecutive_failures: 0,
            adopt_mode: "replace".into(),
            alert_webhook_url: None,
            opt_out_column: None,
            suppression_table: None,
            token_ref: None,
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn the_original_designs_row_is_valid_and_names_its_audience_after_the_system() {
        let plan = row().validate().unwrap();
        assert_eq!(plan.audience_name, "CDP - kangoo_system");
        assert_eq!(
            plan.match_keys,
            vec![MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln]
        );
        assert_eq!(plan.mode, SyncMode::Mirror);
        assert_eq!(plan.tenant_ids, vec![20, 25]);
    }

    #[test]
    fn every_problem_of_a_broken_row_is_listed() {
        let mut bad = row();
        bad.ad_account_id = "323379512251780".into();
        bad.tenant_ids = vec![];
        bad.match_keys = vec![Some("FN".into()), Some("SHOE_SIZE".into())];
        bad.schedule_cron = Some("every tuesday".into());
        let problems = bad.validate().unwrap_err();
        let text = problems.join("; ");
        assert!(text.contains("act_<digits>"), "{text}");
        assert!(text.contains("tenant_ids"), "{text}");
        assert!(text.contains("SHOE_SIZE"), "{text}");
        assert!(text.contains("at least one of EMAIL"), "{text}");
        assert!(text.contains("schedule_cron"), "{text}");
    }

    #[test]
    fn a_null_tenant_or_an_unknown_country_makes_the_row_invalid() {
        let mut bad = row();
        bad.tenant_ids = vec![Some(20), None];
        assert!(bad.validate().is_err());
        let mut bad = row();
        bad.default_country = Some("Narnia".into());
        assert!(bad.validate().unwrap_err()[0].contains("default_country"));
    }

    #[test]
    fn null_elements_and_unreadable_columns_make_the_row_invalid_in_plain_words() {
        let mut bad = row();
        bad.match_keys.push(None);
        bad.excluded_segments.push(None);
        bad.unreadable
            .push("tenant_ids cannot be read: array contains too many dimensions".into());
        let text = bad.validate().unwrap_err().join("; ");
        assert!(text.contains("match_keys must not contain NULL"), "{text}");
        assert!(
            text.contains("excluded_segments must not contain NULL"),
            "{text}"
        );
        assert!(text.contains("tenant_ids cannot be read"), "{text}");
    }

    #[test]
    fn a_cron_schedule_replaces_schedule_hours() {
        let mut with_cron = row();
        with_cron.schedule_cron = Some("0 10 * * *".into());
        let plan = with_cron.validate().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = plan
            .schedule
            .next_after(now, chrono_tz::America::Argentina::Buenos_Aires);
        // 10:00 in Buenos Aires (UTC-3) is 13:00 UTC.
        assert_eq!(next.to_rfc3339(), "2026-03-01T13:00:00+00:00");
    }

    #[test]
    fn without_cron_the_next_sync_is_schedule_hours_later() {
        let plan = row().validate().unwrap();
        let now = Utc::now();
        assert_eq!(
            plan.schedule.next_after(now, chrono_tz::UTC),
            now + Duration::hours(48)
        );
    }

    #[test]
    fn failure_backoff_starts_at_five_minutes_doubles_and_stops_at_schedule_hours() {
        let now = Utc::now();
        let minutes = |failures| (failure_backoff(now, failures, 2) - now).num_minutes();
        assert_eq!(minutes(0), 5);
        assert_eq!(minutes(1), 10);
        assert_eq!(minutes(2), 20);
        assert_eq!(minutes(4), 80);
        assert_eq!(minutes(5), 120);
        assert_eq!(minutes(30), 120);
    }
}
