//! `cdp-meta-sync status`: the systems as a table an operator reads at a glance, or as one JSON
//! document for scripts (`--json`).
use chrono::{DateTime, Utc};

use crate::db::configurations::StatusRow;

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}

/// Renders the rows as aligned columns; the last error is cut to one short line.
pub fn render(rows: &[StatusRow]) -> String {
    let header = [
        "SYSTEM",
        "ACTIVE",
        "STATUS",
        "LAST SYNC",
        "NEXT SYNC",
        "MEMBERS",
        "AUDIENCE",
        "FAILS",
        "LEASE",
        "LAST ERROR",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        let error: String = r
            .error_log
            .as_deref()
            .unwrap_or("-")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let error = if error.chars().count() > 70 {
            format!("{}…", error.chars().take(69).collect::<String>())
        } else {
            error
        };
        let lease = match (&r.lease_owner, r.lease_expires_at) {
            (Some(owner), Some(until)) => format!("{owner} until {}", until.format("%H:%M:%S")),
            _ => "-".to_string(),
        };
        table.push(vec![
            r.system_name.clone(),
            if r.is_active { "yes" } else { "no" }.to_string(),
            r.sync_status
                .clone()
                .unwrap_or_else(|| "pending".to_string()),
            when(r.last_sync),
            when(r.next_sync),
            r.total_customers.to_string(),
            r.custom_audience_id
                .clone()
                .unwrap_or_else(|| "-".to_string()),
            r.consecutive_failures.to_string(),
            lease,
            error,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Conversion events waiting per system with a pixel.
/// `{"systems": [...], "events": [...]}`: every column of the table, unabridged (the last error
/// whole; it never holds personal data, see [`crate::db::error`]), times in RFC 3339.
pub fn render_json(rows: &[StatusRow], pending: &[crate::events::PendingSummary]) -> String {
    serde_json::json!({ "systems": rows, "events": pending }).to_string()
}

pub fn render_events(rows: &[crate::events::PendingSummary]) -> String {
    let mut out = format!(
        "{:<32} {:>10}  {}\n",
        "SYSTEM (EVENTS)", "PENDING", "OLDEST PENDING"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<32} {:>10}  {}\n",
            r.system_name,
            r.pending,
            when(r.oldest_pending)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_document_holds_every_system_and_backlog_with_the_whole_error() {
        let row = StatusRow {
            system_name: "kangoo_system".into(),
            is_active: true,
            sync_status: Some("partial".into()),
            last_sync: Some("2026-12-01T10:00:00Z".parse().unwrap()),
            next_sync: None,
            total_customers: 1234,
            custom_audience_id: Some("120000000000001".into()),
            consecutive_failures: 0,
            lease_owner: None,
            lease_expires_at: None,
            error_log: Some(format!("removals held: {}", "x".repeat(200))),
        };
        let pending = crate::events::PendingSummary {
            system_name: "kangoo_system".into(),
            pending: 7,
            oldest_pending: None,
        };
        let doc: serde_json::Value =
            serde_json::from_str(&render_json(&[row], &[pending])).unwrap();
        let system = &doc["systems"][0];
        assert_eq!(system["system_name"], "kangoo_system");
        assert_eq!(system["sync_status"], "partial");
        assert_eq!(system["total_customers"], 1234);
        assert_eq!(system["last_sync"], "2026-12-01T10:00:00Z");
        assert!(system["next_sync"].is_null());
        assert_eq!(system["error_log"].as_str().unwrap().len(), 215, "not cut");
        assert_eq!(doc["events"][0]["pending"], 7);
    }

    #[test]
    fn the_table_has_a_line_per_system_with_its_status_and_a_short_error() {
        let row = StatusRow {
            system_name: "kangoo_system".into(),
            is_active: true,
            sync_status: Some("failed".into()),
            last_sync: None,
            next_sync: None,
            total_customers: 1234,
            custom_audience_id: Some("120000000000001".into()),
            consecutive_failures: 2,
            lease_owner: None,
            lease_expires_at: None,
            error_log: Some(format!(
                "Meta error 190/463 (OAuthException): {}",
                "x".repeat(200)
            )),
        };
        let text = render(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SYSTEM"));
        assert!(
            lines[1].contains("kangoo_system")
                && lines[1].contains("failed")
                && lines[1].contains("1234")
        );
        assert!(lines[1].contains("190/463") && lines[1].ends_with('…'));
    }
}
