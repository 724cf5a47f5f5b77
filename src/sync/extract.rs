//! The extraction query and how its columns feed the match keys. The default query is built
//! from the CDP's actual columns (see [`super::source`]); `EXTRACT_SQL_FILE` replaces it with an
//! operator's own.
use anyhow::Context;
use tokio_postgres::types::Type;

use crate::identity::MatchKey;

/// What the default query is on a CDP with every column the worker knows: a starting point for an
/// operator's own `EXTRACT_SQL_FILE` (a test keeps it equal to the generated query).
pub const EXAMPLE_SQL: &str = include_str!("../../config/extract_customers.sql");

/// The operator's query named in the settings; `None` (no file set): the default query, built
/// per run from the CDP's columns.
pub fn load_sql(path: &str) -> anyhow::Result<Option<String>> {
    if path.trim().is_empty() {
        return Ok(None);
    }
    std::fs::read_to_string(path)
        .map(Some)
        .with_context(|| format!("EXTRACT_SQL_FILE: cannot read {path}"))
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

/// The column types a value is read from.
const TEXT_TYPES: [Type; 3] = [Type::TEXT, Type::VARCHAR, Type::BPCHAR];

/// Whether a column of the query holds text.
pub fn is_text(ty: &Type) -> bool {
    TEXT_TYPES.contains(ty)
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
    let text = TEXT_TYPES;
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
/// each ledger member's source (`$3`, `$5` = the configuration and definition id), with each
/// customer's source digest (`$4` = its seed, see [`super::digest`]). A full join, so each row is
/// one of:
///
/// * an unchanged customer: its ledger member carries this digest. It does not come back: the
///   run counts those members in the ledger afterwards ([`crate::db::ledger::settled`]);
/// * a changed customer: its values, its digest and its ledger member's key (which is gone);
/// * a new customer: its values and digest;
/// * a ledger member whose source customer is no longer extracted: only its key.
///
/// On a first sync the ledger is empty and the join would only cost (a third of the query's time
/// at 1M): every customer is new, the seed is `$3` and the ledger's ids are not parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    pub sql: String,
    pub map: ColumnMap,
    /// The ledger member's `member_key` (NULL if none).
    pub ledger_key: usize,
    /// The customer's source digest (bigint).
    pub digest: usize,
    /// The row's own country (text), which completes its national phone numbers.
    pub country: Option<usize>,
}

impl Extraction {
    /// `row_country`: the operator's query has a `country` column the phones should use.
    /// `ledger`: whether the audience's ledger has members to compare with (not a first sync).
    pub fn new(operator_sql: &str, keys: &[MatchKey], row_country: bool, ledger: bool) -> Self {
        let mut columns: Vec<&'static str> = Vec::new();
        let mut index_of = |column: &'static str| {
            2 + columns
                .iter()
                .position(|c| *c == column)
                .unwrap_or_else(|| {
                    columns.push(column);
                    columns.len() - 1
                })
        };
        let key_index: Vec<usize> = keys.iter().map(|key| index_of(column_for(*key))).collect();
        let country = row_country.then(|| index_of("country"));
        let selected: String = columns.iter().map(|c| format!(", x.{c}")).collect();
        let returned: String = columns.iter().map(|c| format!(", j.{c}")).collect();
        let mut values: Vec<String> = keys
            .iter()
            .map(|k| format!("x.{}", column_for(*k)))
            .collect();
        if row_country {
            values.push("x.country".to_string());
        }
        let digest = super::digest::sql(&values, if ledger { "$4" } else { "$3" });
        let operator_sql = operator_sql.trim_end().trim_end_matches(';');
        let ledger_sources = crate::db::ledger::SOURCES;
        let sql = match ledger {
            false => format!(
                "SELECT x.customer_id, x.tenant_id{selected}, NULL::bytea AS ledger_member_key,
                        {digest} AS digest
                   FROM (\n{operator_sql}\n) x"
            ),
            true => format!(
            "SELECT j.customer_id, j.tenant_id{returned}, j.ledger_member_key, j.digest
               FROM (SELECT x.customer_id, x.tenant_id{selected},
                            l.member_key AS ledger_member_key, l.source_digest AS ledger_digest,
                            {digest} AS digest
                       FROM (\n{operator_sql}\n) x
                       FULL JOIN ({ledger_sources}) l
                         ON l.source_tenant_id = x.tenant_id AND l.source_customer_id = x.customer_id
                     OFFSET 0) j
              WHERE j.customer_id IS NULL OR j.ledger_digest IS DISTINCT FROM j.digest"
            ),
        };
        let n = 2 + columns.len();
        Extraction {
            sql,
            map: ColumnMap {
                customer_id: 0,
                tenant_id: 1,
                keys: key_index,
            },
            ledger_key: n,
            digest: n + 1,
            country,
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
            false,
            true,
        );
        assert_eq!(e.map.keys, vec![2, 3, 2, 4, 4]);
        assert_eq!(e.country, None);
        assert!(
            e.sql
                .contains("x.customer_id, x.tenant_id, x.first_name, x.email, x.birth_date,")
        );
        assert_eq!((e.ledger_key, e.digest), (5, 6));
        assert!(
            e.sql.contains("(\nSELECT 1\n) x"),
            "the trailing semicolon goes: {}",
            e.sql
        );
    }

    #[test]
    fn a_first_sync_reads_the_operators_query_alone_with_the_same_columns() {
        let keys = [MatchKey::Email, MatchKey::Phone];
        let first = Extraction::new("SELECT 1", &keys, true, false);
        let next = Extraction::new("SELECT 1", &keys, true, true);
        assert!(!first.sql.contains("FULL JOIN"), "{}", first.sql);
        assert!(next.sql.contains("FULL JOIN"), "{}", next.sql);
        assert!(
            first.sql.contains("$3::bigint") && !first.sql.contains("$4"),
            "the seed is the third parameter: {}",
            first.sql
        );
        assert_eq!(
            (first.map, first.ledger_key, first.digest, first.country),
            (next.map, next.ledger_key, next.digest, next.country)
        );
    }

    #[test]
    fn a_row_country_for_phones_is_read_once_and_covered_by_the_digest() {
        let e = Extraction::new("SELECT 1", &[MatchKey::Phone, MatchKey::Email], true, true);
        assert_eq!(e.map.keys, vec![2, 3]);
        assert_eq!(e.country, Some(4));
        assert!(e.sql.contains("(x.country)::text"), "{}", e.sql);
        let with_key = Extraction::new(
            "SELECT 1",
            &[MatchKey::Country, MatchKey::Phone],
            true,
            true,
        );
        assert_eq!(
            with_key.country,
            Some(2),
            "the COUNTRY key's column is reused"
        );
    }

    #[test]
    fn the_example_query_is_the_default_query_on_a_cdp_with_every_column() {
        use super::super::source::{Catalog, ColumnType, OPTIONAL_COLUMNS};
        let mut catalog = Catalog::default();
        let ty = |category: char, name: &str| ColumnType {
            category,
            name: name.into(),
        };
        catalog.add("customers_master", "id", ty('N', "int8"));
        catalog.add("customers_master", "tenant_id", ty('N', "int4"));
        catalog.add("cdp_rfm_analysis", "customer_id", ty('N', "int8"));
        catalog.add("cdp_rfm_analysis", "rfm_segment", ty('S', "text"));
        for source in OPTIONAL_COLUMNS {
            let (table, column) = match source.output {
                "lookalike_value" => ("cdp_clv_analysis", "clv"),
                "first_name" => ("customers_master", "firstname"),
                "last_name" => ("customers_master", "lastname"),
                other => ("customers_master", other),
            };
            catalog.add(table, column, ty('S', "text"));
        }
        let keys: Vec<MatchKey> = MatchKey::ALL
            .into_iter()
            .filter(|k| *k != MatchKey::Fi)
            .collect();
        let generated = catalog.default_extraction(&keys).unwrap();
        let example: Vec<&str> = EXAMPLE_SQL
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect();
        assert_eq!(example.join("\n").trim(), generated.trim());
    }
}
