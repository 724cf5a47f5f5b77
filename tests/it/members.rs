//! What an audience should hold, computed here from the demo CDP on its own terms, and what the
//! ledger and the sandbox hold: queries and assertions of the audience tests on a [`TestApp`].
use std::collections::{BTreeMap, BTreeSet, HashMap};

use cdp_meta_sync::identity::{MatchKey, Normalizer};
use cdp_meta_sync::sync::cells::cells;

use crate::app::TestApp;

/// The demo systems.
pub const SYSTEMS: [&str; 3] = ["kangoo_system", "septimo_system", "digitalfarma_system"];

pub type Row = BTreeMap<String, String>;

impl TestApp {
    /// Each demo system's sandbox audience equals the set computed from the demo rows.
    pub async fn assert_audiences_equal_expected(&self) {
        for system in SYSTEMS {
            let audience = self.audience_id(system).await;
            assert_eq!(
                self.sandbox_members(&audience),
                self.expected_members(system).await,
                "{system}"
            );
        }
    }

    /// The audience a system should have, computed here from the demo tables on its own terms:
    /// active segments of the system's tenants, EMAIL/PHONE/FN/LN normalized with the system's
    /// default country (and each row's own country for phones, when the CDP has that column), rows
    /// with neither email nor phone left out, one row per person (email, else phone), the fullest row
    /// first, then the lowest tenant and customer id.
    pub async fn expected_members(&self, system: &str) -> BTreeSet<Row> {
        self.expected_selection(
            system,
            "r.rfm_segment NOT IN ('Lost', 'Hibernating')",
            false,
        )
        .await
    }

    /// [`expected_members`] for another selection of the system's customers (`segments`: a condition
    /// on `r.rfm_segment`); `valued`: each member also carries LOOKALIKE_VALUE, its CLV.
    pub async fn expected_selection(
        &self,
        system: &str,
        segments: &str,
        valued: bool,
    ) -> BTreeSet<Row> {
        let client = self.client().await;
        let has_country: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                                 WHERE table_name = 'customers_master' AND column_name = 'country')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let country = if has_country { "c.country" } else { "NULL" };
        let rows = client
            .query(
                &format!(
                    "SELECT c.id::bigint, c.tenant_id, c.email::text, c.phone::text, c.firstname::text,
                            c.lastname::text, {country}::text, f.default_country::text, {value}
                       FROM customers_master c
                       JOIN cdp_rfm_analysis r ON r.customer_id = c.id
                       JOIN cdp.facebook_configurations f ON c.tenant_id = ANY(f.tenant_ids)
                      WHERE f.system_name = $1 AND {segments}",
                    value = if valued {
                        "(SELECT v.clv::text FROM cdp_clv_analysis v WHERE v.customer_id = c.id)"
                    } else {
                        "NULL::text"
                    }
                ),
                &[&system],
            )
            .await
            .unwrap();
        let keys = [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];
        let mut people: HashMap<String, (usize, i32, i64, Row)> = HashMap::new();
        for r in &rows {
            let id: i64 = r.get(0);
            let tenant: i32 = r.get(1);
            let row_country: Option<&str> = r.get(6);
            let normalizer = Normalizer::new(r.get(7)).unwrap();
            let mut cells = Row::new();
            for (i, key) in keys.iter().enumerate() {
                let mut cell = String::new();
                if let Some(raw) = r.get::<_, Option<&str>>(i + 2)
                    && normalizer
                        .row_cell_into(*key, raw, row_country, &mut cell)
                        .is_ok()
                    && !cell.is_empty()
                {
                    cells.insert(key.as_str().to_string(), cell);
                }
            }
            let mut value = String::new();
            if let Some(raw) = r.get::<_, Option<&str>>(8)
                && normalizer
                    .row_cell_into(MatchKey::LookalikeValue, raw, None, &mut value)
                    .is_ok()
                && !value.is_empty()
            {
                cells.insert("LOOKALIKE_VALUE".to_string(), value);
            }
            let person = match (cells.get("EMAIL"), cells.get("PHONE")) {
                (Some(e), _) => format!("EMAIL:{e}"),
                (None, Some(p)) => format!("PHONE:{p}"),
                (None, None) => continue,
            };
            let candidate = (cells.len(), tenant, id, cells);
            let better = |a: &(usize, i32, i64, Row), b: &(usize, i32, i64, Row)| {
                a.0 > b.0 || (a.0 == b.0 && (a.1, a.2) < (b.1, b.2))
            };
            match people.get(&person) {
                Some(current) if !better(&candidate, current) => {}
                _ => {
                    people.insert(person, candidate);
                }
            }
        }
        people.into_values().map(|(_, _, _, row)| row).collect()
    }

    pub async fn audience_id(&self, system: &str) -> String {
        self.client()
            .await
            .query_one(
                "SELECT custom_audience_id FROM cdp.facebook_configurations WHERE system_name = $1",
                &[&system],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .expect("audience id stored")
    }

    /// Members in a system's ledger.
    pub async fn ledger_size(&self, system: &str) -> usize {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FROM cdp.facebook_audience_members m
                   JOIN cdp.facebook_configurations f ON f.id = m.configuration_id
                  WHERE f.system_name = $1 AND m.definition_id = 0",
                &[&system],
            )
            .await
            .unwrap()
            .get::<_, i64>(0) as usize
    }

    pub fn sandbox_members(&self, audience_id: &str) -> BTreeSet<Row> {
        self.sandbox.members(audience_id).into_iter().collect()
    }

    /// The system's ledger, decoded to rows as the sandbox reports its members.
    pub async fn ledger_rows(&self, system: &str) -> BTreeSet<Row> {
        self.ledger_rows_of(system, 0).await
    }

    /// The ledger of one of the system's audiences (`definition_id` 0: its own).
    pub async fn ledger_rows_of(&self, system: &str, definition_id: i32) -> BTreeSet<Row> {
        let rows = self
            .client()
            .await
            .query(
                "SELECT m.match_keys, m.cells FROM cdp.facebook_audience_members m
                       JOIN cdp.facebook_configurations f ON f.id = m.configuration_id
                      WHERE f.system_name = $1 AND m.definition_id = $2",
                &[&system, &definition_id],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let keys: &str = r.get(0);
                let packed: &[u8] = r.get(1);
                keys.split(',')
                    .zip(cells(packed))
                    .filter_map(|(key, cell)| {
                        let value = cell.expect("a ledger row decodes").with_str(str::to_string);
                        (!value.is_empty()).then(|| (key.to_string(), value))
                    })
                    .collect()
            })
            .collect()
    }

    /// Customers of the system each alone behind their audience member (no other row of the system
    /// has the same normalized email), with that member's EMAIL cell: whatever happens to one of them
    /// (suppressed, refused by Meta) happens to exactly that member.
    pub async fn lone_members(&self, system: &str, n: usize) -> Vec<(i64, String)> {
        let rows = self
            .client()
            .await
            .query(
                "SELECT c.id::bigint, c.email::text, f.default_country::text
                       FROM customers_master c
                       JOIN cdp_rfm_analysis r ON r.customer_id = c.id
                       JOIN cdp.facebook_configurations f ON c.tenant_id = ANY(f.tenant_ids)
                      WHERE f.system_name = $1 AND r.rfm_segment NOT IN ('Lost', 'Hibernating')
                      ORDER BY c.id",
                &[&system],
            )
            .await
            .unwrap();
        let mut by_email: HashMap<String, Vec<i64>> = HashMap::new();
        for r in &rows {
            let normalizer = Normalizer::new(r.get(2)).unwrap();
            let mut cell = String::new();
            if let Some(raw) = r.get::<_, Option<&str>>(1)
                && normalizer
                    .row_cell_into(MatchKey::Email, raw, None, &mut cell)
                    .is_ok()
                && !cell.is_empty()
            {
                by_email.entry(cell).or_default().push(r.get(0));
            }
        }
        let expected = self.expected_members(system).await;
        let mut lone: Vec<(i64, String)> = by_email
            .into_iter()
            .filter(|(email, ids)| {
                ids.len() == 1
                    && expected
                        .iter()
                        .any(|m| m.get("EMAIL").is_some_and(|e| e == email))
            })
            .map(|(email, ids)| (ids[0], email))
            .collect();
        lone.sort();
        assert!(lone.len() >= n, "only {} lone members", lone.len());
        lone.truncate(n);
        lone
    }
}
