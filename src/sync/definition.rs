//! Audience definitions (`cdp.facebook_audiences`): more audiences per system, each a selection of
//! the system's customers by RFM segment, optionally value-based. A definition's plan is the
//! system's plan (tenants, match keys, consent, token, schedule) with the audience, the segments,
//! the sync mode and the removal guard of its own, and its own ledger rows (its `definition_id`).
//!
//! Validation is pure, like the system row's: a broken definition is `invalid_config` on its own
//! row with every problem listed, and the system's other audiences carry on.
use crate::identity::MatchKey;

use super::system::{AudienceColumns, SyncPlan};
use crate::db::audiences::DefinitionRow;

impl DefinitionRow {
    /// The plan of this definition's audience within `system` (the system's own plan, valid).
    pub fn plan(&self, system: &SyncPlan) -> Result<SyncPlan, Vec<String>> {
        let mut problems = self.unreadable.clone();
        if self.name.trim().is_empty() {
            problems.push("name must not be empty".to_string());
        }
        let mode = AudienceColumns {
            custom_audience_id: self.custom_audience_id.as_deref(),
            sync_mode: &self.sync_mode,
            excluded_segments: &self.excluded_segments,
            max_removal_share: self.max_removal_share,
        }
        .check(&mut problems);
        let included = match &self.included_segments {
            None => None,
            Some(list) if list.iter().any(Option::is_none) => {
                problems.push("included_segments must not contain NULL".to_string());
                None
            }
            Some(list) if list.is_empty() => {
                problems.push(
                    "included_segments is empty, which selects nobody (NULL selects every segment)"
                        .to_string(),
                );
                None
            }
            Some(list) => Some(list.iter().flatten().cloned().collect::<Vec<_>>()),
        };
        let Some(mode) = mode.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let mut match_keys = system.match_keys.clone();
        if self.value_based && !match_keys.contains(&MatchKey::LookalikeValue) {
            // Meta's value-based audiences: the schema's identifiers and LOOKALIKE_VALUE.
            match_keys.push(MatchKey::LookalikeValue);
        } else if !self.value_based {
            // The value only means something to a value-based audience.
            match_keys.retain(|k| *k != MatchKey::LookalikeValue);
        }
        Ok(SyncPlan {
            definition_id: self.id,
            definition_name: Some(self.name.clone()),
            custom_audience_id: self.custom_audience_id.clone(),
            audience_name: self.name.clone(),
            mode,
            match_keys,
            excluded_segments: self.excluded_segments.iter().flatten().cloned().collect(),
            included_segments: included,
            value_based: self.value_based,
            max_removal_share: self.max_removal_share,
            force_removals: self.force_removals,
            ..system.clone()
        })
    }
}

/// The segments to exclude so that only `included` (minus `excluded`) remain, given every segment
/// the CDP holds: the extraction's `$2` stays the one list of excluded segments, whatever query
/// the operator wrote.
pub fn excluded_for(included: &[String], excluded: &[String], in_cdp: &[String]) -> Vec<String> {
    let mut out: Vec<String> = excluded.to_vec();
    for segment in in_cdp {
        if !included.contains(segment) && !out.contains(segment) {
            out.push(segment.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::configurations::SystemRow;
    use crate::sync::system::{OWN_AUDIENCE, SyncMode};

    fn system() -> SyncPlan {
        SystemRow {
            id: 7,
            system_name: "kangoo_system".into(),
            ad_account_id: "act_323379512251780".into(),
            tenant_ids: vec![Some(20)],
            custom_audience_id: Some("111".into()),
            schedule_hours: Some(48),
            sync_mode: "mirror".into(),
            match_keys: ["EMAIL", "PHONE"].map(|k| Some(k.to_string())).to_vec(),
            excluded_segments: vec![Some("Lost".into())],
            default_country: None,
            schedule_cron: None,
            audience_name: None,
            max_removal_share: Some(0.2),
            force_removals: true,
            consecutive_failures: 0,
            adopt_mode: "replace".into(),
            alert_webhook_url: None,
            opt_out_column: None,
            suppression_table: None,
            token_ref: None,
            unreadable: Vec::new(),
        }
        .validate()
        .unwrap()
    }

    fn definition() -> DefinitionRow {
        DefinitionRow {
            id: 3,
            name: "Win-back".into(),
            included_segments: Some(vec![Some("At Risk".into()), Some("Can't Lose Them".into())]),
            excluded_segments: Vec::new(),
            sync_mode: "append".into(),
            value_based: false,
            custom_audience_id: None,
            max_removal_share: None,
            force_removals: false,
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn a_definition_keeps_the_systems_tenants_and_keys_and_has_its_own_audience_mode_and_guard() {
        let plan = definition().plan(&system()).unwrap();
        assert_eq!(plan.id, 7);
        assert_eq!(plan.definition_id, 3);
        assert_ne!(plan.scope(), system().scope());
        assert_eq!(system().definition_id, OWN_AUDIENCE);
        assert_eq!(plan.tenant_ids, vec![20]);
        assert_eq!(plan.match_keys, vec![MatchKey::Email, MatchKey::Phone]);
        assert_eq!(plan.audience_name, "Win-back");
        assert_eq!(plan.custom_audience_id, None, "not the system's audience");
        assert_eq!(plan.mode, SyncMode::Append);
        assert_eq!(plan.max_removal_share, None);
        assert!(!plan.force_removals);
        assert!(plan.excluded_segments.is_empty());
        assert_eq!(
            plan.included_segments.as_deref(),
            Some(&["At Risk".to_string(), "Can't Lose Them".to_string()][..])
        );
        assert_eq!(plan.label(), "kangoo_system / Win-back");
    }

    #[test]
    fn a_value_based_definition_adds_lookalike_value_to_the_schema() {
        let plan = DefinitionRow {
            value_based: true,
            ..definition()
        }
        .plan(&system())
        .unwrap();
        assert!(plan.value_based);
        assert_eq!(
            plan.match_keys,
            vec![MatchKey::Email, MatchKey::Phone, MatchKey::LookalikeValue]
        );
    }

    #[test]
    fn every_problem_of_a_broken_definition_is_listed() {
        let broken = DefinitionRow {
            name: " ".into(),
            included_segments: Some(vec![Some("At Risk".into()), None]),
            excluded_segments: vec![None],
            sync_mode: "sometimes".into(),
            custom_audience_id: Some("abc".into()),
            max_removal_share: Some(1.5),
            ..definition()
        };
        let problems = broken.plan(&system()).unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:?}");
        let empty = DefinitionRow {
            included_segments: Some(Vec::new()),
            ..definition()
        };
        let problems = empty.plan(&system()).unwrap_err();
        assert!(problems[0].contains("selects nobody"), "{problems:?}");
    }

    #[test]
    fn included_segments_become_the_exclusion_of_every_other_segment_in_the_cdp() {
        let in_cdp = ["Champions", "At Risk", "Lost", "Can't Lose Them"].map(String::from);
        let included = ["At Risk", "Can't Lose Them", "Unknown"].map(String::from);
        assert_eq!(
            excluded_for(&included, &["At Risk".to_string()], &in_cdp),
            ["At Risk", "Champions", "Lost"].map(String::from).to_vec()
        );
    }
}
