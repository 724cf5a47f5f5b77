//! Audiences: what one holds, its views for Graph reads and for inspection, and creating,
//! listing, deleting and reading them.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::history::SessionLog;
use super::sessions::{Direction, ReplaceSession, UserSession};
use super::{SandboxState, mix, now_secs};
use crate::error::GraphError;
use crate::members::{Member, MemberSet, Shape, Upload, decode_member};

/// Meta's limit on CUSTOM audiences per ad account.
pub const MAX_AUDIENCES_PER_ACCOUNT: usize = 500;

pub(super) struct Audience {
    pub(super) id: u64,
    /// Bare numeric ad account id (no `act_`).
    pub(super) account: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) customer_file_source: String,
    /// Created with `is_value_based=1`.
    pub(super) value_based: bool,
    pub(super) shape: Option<Shape>,
    pub(super) members: MemberSet,
    /// `/users` sessions by (session id, direction).
    pub(super) sessions: HashMap<(u64, Direction), UserSession>,
    pub(super) replace: Option<ReplaceSession>,
    pub(super) finished_replaces: HashSet<u64>,
    /// Every upload session, oldest first, as `GET /{audience_id}/sessions` lists them.
    pub(super) history: Vec<SessionLog>,
    pub(super) time_created: i64,
    pub(super) time_updated: i64,
}

/// One audience as the inspection API and the tests see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudienceSummary {
    pub id: String,
    /// `act_<digits>`, as in `cdp.facebook_configurations.ad_account_id`.
    pub ad_account_id: String,
    pub name: String,
    pub member_count: usize,
}

/// A copy of one audience's fields, taken under the lock, for Graph reads.
#[derive(Debug, Clone)]
pub struct AudienceView {
    pub id: String,
    pub account: String,
    pub name: String,
    pub description: Option<String>,
    pub customer_file_source: String,
    pub value_based: bool,
    pub member_count: usize,
    pub shape: Option<Shape>,
    pub replace_in_progress: bool,
    pub time_created: i64,
    pub time_updated: i64,
}

impl Audience {
    pub(super) fn view(&self) -> AudienceView {
        AudienceView {
            id: self.id.to_string(),
            account: self.account.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            customer_file_source: self.customer_file_source.clone(),
            value_based: self.value_based,
            member_count: self.members.len(),
            shape: self.shape,
            replace_in_progress: self.replace.is_some(),
            time_created: self.time_created,
            time_updated: self.time_updated,
        }
    }

    pub(super) fn summary(&self) -> AudienceSummary {
        AudienceSummary {
            id: self.id.to_string(),
            ad_account_id: format!("act_{}", self.account),
            name: self.name.clone(),
            member_count: self.members.len(),
        }
    }

    /// An added or replacing batch fits the audience: its data source, and LOOKALIKE_VALUE in the
    /// schema exactly when the audience is value-based (Meta's value-based audience guide).
    pub(super) fn check_upload(&self, upload: &Upload) -> Result<(), GraphError> {
        match (self.value_based, upload.valued) {
            (true, false) => {
                return Err(GraphError::invalid(
                    "The schema of a value-based custom audience must include LOOKALIKE_VALUE",
                ));
            }
            (false, true) => {
                return Err(GraphError::invalid(
                    "LOOKALIKE_VALUE can only be uploaded to a value-based custom audience (created with is_value_based)",
                ));
            }
            _ => {}
        }
        let shape = upload.shape;
        match self.shape {
            Some(s) if s != shape => Err(GraphError::update_failed(
                None,
                &format!(
                    "This audience was created from data source {}, which does not support data source {}.",
                    s.data_source(),
                    shape.data_source()
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl SandboxState {
    pub fn create_audience(
        &self,
        account: &str,
        name: &str,
        description: Option<String>,
        customer_file_source: &str,
        value_based: bool,
    ) -> Result<String, GraphError> {
        let mut inner = self.lock();
        let existing = inner
            .audiences
            .values()
            .filter(|a| a.account == account)
            .count();
        if existing >= MAX_AUDIENCES_PER_ACCOUNT {
            return Err(GraphError::new(
                2654,
                format!(
                    "(#2654) Failed to create custom audience: this ad account already has the maximum of {MAX_AUDIENCES_PER_ACCOUNT} custom audiences"
                ),
            )
            .with_user(
                "Custom Audience Limit Reached",
                format!("You can create a maximum of {MAX_AUDIENCES_PER_ACCOUNT} custom audiences."),
            ));
        }
        inner.audience_seq += 1;
        // 17-digit ids like Meta's, distinct per seed, increasing in creation order.
        let id = 23_850_000_000_000_000
            + (mix(self.shared.options.seed) % 100_000_000) * 1_000_000
            + inner.audience_seq;
        let now = now_secs();
        inner.audiences.insert(
            id,
            Audience {
                id,
                account: account.to_string(),
                name: name.to_string(),
                description,
                customer_file_source: customer_file_source.to_string(),
                value_based,
                shape: None,
                members: MemberSet::default(),
                sessions: HashMap::new(),
                replace: None,
                finished_replaces: HashSet::new(),
                history: Vec::new(),
                time_created: now,
                time_updated: now,
            },
        );
        Ok(id.to_string())
    }

    /// The account's audiences in creation order, starting after `after` (an audience id).
    pub fn list_audiences(&self, account: &str) -> Vec<AudienceView> {
        let inner = self.lock();
        inner
            .audiences
            .values()
            .filter(|a| a.account == account)
            .map(Audience::view)
            .collect()
    }

    pub fn audience(&self, id: &str) -> Option<AudienceView> {
        let mut inner = self.lock();
        inner.audience_mut(id).map(|a| a.view())
    }

    pub fn delete_audience(&self, id: &str) -> bool {
        let mut inner = self.lock();
        match id.parse::<u64>() {
            Ok(n) => inner.audiences.remove(&n).is_some(),
            Err(_) => false,
        }
    }

    pub fn audiences(&self) -> Vec<AudienceSummary> {
        self.lock()
            .audiences
            .values()
            .map(Audience::summary)
            .collect()
    }

    pub fn audience_summary(&self, id: &str) -> Option<AudienceSummary> {
        self.lock().audience_mut(id).map(|a| a.summary())
    }

    /// Members as `schema key → cell`, sorted for stable output; `None` for an unknown audience.
    pub fn members(
        &self,
        audience_id: &str,
        limit: Option<usize>,
    ) -> Option<Vec<BTreeMap<String, String>>> {
        let raw: Vec<Member> = {
            let mut inner = self.lock();
            let a = inner.audience_mut(audience_id)?;
            a.members.iter().cloned().collect()
        };
        let mut out: Vec<_> = raw.iter().map(|m| decode_member(m)).collect();
        out.sort();
        if let Some(l) = limit {
            out.truncate(l);
        }
        Some(out)
    }
}
