use std::process::Command;

use crate::app::TestApp;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdp-meta-sync"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn a_bad_environment_variable_is_one_line_naming_it_and_exit_code_2() {
    let output = binary()
        .env("RUN_MODE", "sometimes")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("RUN_MODE") && stderr.contains("scheduler or once"),
        "{stderr}"
    );
}

#[test]
fn a_bad_port_is_reported_with_what_is_accepted() {
    let output = binary().env("PORT", "http").arg("status").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("PORT") && stderr.contains("port number"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_argument_exits_with_code_2() {
    let output = binary().args(["migrate", "--frobnicate"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["run", "--help"],
        vec!["sync", "--help"],
        vec!["status", "--help"],
        vec!["normalize", "--help"],
        vec!["demo-data", "--help"],
        vec!["events", "import", "--help"],
    ] {
        let output = binary().args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8(output.stdout).unwrap().contains("Usage"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn migrate_through_the_binary_twice_succeeds_both_times() {
    let test_db = TestApp::builder().build().await;
    for _ in 0..2 {
        let output = binary()
            .env("DATABASE_URL", test_db.url())
            .arg("migrate")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("0 applied"));
    }
}

#[tokio::test]
async fn an_unreachable_database_fails_with_exit_code_1_without_showing_the_password() {
    let output = binary()
        .env("DATABASE_URL", "postgres://cdp:hunter2@127.0.0.1:1/cdp")
        .env("DATABASE_CONNECT_TIMEOUT_SECS", "2")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn normalize_prints_one_line_per_input_line_with_the_cell_or_the_reason() {
    use std::io::Write;
    let mut child = binary()
        .args(["normalize", "--key", "EMAIL"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"  Mary@Example.com \nno-at-sign\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "mary@example.com\tf1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
    );
    assert!(lines[1].starts_with("ERROR\t"), "{}", lines[1]);
    assert_eq!(lines.len(), 2);
}

#[test]
fn normalize_with_an_unknown_key_exits_2_naming_the_argument() {
    let output = binary()
        .args(["normalize", "--key", "SHOE_SIZE"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--key"));
}
