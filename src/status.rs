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

const HEADER: [&str; 10] = [
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

/// One system's cells, in [`HEADER`] order; the last error cut to one short line.
fn cells(r: &StatusRow) -> Vec<String> {
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
    vec![
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
    ]
}

/// Renders the rows as aligned columns; the last error is cut to one short line.
pub fn render(rows: &[StatusRow]) -> String {
    let header = HEADER;
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    table.extend(rows.iter().map(cells));
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
/// The status page served at `/`: the same table, with the whole last error as each error cell's
/// tooltip, and the event backlog. Plain HTML, no script; every value is escaped.
pub fn render_html(rows: &[StatusRow], pending: &[crate::events::PendingSummary]) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>cdp-meta-sync</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
         .failed,.invalid_config{background:#fdd}.partial,.interrupted{background:#ffd}\
         .success{background:#dfd}</style></head><body>\n<h1>cdp-meta-sync</h1>\n\
         <table id=\"systems\"><thead><tr>",
    );
    for h in HEADER {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in rows {
        let row = cells(r);
        out.push_str(&format!("<tr class=\"{}\">", escape(&row[2])));
        for (i, cell) in row.iter().enumerate() {
            match (i, &r.error_log) {
                (9, Some(whole)) => out.push_str(&format!(
                    "<td title=\"{}\">{}</td>",
                    escape(whole),
                    escape(cell)
                )),
                _ => out.push_str(&format!("<td>{}</td>", escape(cell))),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    if !pending.is_empty() {
        out.push_str(
            "<h2>Conversion events</h2>\n<table id=\"events\"><thead><tr><th>SYSTEM</th>\
             <th>PENDING</th><th>OLDEST PENDING</th></tr></thead><tbody>\n",
        );
        for p in pending {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&p.system_name),
                p.pending,
                escape(&when(p.oldest_pending))
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Text as HTML: `&`, `<`, `>`, `"` and `'` as entities.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
    fn the_status_page_escapes_every_value_and_keeps_the_whole_error_as_a_tooltip() {
        let row = StatusRow {
            system_name: "<script>alert(1)</script>".into(),
            is_active: true,
            sync_status: Some("failed".into()),
            last_sync: None,
            next_sync: None,
            total_customers: 0,
            custom_audience_id: None,
            consecutive_failures: 1,
            lease_owner: None,
            lease_expires_at: None,
            error_log: Some(format!("\"quoted\" & {}", "long ".repeat(30))),
        };
        let html = render_html(&[row], &[]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<tr class=\"failed\">"));
        assert!(html.contains("title=\"&quot;quoted&quot; &amp; long long"));
        assert!(
            !html.contains("id=\"events\""),
            "no backlog, no events table"
        );
    }

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
