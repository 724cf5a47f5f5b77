//! The event pump under faults (#14): slow Meta, a recording that fails after Meta accepted,
//! poison events, transient errors, blank event ids and undocumented `user_data` keys — against a
//! real Postgres and the Meta sandbox.
use std::time::Duration;

use cdp_meta_sync::events::verdict::MAX_UNRECORDED_SENDS;
use meta_sandbox::{FaultCode, Faults, SandboxOptions};
use tokio_util::sync::CancellationToken;

use crate::app::TestApp;

impl TestApp {
    async fn one_value<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, sql: &str) -> T {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `(event_id, status, last_error)` of every event of the system, by event_id.
    async fn outcomes(&self, configuration_id: i32) -> Vec<(String, String, String)> {
        self.client()
            .await
            .query(
                "SELECT e.event_id, d.status, coalesce(d.last_error, '')
                 FROM cdp.conversion_events e
                 JOIN cdp.conversion_event_deliveries d
                   ON d.event_row_id = e.id AND d.configuration_id = $1
                 ORDER BY e.event_id",
                &[&configuration_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// How many times the sandbox received each event_id.
    fn times_received(&self, pixel: &str) -> std::collections::HashMap<String, usize> {
        let mut times = std::collections::HashMap::new();
        for e in self.sandbox.events(pixel) {
            *times
                .entry(e.event["event_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        times
    }
}

#[tokio::test]
async fn no_transaction_of_the_pump_stays_open_while_meta_is_slow() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "201", &[21], "").await;
    t.leads(21, "slow", 1_500, "1 minute").await;
    let latency = Duration::from_millis(2_000);
    t.sandbox.set_faults(Faults {
        latency_ms: latency.as_millis() as u64,
        ..Faults::default()
    });
    let pump = t.pump();
    let worker = tokio::spawn(async move { pump.run_once(&CancellationToken::new()).await });

    let observer = t.client().await;
    let (mut polls, mut oldest_transaction, mut idle_in_transaction) = (0, 0.0_f64, 0_i64);
    while !worker.is_finished() {
        let row = observer
            .query_one(
                "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8,
                        count(*) FILTER (WHERE state = 'idle in transaction'
                                           AND clock_timestamp() - state_change > interval '250 ms')
                 FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND xact_start IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        polls += 1;
        oldest_transaction = oldest_transaction.max(row.get(0));
        idle_in_transaction += row.get::<_, i64>(1);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let report = worker.await.unwrap().unwrap();

    assert_eq!(report.sent, 1_500, "{report:?}");
    assert!(
        polls >= 40,
        "the run was watched throughout ({polls} polls)"
    );
    assert_eq!(
        idle_in_transaction, 0,
        "a pump connection sat idle in a transaction"
    );
    assert!(
        oldest_transaction < latency.as_secs_f64() / 2.0,
        "a transaction stayed open {oldest_transaction:.2}s while Meta took {latency:?}"
    );
    assert_eq!(t.statuses(system).await.len(), 1_500);
}

#[tokio::test]
async fn an_event_whose_outcome_cannot_be_recorded_is_resent_a_bounded_number_of_times_then_failed()
{
    let t = TestApp::builder().build().await;
    let system = t.system("web", "202", &[22], "").await;
    t.leads(22, "unrecorded", 3, "1 minute").await;
    // Meta accepts every request, but recording "sent" fails, as a commit that fails after Meta
    // answered would.
    t.client()
        .await
        .batch_execute(
            "CREATE FUNCTION test_refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'recording refused by the test'; END $$;
             CREATE TRIGGER refuse_sent BEFORE INSERT ON cdp.conversion_event_deliveries
                 FOR EACH ROW WHEN (NEW.status = 'sent') EXECUTE FUNCTION test_refuse_sent();",
        )
        .await
        .unwrap();
    // Leases that run out at once, so each run may take the batch again.
    let pump = t.pump().with_claim_lease(Duration::ZERO);
    let mut reports = Vec::new();
    for _ in 0..(MAX_UNRECORDED_SENDS + 3) {
        reports.push(pump.run_once(&CancellationToken::new()).await.unwrap());
    }

    let times = t.times_received("202");
    assert_eq!(times.len(), 3);
    assert!(
        times.values().all(|n| *n == MAX_UNRECORDED_SENDS as usize),
        "{times:?}"
    );
    let sends = MAX_UNRECORDED_SENDS as usize;
    assert!(reports[..sends].iter().all(|r| r.failed_systems == 1));
    assert_eq!(reports[sends].failed, 3, "{:?}", reports[sends]);
    assert!(
        reports[sends + 1..]
            .iter()
            .all(|r| r.failed == 0 && r.sent == 0)
    );
    let outcomes = t.outcomes(system).await;
    assert_eq!(outcomes.len(), 3);
    for (event_id, status, error) in &outcomes {
        assert_eq!(status, "failed", "{event_id}");
        assert!(
            error.contains("without its outcome being recorded"),
            "{error}"
        );
    }
    let pending: i64 = t
        .one_value("SELECT count(*) FROM cdp.conversion_events WHERE status = 'failed'")
        .await;
    assert_eq!(pending, 3);
}

#[tokio::test]
async fn a_non_transient_error_isolates_the_events_it_hits_and_every_other_event_is_sent() {
    let t = TestApp::builder()
        .sandbox(SandboxOptions {
            // With this seed the first request (all 40 events) draws the fault, so the batch is split.
            seed: 10,
            ..SandboxOptions::default()
        })
        .build()
        .await;
    let system = t.system("web", "203", &[23], "").await;
    t.leads(23, "mixed", 40, "1 minute").await;
    // An error code the worker does not know, not transient: about the request's content.
    t.sandbox.set_faults(Faults {
        error_rate: 0.5,
        error_codes: vec![FaultCode {
            code: 9_999,
            subcode: None,
            is_transient: Some(false),
        }],
        ..Faults::default()
    });

    let report = t.pump_once().await;

    assert_eq!(report.failed_systems, 0, "{report:?}");
    let outcomes = t.outcomes(system).await;
    assert_eq!(outcomes.len(), 40, "no event is left pending");
    let received = t.received("203");
    let rejected: Vec<_> = outcomes.iter().filter(|o| o.1 == "rejected").collect();
    let sent: Vec<_> = outcomes.iter().filter(|o| o.1 == "sent").collect();
    assert!(!rejected.is_empty(), "the fault hit some requests");
    assert!(!sent.is_empty(), "valid requests still went");
    assert_eq!(rejected.len() + sent.len(), 40);
    assert_eq!(
        (report.sent, report.rejected),
        (sent.len() as u64, rejected.len() as u64)
    );
    for (event_id, _, error) in &rejected {
        assert!(!received.contains_key(event_id), "{event_id}");
        assert!(error.contains("Meta error 9999"), "{error}");
        assert!(error.contains("Injected sandbox error"), "{error}");
    }
    for (event_id, _, _) in &sent {
        assert!(received.contains_key(event_id), "{event_id}");
    }
    assert_eq!(received.len(), sent.len());
}

#[tokio::test]
async fn transient_errors_leave_events_pending_with_a_backoff_and_never_reject_them() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "204", &[24], "").await;
    t.leads(24, "busy", 5, "1 minute").await;
    t.sandbox.set_faults(Faults {
        error_rate: 1.0,
        error_codes: vec![FaultCode::new(2), FaultCode::new(613)],
        ..Faults::default()
    });

    let failing = t.pump_once().await;

    assert_eq!(
        (failing.sent, failing.rejected, failing.failed_systems),
        (0, 0, 1)
    );
    assert!(t.outcomes(system).await.is_empty());
    let held: i64 = t
        .one_value(
            "SELECT count(*) FROM cdp.conversion_event_claims
             WHERE failures = 1 AND sends = 0 AND not_before > now() + interval '20 seconds'",
        )
        .await;
    assert_eq!(held, 5, "every event waits out its backoff");

    t.sandbox.set_faults(Faults::default());
    let during_backoff = t.pump_once().await;
    assert_eq!(during_backoff.sent, 0, "{during_backoff:?}");
    assert!(t.sandbox.events("204").is_empty());

    // The backoff passes.
    t.client()
        .await
        .execute(
            "UPDATE cdp.conversion_event_claims SET not_before = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let after = t.pump_once().await;
    assert_eq!((after.sent, after.rejected), (5, 0));
    assert_eq!(t.sandbox.events("204").len(), 5);
    let claims: i64 = t
        .one_value("SELECT count(*) FROM cdp.conversion_event_claims")
        .await;
    assert_eq!(claims, 0, "recorded events keep no claim");
}

#[tokio::test]
async fn a_blank_event_id_is_refused_by_the_table_and_an_old_one_is_rejected_not_sent() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "205", &[25], "").await;
    let client = t.client().await;
    let refused = client
        .execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time,
                 action_source, event_id, email)
             VALUES (25, 'Lead', now(), 'system_generated', '  ', 'a@example.com')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
    );
    // Rows from before migration 0005, which adds the check as NOT VALID: put back as they were.
    client
        .batch_execute(
            "ALTER TABLE cdp.conversion_events DROP CONSTRAINT conversion_events_event_id_not_blank;
             INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, email)
             VALUES (25, 'Lead', now(), 'system_generated', '', 'blank@example.com'),
                    (25, 'Lead', now(), 'system_generated', E' \\t', 'space@example.com'),
                    (25, 'Lead', now(), 'system_generated', 'real-1', 'real@example.com');
             ALTER TABLE cdp.conversion_events ADD CONSTRAINT conversion_events_event_id_not_blank
                 CHECK (btrim(event_id, E' \\t\\n\\r\\f\\x0B') <> '') NOT VALID;",
        )
        .await
        .unwrap();

    let report = t.pump_once().await;

    assert_eq!((report.sent, report.rejected), (1, 2), "{report:?}");
    let received = t.received("205");
    assert_eq!(received.keys().collect::<Vec<_>>(), vec!["real-1"]);
    let outcomes = t.outcomes(system).await;
    let blank: Vec<_> = outcomes.iter().filter(|o| o.0 != "real-1").collect();
    assert_eq!(blank.len(), 2);
    for (_, status, error) in blank {
        assert_eq!(status, "rejected");
        assert!(error.contains("event_id is empty"), "{error}");
        assert!(!error.contains("@example.com"), "{error}");
    }
}

#[tokio::test]
async fn an_undocumented_user_data_key_is_dropped_and_counted_and_never_reaches_meta() {
    let t = TestApp::builder().build().await;
    let system = t.system("web", "206", &[26], "").await;
    t.client()
        .await
        .batch_execute(
            "INSERT INTO cdp.conversion_events (tenant_id, event_name, event_time, action_source,
                 event_id, user_data)
             VALUES (26, 'Lead', now(), 'system_generated', 'typo',
                     '{\"emial\": \"Typo.Person@example.com\", \"email_address\": \"Other.Person@example.com\",
                       \"em\": \"good@example.com\", \"lead_id\": \"L-1\"}'),
                    (26, 'Lead', now(), 'system_generated', 'only-typo',
                     '{\"phone_number\": \"+5511912345678\"}');",
        )
        .await
        .unwrap();

    let report = t.pump_once().await;

    assert_eq!(
        (report.sent, report.rejected, report.dropped_user_data_keys),
        (1, 1, 2),
        "{report:?}"
    );
    let received = t.received("206");
    let sent = &received["typo"]["user_data"];
    let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["em", "lead_id"]);
    assert_eq!(sent["em"], crate::events_pump::sha("good@example.com"));
    let everything_received = serde_json::to_string(&t.sandbox.events("206")).unwrap();
    for raw in [
        "Typo.Person",
        "typo.person",
        "Other.Person",
        "other.person",
        "5511912345678",
    ] {
        assert!(!everything_received.contains(raw), "{raw} reached Meta");
    }
    assert!(!received.contains_key("only-typo"));
    let outcomes = t.outcomes(system).await;
    let only_typo = outcomes.iter().find(|o| o.0 == "only-typo").unwrap();
    assert!(
        only_typo.2.contains("user_data would be empty"),
        "{only_typo:?}"
    );
    assert!(!only_typo.2.contains("5511912345678"));
    let counted: i64 = t
        .one_value("SELECT sum(dropped_user_data_keys)::bigint FROM cdp.conversion_delivery_runs")
        .await;
    assert_eq!(counted, 2);
}

#[tokio::test]
async fn two_pumps_draining_one_system_at_once_send_each_event_once() {
    // What the per-system advisory lock used to guarantee, the claims now do: a batch claimed by
    // one pump is skipped (SKIP LOCKED) or excluded (its lease) by the other, and a pump whose
    // claim lost every row to the other's looks again instead of stopping.
    let t = TestApp::builder().build().await;
    let system = t.system("web", "207", &[27], "").await;
    t.leads(27, "shared", 3_500, "1 minute").await;
    t.sandbox.set_faults(Faults {
        latency_ms: 500,
        ..Faults::default()
    });
    let (a, b) = (t.pump(), t.pump());
    let cancel = CancellationToken::new();

    let (ra, rb) = tokio::join!(a.run_once(&cancel), b.run_once(&cancel));

    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.sent + rb.sent, 3_500, "{ra:?} {rb:?}");
    assert!(
        ra.sent > 0 && rb.sent > 0,
        "both took batches: {ra:?} {rb:?}"
    );
    let times = t.times_received("207");
    assert_eq!(times.len(), 3_500);
    assert!(times.values().all(|n| *n == 1));
    assert_eq!(t.statuses(system).await.len(), 3_500);
}

#[tokio::test]
async fn a_lost_or_garbled_answer_from_events_ends_with_each_event_kept_once_by_meta_and_sent() {
    use meta_sandbox::{WireFault, WireFaultKind, WireTarget};
    for kind in [
        WireFaultKind::DropAfterSuccess,
        WireFaultKind::BadGatewayHtml,
        WireFaultKind::TruncatedJson,
        WireFaultKind::SlowBody,
    ] {
        let t = TestApp::builder().build().await;
        let system = t.system("web", "104", &[2], "").await;
        t.leads(2, "lead", 50, "1 minute").await;
        t.sandbox.set_faults(Faults {
            wire: vec![WireFault {
                slow_ms: 2_000,
                ..WireFault::new(kind, WireTarget::Events)
            }],
            ..Faults::default()
        });

        let report = t.pump_once().await;

        assert_eq!(report.sent, 50, "{kind:?}: {report:?}");
        let statuses = t.statuses(system).await;
        assert!(
            statuses.values().all(|s| s == "sent"),
            "{kind:?}: {statuses:?}"
        );
        let mut kept = std::collections::HashMap::<String, usize>::new();
        for e in t.sandbox.events("104").iter().filter(|e| !e.duplicate) {
            *kept
                .entry(e.event["event_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(kept.len(), 50, "{kind:?}");
        assert!(
            kept.values().all(|n| *n == 1),
            "{kind:?}: Meta keeps one of each"
        );
        let calls = t
            .sandbox
            .requests()
            .iter()
            .filter(|r| r.operation == "send_events")
            .count();
        assert!(calls <= 2, "{kind:?}: {calls} calls for one batch");
    }
}
