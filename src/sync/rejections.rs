//! What Meta did not take: the `invalid_entry_samples` of an upload's answer, traced back to the
//! rows of the batch, so that the run's details name customers (tenant and customer id) and the
//! key at fault, never the values themselves. Meta samples at most 100 entries per call.
use std::collections::HashMap;

use anyhow::Context;

use super::cells::{Cell, cells};

/// One sampled invalid entry, found in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The row's index in the batch.
    pub row: usize,
    /// The schema key of the cell Meta named (`EMPTY_ROW` for a row it found empty).
    pub key: String,
    /// What Meta said of it (the sample's value side), cut to 200 characters.
    pub reason: String,
}

/// The rows of the batch that Meta's samples name, in row order. A sample is `value: reason` or
/// a bare value; `row N` names row N (Meta's form for an empty row). A sample that matches no
/// row of the batch is left out; a value in several rows names the first.
pub fn locate<'a>(
    samples: &[String],
    schema: &[&str],
    rows: impl Iterator<Item = &'a [u8]>,
) -> Vec<Rejected> {
    if samples.is_empty() {
        return Vec::new();
    }
    let mut by_value: HashMap<&str, &str> = HashMap::new();
    let mut by_row: HashMap<usize, &str> = HashMap::new();
    for sample in samples {
        let (value, reason) = sample.split_once(": ").unwrap_or((sample.as_str(), ""));
        match value.strip_prefix("row ").and_then(|n| n.parse().ok()) {
            Some(n) => {
                by_row.insert(n, reason);
            }
            None => {
                by_value.entry(value).or_insert(reason);
            }
        }
    }
    let mut found = Vec::new();
    for (row, packed) in rows.enumerate() {
        if let Some(reason) = by_row.remove(&row) {
            found.push(Rejected {
                row,
                key: "EMPTY_ROW".to_string(),
                reason: cut(reason),
            });
            continue;
        }
        if by_value.is_empty() {
            continue;
        }
        for (i, cell) in cells(packed).enumerate() {
            let Ok(cell) = cell else { break };
            if matches!(cell, Cell::Empty) {
                continue;
            }
            if let Some(reason) = cell.with_str(|value| by_value.remove(value)) {
                found.push(Rejected {
                    row,
                    key: schema.get(i).copied().unwrap_or("").to_string(),
                    reason: cut(reason),
                });
                break;
            }
        }
        if by_value.is_empty() && by_row.is_empty() {
            break;
        }
    }
    found
}

fn cut(reason: &str) -> String {
    reason.chars().take(200).collect()
}

/// Records sampled rejections of run `run_id` by customer, in the caller's transaction.
pub async fn record(
    client: &impl tokio_postgres::GenericClient,
    run_id: i64,
    configuration_id: i32,
    found: &[(i32, i64, Rejected)],
) -> anyhow::Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    let tenants: Vec<i32> = found.iter().map(|(t, _, _)| *t).collect();
    let customers: Vec<i64> = found.iter().map(|(_, c, _)| *c).collect();
    let keys: Vec<&str> = found.iter().map(|(_, _, r)| r.key.as_str()).collect();
    let reasons: Vec<&str> = found.iter().map(|(_, _, r)| r.reason.as_str()).collect();
    client
        .execute(
            "INSERT INTO cdp.facebook_sync_rejections
                    (run_id, configuration_id, tenant_id, customer_id, match_key, reason)
             SELECT $1, $2, r.* FROM unnest($3::int[], $4::bigint[], $5::text[], $6::text[]) r
             ON CONFLICT DO NOTHING",
            &[
                &run_id,
                &configuration_id,
                &tenants,
                &customers,
                &keys,
                &reasons,
            ],
        )
        .await
        .context("Failed to record the entries Meta found invalid")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::cells::push_cell;

    fn packed(row: &[&str]) -> Vec<u8> {
        let mut p = Vec::new();
        for cell in row {
            push_cell(&mut p, cell);
        }
        p
    }

    #[test]
    fn samples_name_the_rows_and_keys_whose_cells_meta_refused() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let rows = [
            packed(&[&a, ""]),
            packed(&["", "c-7"]),
            packed(&[&b, "c-8"]),
        ];
        let samples = vec![
            format!("{b}: EMAIL"),
            "c-7: EXTERN_ID".to_string(),
            "row 0: EMPTY_ROW".to_string(),
            "not-in-this-batch: EMAIL".to_string(),
        ];
        let found = locate(
            &samples,
            &["EMAIL", "EXTERN_ID"],
            rows.iter().map(Vec::as_slice),
        );
        let rows_keys: Vec<(usize, &str, &str)> = found
            .iter()
            .map(|r| (r.row, r.key.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            rows_keys,
            vec![
                (0, "EMPTY_ROW", "EMPTY_ROW"),
                (1, "EXTERN_ID", "EXTERN_ID"),
                (2, "EMAIL", "EMAIL")
            ]
        );
    }

    #[test]
    fn no_samples_read_no_rows() {
        let rows = [packed(&["x"])];
        assert!(locate(&[], &["EXTERN_ID"], rows.iter().map(Vec::as_slice)).is_empty());
    }
}
