//! `cdp-meta-sync status`: the systems as a table an operator reads at a glance, or as one JSON
//! document for scripts (`--json`).
use chrono::{DateTime, Utc};

use crate::db::status::{HealthReport, LastRun, StatusRow};
use crate::meta::audience_health::AudienceHealth;

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M").to_string(),
    )
}

const HEADER: [&str; 12] = [
    "SYSTEM",
    "ACTIVE",
    "STATUS",
    "LAST SYNC",
    "NEXT SYNC",
    "MEMBERS",
    "AUDIENCE",
    "META STATUS",
    "APPROX. SIZE",
    "FAILS",
    "LEASE",
    "LAST ERROR",
];

/// Index of the cells the status page renders richer.
const META_STATUS: usize = 7;
const LAST_ERROR: usize = 11;

/// Meta's operation and delivery status codes, `200/300` (`?` for one Meta left out).
fn status_codes(h: &AudienceHealth) -> String {
    let code = |c: Option<i32>| c.map_or_else(|| "?".to_string(), |c| c.to_string());
    format!("{}/{}", code(h.operation_status), code(h.delivery_status))
}

/// Meta's approximate size, `1000-1100`.
fn approximate_size(h: &AudienceHealth) -> String {
    match (h.approximate_count_lower, h.approximate_count_upper) {
        (Some(lower), Some(upper)) => format!("{lower}-{upper}"),
        (Some(n), None) | (None, Some(n)) => format!("~{n}"),
        (None, None) => "-".to_string(),
    }
}

/// `text` cut to `max` characters (with `…`).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    } else {
        text.to_string()
    }
}

/// How a line names its audience: the system, and the definition's name when it is one of its
/// definitions (`(value-based)` for a value-based one).
pub fn label(r: &StatusRow) -> String {
    match &r.audience_name {
        None => r.system_name.clone(),
        Some(name) if r.value_based => format!("{} / {name} (value-based)", r.system_name),
        Some(name) => format!("{} / {name}", r.system_name),
    }
}

/// One system's cells, in [`HEADER`] order; the last error cut to one short line.
fn cells(r: &StatusRow) -> Vec<String> {
    let error: String = r
        .error_log
        .as_deref()
        .unwrap_or("-")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let error = cut(&error, 70);
    let health = r.audience_health.as_ref().map(|h| &h.health);
    let lease = match (&r.lease_owner, r.lease_expires_at) {
        (Some(owner), Some(until)) => format!("{owner} until {}", until.format("%H:%M:%S")),
        _ => "-".to_string(),
    };
    vec![
        label(r),
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
        health.map_or_else(|| "-".to_string(), status_codes),
        health.map_or_else(|| "-".to_string(), approximate_size),
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

/// The status page served at `/`: the same table, with the whole last error and Meta's whole
/// status descriptions as tooltips, then each system's last run (counts and coverage) and the
/// event backlog. Plain HTML, no script; every value is escaped.
pub fn render_html(rows: &[StatusRow], pending: &[crate::events::PendingSummary]) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>cdp-meta-sync</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em;color:#111}\
         table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;white-space:nowrap}\
         td.health,td.error{white-space:normal;min-width:14em;max-width:24em}\
         .failed,.invalid_config{background:#fdd}.partial,.interrupted{background:#ffd}\
         .success{background:#dfd}td.problem{color:#a00;font-weight:bold}</style></head><body>\n\
         <h1>cdp-meta-sync</h1>\n<table id=\"systems\"><thead><tr>",
    );
    for h in HEADER {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in rows {
        let row = cells(r);
        out.push_str(&format!("<tr class=\"{}\">", escape(&row[2])));
        for (i, cell) in row.iter().enumerate() {
            match (i, &r.error_log, &r.audience_health) {
                (LAST_ERROR, Some(whole), _) => out.push_str(&format!(
                    "<td class=\"error\" title=\"{}\">{}</td>",
                    escape(whole),
                    escape(cell)
                )),
                (META_STATUS, _, Some(h)) => out.push_str(&health_cell(h)),
                _ => out.push_str(&format!("<td>{}</td>", escape(cell))),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    let runs: Vec<(String, &LastRun)> = rows
        .iter()
        .filter_map(|r| Some((label(r), r.last_run.as_ref()?)))
        .collect();
    if !runs.is_empty() {
        out.push_str("<h2>Last run</h2>\n<table id=\"runs\"><thead><tr>");
        for h in RUN_HEADER {
            out.push_str(&format!("<th>{h}</th>"));
        }
        out.push_str("</tr></thead><tbody>\n");
        for (system, run) in runs {
            out.push_str(&format!("<tr class=\"{}\">", escape(&run.outcome)));
            for cell in run_cells(&system, run) {
                out.push_str(&format!("<td>{}</td>", escape(&cell)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table>\n");
    }
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

/// Meta's statuses as a cell: codes and a short description, Meta's whole words (and when they
/// were read) as the tooltip, marked when Meta reports a problem.
fn health_cell(report: &HealthReport) -> String {
    let h = &report.health;
    let part = |what: &str, code: Option<i32>, message: &Option<String>| {
        code.map(|c| match message.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => format!("{what}{c} {m}"),
            None => format!("{what}{c}"),
        })
    };
    let parts: Vec<String> = [
        part("", h.operation_status, &h.operation_message),
        part("delivery ", h.delivery_status, &h.delivery_message),
    ]
    .into_iter()
    .flatten()
    .collect();
    let whole = format!("{} (read {})", parts.join("; "), when(report.checked_at));
    let short = parts
        .iter()
        .map(|p| cut(p, 32))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "<td class=\"{}\" title=\"{}\">{}</td>",
        if report.problem.is_some() {
            "health problem"
        } else {
            "health"
        },
        escape(&whole),
        escape(&short)
    )
}

const RUN_HEADER: [&str; 13] = [
    "SYSTEM",
    "RUN",
    "OUTCOME",
    "FINISHED",
    "EXTRACTED",
    "ELIGIBLE",
    "ADDED",
    "REMOVED",
    "REMOVALS HELD",
    "NO USABLE KEY",
    "SUPPRESSED",
    "META INVALID",
    "COVERAGE",
];

/// A last run's cells, in [`RUN_HEADER`] order; coverage as `EMAIL 93% PHONE 71%`.
fn run_cells(system: &str, run: &LastRun) -> Vec<String> {
    let coverage = match run.coverage.as_object() {
        Some(keys) if !keys.is_empty() => keys
            .iter()
            .map(|(key, share)| {
                let pct = share
                    .as_f64()
                    .map_or_else(|| "?".to_string(), |s| format!("{}%", (s * 100.0).round()));
                format!("{key} {pct}")
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".to_string(),
    };
    vec![
        system.to_string(),
        run.run_id.to_string(),
        run.outcome.clone(),
        when(run.finished_at),
        run.extracted.to_string(),
        run.eligible.to_string(),
        run.added.to_string(),
        run.removed.to_string(),
        run.removals_held.to_string(),
        run.skipped_no_key.to_string(),
        run.suppressed.to_string(),
        run.num_invalid_entries.to_string(),
        coverage,
    ]
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

/// Conversion events waiting per system with a pixel.
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
            ..StatusRow::default()
        };
        let html = render_html(&[row], &[]);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<tr class=\"failed\">"));
        assert!(html.contains("<td class=\"error\" title=\"&quot;quoted&quot; &amp; long long"));
        assert!(
            !html.contains("id=\"events\""),
            "no backlog, no events table"
        );
    }

    fn flagged() -> StatusRow {
        StatusRow {
            system_name: "septimo_system".into(),
            is_active: true,
            sync_status: Some("partial".into()),
            custom_audience_id: Some("120000000000002".into()),
            error_log: Some("Meta reports audience 120000000000002: 471 blocked".into()),
            last_run: Some(LastRun {
                run_id: 41,
                outcome: "partial".into(),
                extracted: 2000,
                eligible: 1500,
                added: 1490,
                coverage: serde_json::json!({"EMAIL": 0.93, "PHONE": 0.5}),
                ..LastRun::default()
            }),
            audience_health: Some(HealthReport {
                run_id: 41,
                checked_at: None,
                health: AudienceHealth {
                    operation_status: Some(471),
                    operation_message: Some(format!("blocked <b>{}", "x".repeat(80))),
                    delivery_status: Some(200),
                    delivery_message: Some("ready".into()),
                    approximate_count_lower: Some(1400),
                    approximate_count_upper: Some(1500),
                },
                problem: Some("Meta reports audience 120000000000002: 471 blocked".into()),
            }),
            ..StatusRow::default()
        }
    }

    #[test]
    fn the_status_page_shows_metas_audience_health_and_the_last_runs_counts_and_coverage() {
        let html = render_html(&[flagged()], &[]);
        // Meta's status: codes with a short description, the whole text as the tooltip, escaped.
        assert!(
            html.contains("<td class=\"health problem\" title=\"471 blocked &lt;b&gt;xxx"),
            "{html}"
        );
        assert!(html.contains("; delivery 200 ready (read -)\">471 blocked &lt;b&gt;"));
        assert!(html.contains("<td>1400-1500</td>"));
        assert!(!html.contains("<b>"));
        let runs = &html[html.find("<table id=\"runs\">").expect("a last-run table")..];
        assert!(runs.contains(
            "<tr class=\"partial\"><td>septimo_system</td><td>41</td><td>partial</td><td>-</td>\
             <td>2000</td><td>1500</td><td>1490</td>"
        ));
        assert!(runs.contains("<td>EMAIL 93% PHONE 50%</td>"), "{runs}");
        // A system never run has neither.
        let fresh = StatusRow {
            system_name: "new_system".into(),
            ..StatusRow::default()
        };
        let html = render_html(&[fresh], &[]);
        assert!(!html.contains("id=\"runs\"") && !html.contains("class=\"health"));
    }

    #[test]
    fn status_json_carries_the_audience_health_with_its_problem_and_the_last_run() {
        let doc: serde_json::Value = serde_json::from_str(&render_json(&[flagged()], &[])).unwrap();
        let system = &doc["systems"][0];
        let health = &system["audience_health"];
        assert_eq!(health["operation_status"], 471);
        assert_eq!(health["delivery_status"], 200);
        assert_eq!(health["approximate_count_upper"], 1500);
        assert_eq!(health["run_id"], 41);
        assert!(health["problem"].as_str().unwrap().contains("471"));
        assert_eq!(system["last_run"]["added"], 1490);
        assert_eq!(system["last_run"]["coverage"]["EMAIL"], 0.93);
        let text = render(&[flagged()]);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("471/200      1400-1500"),
            "{text}"
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
            ..StatusRow::default()
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
            ..StatusRow::default()
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
