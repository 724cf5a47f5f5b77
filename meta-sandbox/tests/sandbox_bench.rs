//! Throughput of the Meta sandbox: add calls of 10,000 rows × 4 hashed keys, as the worker sends
//! them. Not a timed assertion; it prints calls/s. Run in release:
//! `scripts/bench-sandbox.sh` (= `cargo test --release -p meta-sandbox --test sandbox_bench -- --ignored --nocapture`).
use std::time::Instant;

use bytes::Bytes;
use meta_sandbox::{SandboxOptions, spawn};
use serde_json::json;
use sha2::{Digest, Sha256};

const ROWS: usize = 10_000;
const CALLS: usize = 100;

fn body(batch: usize, session_id: u64, batch_seq: usize) -> Bytes {
    let hex = |s: String| const_hex::encode(Sha256::digest(s.as_bytes()));
    let data: Vec<[String; 4]> = (0..ROWS)
        .map(|r| {
            let n = batch * ROWS + r;
            [
                hex(format!("user{n}@example.com")),
                hex(format!("1555{n:07}")),
                hex(format!("first{n}")),
                hex(format!("last{n}")),
            ]
        })
        .collect();
    Bytes::from(
        serde_json::to_vec(&json!({
            "access_token": "bench-token",
            "payload": {"schema": ["EMAIL", "PHONE", "FN", "LN"], "data": data},
            "session": {"session_id": session_id, "batch_seq": batch_seq, "last_batch_flag": false,
                        "estimated_num_total": CALLS / 2 * ROWS},
        }))
        .unwrap(),
    )
}

/// CPU seconds (user + system) this process has used so far, from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // /proc reports clock ticks; Linux uses 100 per second for USER_HZ.
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn sandbox_throughput_of_10000_row_add_calls() {
    let sb = spawn(SandboxOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{}/v26.0/act_1/customaudiences", sb.base_url()))
        .json(&json!({"access_token": "t", "name": "bench", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let url = format!("{}/v26.0/{id}/users", sb.base_url());

    // 50 distinct batches sent sequentially in one session (with `estimated_num_total`, as the
    // worker sends it), then 50 more without a session, 4 calls in flight.
    let half = CALLS / 2;
    let seq_bodies: Vec<Bytes> = (0..half).map(|i| body(i, 1, i + 1)).collect();
    let mb = seq_bodies[0].len() as f64 / 1e6;

    let (t, cpu) = (Instant::now(), cpu_seconds());
    for b in &seq_bodies {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let sequential = half as f64 / t.elapsed().as_secs_f64();
    let cpu_ms_per_call = (cpu_seconds() - cpu) * 1000.0 / half as f64;
    drop(seq_bodies);

    // Concurrent calls have no session (order across them is not defined).
    let par_bodies: Vec<Bytes> = (half..CALLS)
        .map(|i| {
            let b = body(i, 0, 0);
            // Strip the session: rebuild without it.
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            v.as_object_mut().unwrap().remove("session");
            Bytes::from(serde_json::to_vec(&v).unwrap())
        })
        .collect();
    let t = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for b in par_bodies {
        while in_flight.len() >= 4 {
            in_flight.join_next().await.unwrap().unwrap();
        }
        let (http, url) = (http.clone(), url.clone());
        in_flight.spawn(async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        });
    }
    while let Some(r) = in_flight.join_next().await {
        r.unwrap();
    }
    let concurrent = (CALLS - half) as f64 / t.elapsed().as_secs_f64();

    let members = sb.audiences()[0].member_count;
    assert_eq!(members, CALLS * ROWS);
    println!(
        "sandbox: {ROWS}-row x 4-key add calls ({mb:.1} MB each): {sequential:.0} calls/s sequential, \
         {concurrent:.0} calls/s with 4 in flight ({:.0} rows/s); {members} members stored; \
         {cpu_ms_per_call:.1} ms of CPU per sequential call (server and client) = {:.0} calls per CPU-second",
        concurrent * ROWS as f64,
        1000.0 / cpu_ms_per_call
    );
}
