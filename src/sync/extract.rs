//! The extraction query (kept as SQL in `config/`) and how its columns feed the match keys.
use anyhow::Context;
use tokio_postgres::types::Type;

use crate::identity::MatchKey;

/// The default query, embedded; `EXTRACT_SQL_FILE` points at an operator's own copy.
pub const DEFAULT_SQL: &str = include_str!("../../config/extract_customers.sql");

/// Loads the extraction SQL named in the settings, or the embedded default.
pub fn load_sql(path: &str) -> anyhow::Result<String> {
    if path.trim().is_empty() {
        return Ok(DEFAULT_SQL.to_string());
    }
    std::fs::read_to_string(path).with_context(|| format!("EXTRACT_SQL_FILE: cannot read {path}"))
}

/// The output column a match key reads.
pub fn column_for(key: MatchKey) -> &'static str {
    match key {
        MatchKey::Email => "email",
        MatchKey::Phone => "phone",
        MatchKey::Fn | MatchKey::Fi => "first_name",
        MatchKey::Ln => "last_name",
        MatchKey::Ct => "city",
        MatchKey::St => "state",
        MatchKey::Zip => "zip",
        MatchKey::Country => "country",
        MatchKey::Doby | MatchKey::Dobm | MatchKey::Dobd => "birth_date",
        MatchKey::Gen => "gender",
        MatchKey::ExternId => "external_id",
        MatchKey::Madid => "madid",
        MatchKey::LookalikeValue => "lookalike_value",
    }
}

/// Where each value sits in the query's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    pub customer_id: usize,
    pub tenant_id: usize,
    /// One column index per match key, in schema order.
    pub keys: Vec<usize>,
}

/// Matches the query's columns to the match keys; every problem is a plain sentence for
/// `error_log` (the system is then `invalid_config`).
pub fn map_columns(
    columns: &[(String, Type)],
    keys: &[MatchKey],
) -> Result<ColumnMap, Vec<String>> {
    let mut problems = Vec::new();
    let find = |name: &str, types: &[Type], problems: &mut Vec<String>| -> usize {
        match columns.iter().position(|(n, _)| n == name) {
            None => {
                problems.push(format!("the extraction query has no column `{name}`"));
                0
            }
            Some(i) if !types.contains(&columns[i].1) => {
                problems.push(format!(
                    "column `{name}` of the extraction query is {} (expected {})",
                    columns[i].1,
                    types
                        .iter()
                        .map(Type::name)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
                i
            }
            Some(i) => i,
        }
    };
    let customer_id = find("customer_id", &[Type::INT8], &mut problems);
    let tenant_id = find("tenant_id", &[Type::INT4], &mut problems);
    let text = [Type::TEXT, Type::VARCHAR, Type::BPCHAR];
    let keys = keys
        .iter()
        .map(|key| {
            let before = problems.len();
            let i = find(column_for(*key), &text, &mut problems);
            if problems.len() > before {
                let last = problems.pop().unwrap_or_default();
                problems.push(format!("match key {key}: {last}"));
            }
            i
        })
        .collect();
    if problems.is_empty() {
        Ok(ColumnMap {
            customer_id,
            tenant_id,
            keys,
        })
    } else {
        Err(problems)
    }
}

/// The run's query: the operator's extraction, reduced to the columns the match keys read, next to
/// each ledger member's source (`$3` = the configuration id), with each customer's source digest
/// (`$4` = its seed, see [`super::digest`]). A full join, so each row is one of:
///
/// * an unchanged customer: its ledger member carries this digest. Only `same` and the member's
///   `invalid_keys` come back; the values stay in Postgres;
/// * a changed customer: its values, its digest and its ledger member's key (which is gone);
/// * a new customer: its values and digest;
/// * a ledger member whose source customer is no longer extracted: only its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    pub sql: String,
    pub map: ColumnMap,
    /// The ledger member's `member_key` (NULL if none, or unchanged) and `invalid_keys`.
    pub ledger_key: usize,
    pub ledger_invalid: usize,
    /// The customer's source digest (bigint).
    pub digest: usize,
    /// Whether the customer is unchanged (boolean, never NULL).
    pub same: usize,
}

impl Extraction {
    pub fn new(operator_sql: &str, keys: &[MatchKey]) -> Self {
        let mut columns: Vec<&'static str> = Vec::new();
        let key_index = keys
            .iter()
            .map(|key| {
                let column = column_for(*key);
                2 + columns
                    .iter()
                    .position(|c| *c == column)
                    .unwrap_or_else(|| {
                        columns.push(column);
                        columns.len() - 1
                    })
            })
            .collect();
        let selected: String = columns.iter().map(|c| format!(", x.{c}")).collect();
        let unless_same: String = columns
            .iter()
            .map(|c| format!(", CASE WHEN k.same THEN NULL ELSE k.{c} END AS {c}"))
            .collect();
        let values: Vec<String> = keys
            .iter()
            .map(|k| format!("x.{}", column_for(*k)))
            .collect();
        let digest = super::digest::sql(&values, "$4");
        let operator_sql = operator_sql.trim_end().trim_end_matches(';');
        // `OFFSET 0` keeps the digest a column of `j`, computed once per row rather than once per
        // use in the outer CASEs.
        let sql = format!(
            "SELECT CASE WHEN k.same THEN NULL ELSE k.customer_id END AS customer_id,
                    CASE WHEN k.same THEN NULL ELSE k.tenant_id END AS tenant_id{unless_same},
                    CASE WHEN k.same THEN NULL ELSE k.ledger_member_key END AS ledger_member_key,
                    k.ledger_invalid_keys, k.digest, k.same
               FROM (SELECT j.*, coalesce(j.customer_id IS NOT NULL AND j.ledger_digest = j.digest, false) AS same
                       FROM (SELECT x.customer_id, x.tenant_id{selected},
                                    l.member_key AS ledger_member_key, l.source_digest AS ledger_digest,
                                    l.invalid_keys AS ledger_invalid_keys, {digest} AS digest
                               FROM (\n{operator_sql}\n) x
                               FULL JOIN (SELECT member_key, source_tenant_id, source_customer_id, source_digest,
                                                 invalid_keys
                                            FROM cdp.facebook_audience_members WHERE configuration_id = $3) l
                                 ON l.source_tenant_id = x.tenant_id AND l.source_customer_id = x.customer_id
                             OFFSET 0) j) k"
        );
        let n = 2 + columns.len();
        Extraction {
            sql,
            map: ColumnMap {
                customer_id: 0,
                tenant_id: 1,
                keys: key_index,
            },
            ledger_key: n,
            ledger_invalid: n + 1,
            digest: n + 2,
            same: n + 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(list: &[(&str, Type)]) -> Vec<(String, Type)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }

    #[test]
    fn each_match_key_finds_its_column_by_name() {
        let cols = columns(&[
            ("customer_id", Type::INT8),
            ("tenant_id", Type::INT4),
            ("phone", Type::TEXT),
            ("email", Type::VARCHAR),
            ("first_name", Type::TEXT),
        ]);
        let map = map_columns(&cols, &[MatchKey::Email, MatchKey::Phone, MatchKey::Fi]).unwrap();
        assert_eq!(map.keys, vec![3, 2, 4]);
        assert_eq!((map.customer_id, map.tenant_id), (0, 1));
    }

    #[test]
    fn a_missing_or_mistyped_column_is_named_with_its_match_key() {
        let cols = columns(&[
            ("customer_id", Type::INT4),
            ("tenant_id", Type::INT4),
            ("email", Type::TEXT),
        ]);
        let problems = map_columns(&cols, &[MatchKey::Email, MatchKey::Ct]).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("customer_id") && p.contains("int4")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("match key CT") && p.contains("`city`")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_run_query_reads_each_column_once_even_when_two_keys_share_it() {
        let e = Extraction::new(
            "SELECT 1;\n",
            &[
                MatchKey::Fn,
                MatchKey::Email,
                MatchKey::Fi,
                MatchKey::Doby,
                MatchKey::Dobm,
            ],
        );
        assert_eq!(e.map.keys, vec![2, 3, 2, 4, 4]);
        assert!(
            e.sql
                .contains("x.customer_id, x.tenant_id, x.first_name, x.email, x.birth_date,")
        );
        assert_eq!(
            (e.ledger_key, e.ledger_invalid, e.digest, e.same),
            (5, 6, 7, 8)
        );
        assert!(
            e.sql.contains("(\nSELECT 1\n) x"),
            "the trailing semicolon goes: {}",
            e.sql
        );
    }

    #[test]
    fn the_default_query_provides_a_column_for_every_match_key() {
        for key in MatchKey::ALL {
            let column = column_for(key);
            if key != MatchKey::Madid {
                assert!(DEFAULT_SQL.contains(&format!("AS {column}")), "{column}");
            }
        }
    }
}
