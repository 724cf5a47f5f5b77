//! Consent: the customers a system must never upload, named by its configuration row as a boolean
//! opt-out column of `customers_master` (`opt_out_column`), a table of suppressed customer ids
//! (`suppression_table`), or both.
//!
//! A suppressed customer is taken out of the extraction, whatever the query (the default one or
//! `EXTRACT_SQL_FILE`), so it is never uploaded; a ledger member built from a suppressed customer
//! is removed from the audience in every sync mode (append included), and these removals are not
//! weighed by the removal guard: an opt-out is not a broken source. A member that another,
//! unsuppressed customer row still makes eligible (the same person twice) stays.
use anyhow::Context;

use super::source::Catalog;
use crate::db::LedgerScope;

/// A system's consent rule: validated names, safe to put in SQL (quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    opt_out_column: Option<String>,
    suppression_table: Option<String>,
}

/// The table the opt-out column belongs to (resolved through the `search_path`, as the extraction).
const CUSTOMERS: &str = "customers_master";

impl Consent {
    /// The rule of a configuration row; `Ok(None)` when it names none. A name that is not a plain
    /// lower-case identifier (`[schema.]table` for the table) is a problem for `error_log`.
    pub fn from_row(
        opt_out_column: Option<&str>,
        suppression_table: Option<&str>,
    ) -> Result<Option<Consent>, Vec<String>> {
        let given = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let (column, table) = (given(opt_out_column), given(suppression_table));
        let mut problems = Vec::new();
        if let Some(c) = &column
            && !is_identifier(c)
        {
            problems.push(format!(
                "opt_out_column '{}' is not a column name (lower-case letters, digits, _)",
                shown(c)
            ));
        }
        if let Some(t) = &table {
            let parts: Vec<&str> = t.split('.').collect();
            if parts.len() > 2 || !parts.iter().all(|p| is_identifier(p)) {
                problems.push(format!(
                    "suppression_table '{}' is not a table name ([schema.]table, lower-case letters, digits, _)",
                    shown(t)
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok((column.is_some() || table.is_some()).then_some(Consent {
            opt_out_column: column,
            suppression_table: table,
        }))
    }

    /// The tables [`Consent::check`] needs in the catalog.
    pub fn tables(&self) -> Vec<&str> {
        self.suppression_table.as_deref().into_iter().collect()
    }

    /// Whether the CDP has what the rule names: the opt-out column as a boolean of
    /// `customers_master`, the suppression table with a numeric `customer_id`.
    pub fn check(&self, catalog: &Catalog) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(column) = &self.opt_out_column {
            match catalog.column_type(CUSTOMERS, column) {
                None => problems.push(format!(
                    "opt_out_column {column}: the CDP's table {CUSTOMERS} has no such column"
                )),
                Some(ty) if ty.category != 'B' => problems.push(format!(
                    "opt_out_column {column} is {}; it must be boolean (true = opted out)",
                    ty.name
                )),
                Some(_) => {}
            }
        }
        if let Some(table) = &self.suppression_table {
            match catalog.column_type(table, "customer_id") {
                None if !catalog.has_table(table) => problems.push(format!(
                    "suppression_table {table}: the CDP has no such table"
                )),
                None => problems.push(format!(
                    "suppression_table {table} has no column customer_id"
                )),
                Some(ty) if ty.category != 'N' => problems.push(format!(
                    "suppression_table {table}: customer_id is {}; it must be a number",
                    ty.name
                )),
                Some(_) => {}
            }
        }
        problems
    }

    /// A condition that holds when the customer whose id is `id` is suppressed.
    pub fn suppressed(&self, id: &str) -> String {
        let mut any = Vec::new();
        if let Some(column) = &self.opt_out_column {
            any.push(format!(
                "EXISTS (SELECT 1 FROM {CUSTOMERS} oc WHERE oc.id = {id} AND oc.\"{column}\")"
            ));
        }
        if let Some(table) = &self.suppression_table {
            any.push(format!(
                "EXISTS (SELECT 1 FROM {} sc WHERE sc.customer_id = {id})",
                quoted_table(table)
            ));
        }
        format!("({})", any.join(" OR "))
    }

    /// The extraction `sql` without its suppressed customers.
    pub fn filter(&self, sql: &str) -> String {
        format!(
            "SELECT q.* FROM (\n{}\n) q WHERE NOT {}",
            trimmed(sql),
            self.suppressed("q.customer_id")
        )
    }

    /// Counts the customers of extraction `sql` (unfiltered) that the rule holds back.
    pub fn count_sql(&self, sql: &str) -> String {
        format!(
            "SELECT count(*) FROM (\n{}\n) q WHERE {}",
            trimmed(sql),
            self.suppressed("q.customer_id")
        )
    }
}

/// Counts the customers the extraction would hold back. The extraction's parameters are `$1`
/// (tenant ids) and `$2` (excluded segments); a query that uses fewer still prepares.
pub async fn count_suppressed(
    client: &tokio_postgres::Client,
    consent: &Consent,
    sql: &str,
    tenant_ids: &[i32],
    excluded_segments: &[String],
) -> anyhow::Result<i64> {
    use tokio_postgres::types::Type;
    let statement = client
        .prepare_typed(
            &consent.count_sql(sql),
            &[Type::INT4_ARRAY, Type::TEXT_ARRAY],
        )
        .await
        .context("Failed to prepare the count of suppressed customers")?;
    let row = client
        .query_one(&statement, &[&tenant_ids, &excluded_segments])
        .await
        .context("Failed to count the suppressed customers")?;
    Ok(row.get(0))
}

/// Ledger members built from a suppressed customer, with no unsuppressed candidate staged for
/// the same member: how many the run must remove for consent.
pub async fn count_leaving(
    stage: &tokio_postgres::Client,
    consent: &Consent,
    scope: LedgerScope,
) -> anyhow::Result<i64> {
    let row = stage
        .query_one(
            &format!("SELECT count(*) FROM ({}) l", leaving(consent)),
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to count the suppressed audience members")?;
    Ok(row.get(0))
}

/// Adds the suppressed ledger members to the run's removals (`sync_removes`), after the guard has
/// decided on the others; returns how many were added.
pub async fn plan_removals(
    stage: &tokio_postgres::Client,
    consent: &Consent,
    scope: LedgerScope,
) -> anyhow::Result<i64> {
    let added = stage
        .execute(
            &format!(
                "INSERT INTO sync_removes (seq, match_keys, member_key, cells)
                 SELECT (SELECT coalesce(max(seq), 0) FROM sync_removes)
                        + row_number() OVER (ORDER BY l.match_keys, l.member_key),
                        l.match_keys, l.member_key, l.cells
                   FROM ({}) l
                  WHERE NOT EXISTS (SELECT 1 FROM sync_removes r WHERE r.member_key = l.member_key)",
                leaving(consent)
            ),
            &[&scope.configuration_id, &scope.definition_id],
        )
        .await
        .context("Failed to plan the removals for consent")?;
    Ok(added as i64)
}

/// The ledger members (`$1`, `$2` = configuration and definition id) whose source customer is suppressed and that no
/// staged candidate keeps.
fn leaving(consent: &Consent) -> String {
    crate::db::ledger::members_where(&format!(
        "{} AND NOT EXISTS (SELECT 1 FROM sync_stage s
                             WHERE s.member_key = m.member_key AND s.cells IS NOT NULL)",
        consent.suppressed("m.source_customer_id")
    ))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn quoted_table(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

fn trimmed(sql: &str) -> &str {
    sql.trim_end().trim_end_matches(';')
}

/// A rejected name as `error_log` shows it: short, one line.
fn shown(name: &str) -> String {
    name.chars()
        .take(80)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::source::ColumnType;

    fn ty(category: char, name: &str) -> ColumnType {
        ColumnType {
            category,
            name: name.into(),
        }
    }

    #[test]
    fn a_row_without_either_name_has_no_rule() {
        assert_eq!(Consent::from_row(None, None), Ok(None));
        assert_eq!(Consent::from_row(Some(" "), Some("")), Ok(None));
    }

    #[test]
    fn names_that_are_not_plain_identifiers_are_refused_before_they_reach_sql() {
        let problems = Consent::from_row(Some("opt_out; DROP TABLE x"), Some("a.b.c")).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("opt_out_column"), "{problems:?}");
        assert!(problems[1].contains("suppression_table"), "{problems:?}");
        assert!(Consent::from_row(None, Some("Suppressed")).is_err());
        assert!(Consent::from_row(None, Some("cdp.\"x\"")).is_err());
    }

    #[test]
    fn the_filter_keeps_the_query_and_drops_customers_either_rule_holds_back() {
        let consent = Consent::from_row(Some("marketing_opt_out"), Some("cdp.suppressed"))
            .unwrap()
            .unwrap();
        let sql = consent.filter("SELECT id AS customer_id FROM t;\n");
        assert!(sql.contains("SELECT id AS customer_id FROM t\n"), "{sql}");
        assert!(
            sql.contains("oc.id = q.customer_id AND oc.\"marketing_opt_out\""),
            "{sql}"
        );
        assert!(
            sql.contains("FROM \"cdp\".\"suppressed\" sc WHERE sc.customer_id = q.customer_id"),
            "{sql}"
        );
        assert!(sql.contains("WHERE NOT ("), "{sql}");
        assert!(consent.count_sql("SELECT 1").contains(") q WHERE ("));
    }

    #[test]
    fn a_rule_naming_what_the_cdp_lacks_or_mistypes_names_each_problem() {
        let consent = Consent::from_row(Some("opt_out"), Some("cdp.suppressed"))
            .unwrap()
            .unwrap();
        let mut catalog = Catalog::default();
        catalog.add(CUSTOMERS, "id", ty('N', "int8"));
        let problems = consent.check(&catalog);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("has no such column"), "{problems:?}");
        assert!(problems[1].contains("no such table"), "{problems:?}");

        catalog.add(CUSTOMERS, "opt_out", ty('S', "text"));
        catalog.add("cdp.suppressed", "email", ty('S', "text"));
        let problems = consent.check(&catalog);
        assert!(problems[0].contains("must be boolean"), "{problems:?}");
        assert!(
            problems[1].contains("no column customer_id"),
            "{problems:?}"
        );

        let mut fine = Catalog::default();
        fine.add(CUSTOMERS, "opt_out", ty('B', "bool"));
        fine.add("cdp.suppressed", "customer_id", ty('N', "int8"));
        assert!(consent.check(&fine).is_empty());
    }
}
