//! The status page in a real headless browser (Debian's chromium, which scripts/test.sh installs):
//! the worker's HTTP router in-process against a real database with two synced systems, one
//! healthy and one Meta flagged; the page's DOM and a screenshot are checked.
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cdp_meta_sync::health::Health;
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::{AudienceStatus, Faults};
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;

/// `$CHROMIUM`, else /usr/bin/chromium; a missing browser fails the test (it is not skipped).
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "no chromium at {} (set CHROMIUM to another path): install chromium: scripts/test.sh does it \
         (apt-get install -y --no-install-recommends chromium)",
        path.display()
    );
    path
}

/// Runs headless chromium on `url` with `args`, in a profile of its own; its stdout.
async fn browse(chromium: &PathBuf, url: &str, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Only `system` is active, then one sync pass.
async fn sync_only(w: &TestApp, system: &str) -> Outcome {
    w.client()
        .await
        .execute(
            "UPDATE cdp.facebook_configurations
                SET is_active = (system_name = $1), next_sync = now()",
            &[&system],
        )
        .await
        .unwrap();
    let reports = w.sync_due().await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports[0].outcome.clone()
}

/// Pixels of `png` within 3 of `rgb` on every channel, pixels darker than a dark grey, and
/// distinct colours.
struct Pixels {
    matching: Vec<usize>,
    dark: usize,
    colours: usize,
}

fn pixels(png: &[u8], wanted: &[[u8; 3]]) -> Pixels {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let samples = info.color_type.samples();
    assert!(
        samples >= 3,
        "a colour screenshot, got {:?}",
        info.color_type
    );
    assert_eq!((info.width, info.height), (1200, 800));
    let mut matching = vec![0; wanted.len()];
    let (mut dark, mut colours) = (0, HashSet::new());
    for px in buf[..info.buffer_size()].chunks_exact(samples) {
        let rgb = [px[0], px[1], px[2]];
        colours.insert(rgb);
        if rgb.iter().all(|&c| c < 90) {
            dark += 1;
        }
        for (n, w) in matching.iter_mut().zip(wanted) {
            if rgb.iter().zip(w).all(|(a, b)| a.abs_diff(*b) <= 3) {
                *n += 1;
            }
        }
    }
    Pixels {
        matching,
        dark,
        colours: colours.len(),
    }
}

#[tokio::test]
async fn the_status_page_renders_in_a_headless_browser_with_each_systems_status_and_audience_health()
 {
    let chromium = chromium();
    let w = TestApp::builder().customers(2_000).build().await;
    assert_eq!(sync_only(&w, "kangoo_system").await, Outcome::Success);
    w.sandbox.set_faults(Faults {
        audience_operation_status: Some(AudienceStatus::new(471)),
        ..Faults::default()
    });
    assert_eq!(sync_only(&w, "septimo_system").await, Outcome::Partial);
    let flagged = w.audience_id("septimo_system").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = cdp_meta_sync::http::router(
        w.ctx.pool.clone(),
        Arc::new(Health::default()),
        Duration::from_secs(60),
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(cdp_meta_sync::http::serve(listener, app, shutdown.clone()));

    // The DOM as the browser built it.
    let dom = browse(&chromium, &url, &["--dump-dom".to_string()]).await;
    let systems = &dom[dom
        .find("<table id=\"systems\">")
        .expect("the systems table")..];
    let systems = &systems[..systems.find("</table>").unwrap()];
    let row = |name: &str| {
        let start = systems
            .find(&format!("<td>{name}</td>"))
            .unwrap_or_else(|| panic!("no row for {name}: {systems}"));
        let tr = systems[..start].rfind("<tr").unwrap();
        systems[tr..start + systems[start..].find("</tr>").unwrap()].to_string()
    };
    let healthy = row("kangoo_system");
    assert!(healthy.starts_with("<tr class=\"success\">"), "{healthy}");
    assert!(healthy.contains("<td class=\"health\""), "{healthy}");
    assert!(healthy.contains(">200 Normal"), "{healthy}");
    let partial = row("septimo_system");
    assert!(partial.starts_with("<tr class=\"partial\">"), "{partial}");
    assert!(
        partial.contains("<td class=\"health problem\""),
        "{partial}"
    );
    assert!(partial.contains(">471 The custom audience"), "{partial}");
    assert!(
        partial.contains(&format!("Meta reports audience {flagged}: 471")),
        "{partial}"
    );
    assert!(row("digitalfarma_system").contains("<td>pending</td>"));
    let runs = &dom[dom.find("<table id=\"runs\">").expect("the last-run table")..];
    assert!(runs.contains("<td>kangoo_system</td>") && runs.contains("<td>septimo_system</td>"));
    assert!(runs.contains("<td>EMAIL "), "coverage per key: {runs}");

    // What the browser drew: both rows' colours, dark text, and no blank or error page.
    let shot = tempfile::tempdir().unwrap();
    let file = shot.path().join("status.png");
    browse(
        &chromium,
        &url,
        &[format!("--screenshot={}", file.display())],
    )
    .await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let png = std::fs::read(&file).expect("chromium wrote the screenshot");
    // .success #dfd, .partial #ffd
    let seen = pixels(&png, &[[0xdd, 0xff, 0xdd], [0xff, 0xff, 0xdd]]);
    assert!(
        seen.matching[0] > 2_000,
        "the success rows are not drawn: {} green pixels",
        seen.matching[0]
    );
    assert!(
        seen.matching[1] > 2_000,
        "the partial rows are not drawn: {} yellow pixels",
        seen.matching[1]
    );
    assert!(
        seen.dark > 1_000,
        "no text drawn: {} dark pixels",
        seen.dark
    );
    assert!(seen.colours > 20, "{} colours: a blank page", seen.colours);
}
