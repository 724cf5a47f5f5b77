//! The CDP's source tables as they really are. The original design's `customers_master` has six
//! columns (`id, tenant_id, email, phone, firstname, lastname`); richer CDPs add location, birth
//! date, gender, ids and a CLV table. The worker reads which of the columns it knows exist (from
//! the catalog, once per run) and builds the default extraction from those alone, so a missing
//! optional column is simply absent. A system whose match keys need a column the CDP does not
//! have is `invalid_config`, with the key and the column named.
//!
//! An operator's own query (`EXTRACT_SQL_FILE`) is used as written instead; the event pump's
//! customer lookup uses the same catalog (see [`Catalog::customer_identity`]).
use std::collections::HashMap;

use anyhow::Context;

use crate::identity::MatchKey;

/// How the source tables are named in the query (resolved through the `search_path`).
const CUSTOMERS: &str = "customers_master";
pub(super) const RFM: &str = "cdp_rfm_analysis";
const CLV: &str = "cdp_clv_analysis";

/// What a source column may hold to be read as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepts {
    /// Text only (a number would lose leading zeros or mean nothing).
    Text,
    /// Text or a number (phones and ids are often stored as numbers).
    TextOrNumber,
    /// Text or a date or timestamp.
    TextOrDate,
    /// Text or a UUID.
    TextOrUuid,
}

/// One optional column of the default extraction.
#[derive(Debug, Clone, Copy)]
pub struct SourceColumn {
    /// The extraction's output column (what [`super::extract::column_for`] names).
    pub output: &'static str,
    table: &'static str,
    column: &'static str,
    accepts: Accepts,
}

impl SourceColumn {
    const fn new(
        output: &'static str,
        table: &'static str,
        column: &'static str,
        accepts: Accepts,
    ) -> Self {
        SourceColumn {
            output,
            table,
            column,
            accepts,
        }
    }

    fn alias(&self) -> &'static str {
        if self.table == CLV { "v" } else { "c" }
    }
}

/// Every column the default extraction reads when the CDP has it, in output order. The first
/// [`IDENTITY_COLUMNS`] are `customers_master`'s identity values, in
/// [`crate::events::payload::Identity`] order.
pub const OPTIONAL_COLUMNS: [SourceColumn; 13] = [
    SourceColumn::new("email", CUSTOMERS, "email", Accepts::Text),
    SourceColumn::new("phone", CUSTOMERS, "phone", Accepts::TextOrNumber),
    SourceColumn::new("first_name", CUSTOMERS, "firstname", Accepts::Text),
    SourceColumn::new("last_name", CUSTOMERS, "lastname", Accepts::Text),
    SourceColumn::new("city", CUSTOMERS, "city", Accepts::Text),
    SourceColumn::new("state", CUSTOMERS, "state", Accepts::Text),
    SourceColumn::new("zip", CUSTOMERS, "zip", Accepts::Text),
    SourceColumn::new("country", CUSTOMERS, "country", Accepts::Text),
    SourceColumn::new("birth_date", CUSTOMERS, "birth_date", Accepts::TextOrDate),
    SourceColumn::new("gender", CUSTOMERS, "gender", Accepts::Text),
    SourceColumn::new(
        "external_id",
        CUSTOMERS,
        "external_id",
        Accepts::TextOrNumber,
    ),
    SourceColumn::new("madid", CUSTOMERS, "madid", Accepts::TextOrUuid),
    SourceColumn::new("lookalike_value", CLV, "clv", Accepts::TextOrNumber),
];

/// How many of [`OPTIONAL_COLUMNS`] are a person's identity values (all but MADID and CLV).
pub const IDENTITY_COLUMNS: usize = 11;

/// The `customers_master` names of the identity columns, in order (what the demo creates).
pub const IDENTITY_COLUMN_NAMES: [&str; IDENTITY_COLUMNS] = {
    let mut names = [""; IDENTITY_COLUMNS];
    let mut i = 0;
    while i < IDENTITY_COLUMNS {
        names[i] = OPTIONAL_COLUMNS[i].column;
        i += 1;
    }
    names
};

/// Columns without which there is no extraction at all.
const REQUIRED_COLUMNS: [(&str, &str); 4] = [
    (CUSTOMERS, "id"),
    (CUSTOMERS, "tenant_id"),
    (RFM, "customer_id"),
    (RFM, "rfm_segment"),
];

/// A column's type as the catalog tells it: `pg_type.typcategory` and `typname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub category: char,
    pub name: String,
}

/// Why an optional column cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    WrongType(String),
}

/// The columns of the source tables (a table that does not exist has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    tables: HashMap<String, HashMap<String, ColumnType>>,
}

impl Catalog {
    /// Reads the columns of the three source tables, as the extraction would resolve their names.
    pub async fn read(client: &tokio_postgres::Client) -> anyhow::Result<Catalog> {
        Self::read_with(client, &[]).await
    }

    /// [`Catalog::read`], and the columns of `more` tables (by the names a query would use).
    pub async fn read_with(
        client: &tokio_postgres::Client,
        more: &[&str],
    ) -> anyhow::Result<Catalog> {
        let mut tables = vec![CUSTOMERS, RFM, CLV];
        tables.extend_from_slice(more);
        let rows = client
            .query(
                "SELECT t.name, a.attname::text, ty.typcategory::text, ty.typname::text
                   FROM unnest($1::text[]) AS t(name)
                   JOIN pg_attribute a ON a.attrelid = to_regclass(t.name)
                                      AND a.attnum > 0 AND NOT a.attisdropped
                   JOIN pg_type ty ON ty.oid = a.atttypid",
                &[&tables],
            )
            .await
            .context("Failed to read the columns of the CDP's tables")?;
        let mut catalog = Catalog::default();
        for row in rows {
            let category: String = row.get(2);
            catalog.add(
                row.get(0),
                row.get(1),
                ColumnType {
                    category: category.chars().next().unwrap_or('X'),
                    name: row.get(3),
                },
            );
        }
        Ok(catalog)
    }

    /// Records one column (for tests, and [`Catalog::read`]).
    pub fn add(&mut self, table: &str, column: &str, ty: ColumnType) {
        self.tables
            .entry(table.to_string())
            .or_default()
            .insert(column.to_string(), ty);
    }

    /// The type of a column, if the table has it.
    pub fn column_type(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables.get(table)?.get(column)
    }

    /// Whether the table exists (it has at least one column).
    pub fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// Whether an optional column can be read.
    pub fn usable(&self, source: &SourceColumn) -> Result<(), Unusable> {
        let ty = self
            .column_type(source.table, source.column)
            .ok_or(Unusable::Missing)?;
        let ok = match source.accepts {
            Accepts::Text => ty.category == 'S',
            Accepts::TextOrNumber => matches!(ty.category, 'S' | 'N'),
            Accepts::TextOrDate => matches!(ty.category, 'S' | 'D'),
            Accepts::TextOrUuid => ty.category == 'S' || ty.name == "uuid",
        };
        if ok {
            Ok(())
        } else {
            Err(Unusable::WrongType(ty.name.clone()))
        }
    }

    /// The default extraction for a system with these match keys, reading only the columns it
    /// uses (and `country`, which completes national phone numbers, when PHONE is a key and the
    /// CDP has it). Every problem is a sentence for `error_log`.
    pub fn default_extraction(&self, keys: &[MatchKey]) -> Result<String, Vec<String>> {
        let mut problems: Vec<String> = Vec::new();
        for (table, column) in REQUIRED_COLUMNS {
            let problem = match self.tables.get(table) {
                None => format!("the CDP has no table {table}"),
                Some(columns) if !columns.contains_key(column) => {
                    format!("the CDP's table {table} has no column {column}")
                }
                Some(_) => continue,
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
        let mut wanted: Vec<&SourceColumn> = Vec::new();
        for key in keys {
            let output = super::extract::column_for(*key);
            let Some(source) = OPTIONAL_COLUMNS.iter().find(|s| s.output == output) else {
                continue;
            };
            match self.usable(source) {
                Ok(()) => {
                    if !wanted.iter().any(|w| w.output == output) {
                        wanted.push(source);
                    }
                }
                Err(why) => problems.push(describe(*key, source, &why)),
            }
        }
        let country = &OPTIONAL_COLUMNS[7];
        if keys.contains(&MatchKey::Phone)
            && self.usable(country).is_ok()
            && !wanted.iter().any(|w| w.output == country.output)
        {
            wanted.push(country);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let columns: String = wanted
            .iter()
            .map(|s| format!(",\n       {}.{}::text AS {}", s.alias(), s.column, s.output))
            .collect();
        let clv_join = if wanted.iter().any(|s| s.table == CLV) {
            format!("\nLEFT JOIN {CLV} v ON v.customer_id = c.id")
        } else {
            String::new()
        };
        Ok(format!(
            "SELECT c.id::bigint AS customer_id,\n       c.tenant_id::integer AS tenant_id{columns}
FROM {CUSTOMERS} c
JOIN {RFM} r ON r.customer_id = c.id{clv_join}
WHERE c.tenant_id = ANY($1)
  AND r.rfm_segment <> ALL($2)"
        ))
    }

    /// The event pump's select list for the customer of an event (alias `c`): the eleven
    /// identity values in [`crate::events::payload::Identity`] order, each as text, NULL where the
    /// CDP has no usable column. `None` when there is no `customers_master` to look in.
    pub fn customer_identity(&self) -> Option<String> {
        self.column_type(CUSTOMERS, "id")?;
        self.column_type(CUSTOMERS, "tenant_id")?;
        let list: Vec<String> = OPTIONAL_COLUMNS[..IDENTITY_COLUMNS]
            .iter()
            .map(|source| match self.usable(source) {
                Ok(()) => format!("c.{}::text", source.column),
                Err(_) => "NULL::text".to_string(),
            })
            .collect();
        Some(list.join(", "))
    }
}

fn describe(key: MatchKey, source: &SourceColumn, why: &Unusable) -> String {
    match why {
        Unusable::Missing => format!(
            "match key {key} needs column {}.{}, which the CDP does not have",
            source.table, source.column
        ),
        Unusable::WrongType(ty) => {
            let expected = match source.accepts {
                Accepts::Text => "text (a number would lose leading zeros)",
                Accepts::TextOrNumber => "text or a number",
                Accepts::TextOrDate => "text or a date",
                Accepts::TextOrUuid => "text or a uuid",
            };
            format!(
                "match key {key} reads column {}.{}, which is {ty}; it must be {expected} (or adapt EXTRACT_SQL_FILE)",
                source.table, source.column
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> ColumnType {
        ColumnType {
            category: 'S',
            name: "text".into(),
        }
    }

    /// The original design's six columns, plus the RFM table.
    fn minimal() -> Catalog {
        let mut c = Catalog::default();
        c.add(
            CUSTOMERS,
            "id",
            ColumnType {
                category: 'N',
                name: "int8".into(),
            },
        );
        c.add(
            CUSTOMERS,
            "tenant_id",
            ColumnType {
                category: 'N',
                name: "int4".into(),
            },
        );
        for column in ["email", "phone", "firstname", "lastname"] {
            c.add(CUSTOMERS, column, text());
        }
        c.add(
            RFM,
            "customer_id",
            ColumnType {
                category: 'N',
                name: "int8".into(),
            },
        );
        c.add(RFM, "rfm_segment", text());
        c
    }

    const ORIGINAL_KEYS: [MatchKey; 4] =
        [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];

    #[test]
    fn on_the_original_six_columns_the_default_query_reads_only_those() {
        let sql = minimal().default_extraction(&ORIGINAL_KEYS).unwrap();
        assert!(sql.contains("c.firstname::text AS first_name"), "{sql}");
        for absent in ["country", "birth_date", "clv", "cdp_clv_analysis", "city"] {
            assert!(!sql.contains(absent), "{absent}: {sql}");
        }
    }

    #[test]
    fn the_country_column_comes_along_for_phones_when_the_cdp_has_it() {
        let mut c = minimal();
        c.add(CUSTOMERS, "country", text());
        let sql = c.default_extraction(&ORIGINAL_KEYS).unwrap();
        assert!(sql.contains("c.country::text AS country"), "{sql}");
        let sql = c.default_extraction(&[MatchKey::Email]).unwrap();
        assert!(!sql.contains("country"), "{sql}");
    }

    #[test]
    fn a_key_whose_column_is_missing_names_the_key_and_the_column() {
        let problems = minimal()
            .default_extraction(&[MatchKey::Email, MatchKey::Doby, MatchKey::LookalikeValue])
            .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "match key DOBY needs column customers_master.birth_date, which the CDP does not have",
                "match key LOOKALIKE_VALUE needs column cdp_clv_analysis.clv, which the CDP does not have",
            ]
        );
    }

    #[test]
    fn an_integer_zip_is_refused_in_plain_words_and_an_integer_phone_is_read() {
        let mut c = minimal();
        c.add(
            CUSTOMERS,
            "zip",
            ColumnType {
                category: 'N',
                name: "int4".into(),
            },
        );
        c.add(
            CUSTOMERS,
            "phone",
            ColumnType {
                category: 'N',
                name: "int8".into(),
            },
        );
        let problems = c
            .default_extraction(&[MatchKey::Phone, MatchKey::Zip])
            .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("match key ZIP reads column customers_master.zip, which is int4"),
            "{problems:?}"
        );
        assert!(
            c.default_extraction(&[MatchKey::Phone])
                .unwrap()
                .contains("c.phone::text AS phone")
        );
    }

    #[test]
    fn a_missing_source_table_is_named() {
        let mut c = minimal();
        c.tables.remove(RFM);
        let problems = c.default_extraction(&ORIGINAL_KEYS).unwrap_err();
        assert_eq!(problems, vec!["the CDP has no table cdp_rfm_analysis"]);
        let mut c = minimal();
        c.tables.get_mut(CUSTOMERS).unwrap().remove("tenant_id");
        let problems = c.default_extraction(&ORIGINAL_KEYS).unwrap_err();
        assert_eq!(
            problems,
            vec!["the CDP's table customers_master has no column tenant_id"]
        );
    }

    #[test]
    fn the_customer_lookup_reads_what_exists_and_nulls_the_rest() {
        let list = minimal().customer_identity().unwrap();
        assert!(
            list.starts_with(
                "c.email::text, c.phone::text, c.firstname::text, c.lastname::text, NULL::text"
            ),
            "{list}"
        );
        assert_eq!(list.matches(", ").count(), 10);
        assert_eq!(Catalog::default().customer_identity(), None);
    }
}
