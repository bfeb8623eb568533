//! End to end: the real binary (or the library's engine) against the simulator over loopback.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use gemini_sim::{FaultConfig, RateLimitConfig};
use gemini_sweep::accounts::AccountEntry;
use gemini_sweep::client::{Clock, Credentials, NonceMode, SystemClock};
use gemini_sweep::config::SweepConfig;
use gemini_sweep::engine::{self, Target};
use secrecy::SecretString;

/// Runs the binary with the `run` arguments `base`, then `extra`.
async fn run_with(base: &[String], extra: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    Bin::new()
        .args(base)
        .args(extra)
        .envs(envs.iter().copied())
        .output()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_the_exchange_reports_is_recorded_once_and_nothing_else() {
    let mut config = sim_config(200);
    config.orders_per_account = 0..=40;
    config.reject_fraction = 0.02;
    let server = start(config).await;
    let (ws, base) = sweep_setup(&server);
    let output = run_with(&base, &["--rate", "2000", "--concurrency", "16"], &[]).await;
    let summary = stdout_json(&output);

    let conn = db(&ws.db());
    let run_id = summary["run_id"].as_i64().expect("run_id");
    let (cancelled, rejected) = ledger_truth(&server);
    let db_cancelled = order_rows(&conn, "cancelled_orders", run_id);
    let db_rejected = order_rows(&conn, "cancel_rejects", run_id);
    assert!(
        !cancelled.is_empty() && !rejected.is_empty(),
        "the test book has both"
    );
    assert_eq!(
        db_cancelled.iter().cloned().collect::<BTreeSet<_>>(),
        cancelled,
        "cancelled_orders is exactly what the exchange cancelled"
    );
    assert_eq!(
        db_cancelled.len(),
        cancelled.len(),
        "no duplicate cancelled rows"
    );
    assert_eq!(
        db_rejected.iter().cloned().collect::<BTreeSet<_>>(),
        rejected,
        "cancel_rejects is exactly what the exchange rejected"
    );

    // The simulator's rejects stay rejected, so the run must say so with exit code 1.
    let still_open: usize = server
        .ledger()
        .accounts
        .values()
        .map(|a| a.open.len())
        .sum();
    assert!(still_open > 0);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    // The JSON line agrees with the database.
    assert_eq!(
        summary["orders_cancelled"].as_i64().unwrap(),
        cancelled.len() as i64
    );
    assert_eq!(
        summary["orders_rejected"].as_i64().unwrap(),
        still_open as i64
    );
    assert_eq!(summary["accounts_total"], 200);
    assert_eq!(
        summary["attempts"].as_i64().unwrap(),
        count(&conn, "SELECT count(*) FROM attempts")
    );
    assert_eq!(
        summary["attempts"].as_u64().unwrap(),
        server.ledger().counters.requests,
        "every request the exchange saw is an attempt row"
    );
    assert_eq!(
        summary["accounts_ok"].as_i64().unwrap()
            + summary["accounts_rejects_left"].as_i64().unwrap(),
        200
    );
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["db"], ws.db().display().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_is_honoured_from_the_first_request_to_the_last() {
    const ACCOUNTS: usize = 40;
    const RATE: f64 = 20.0;
    // An exchange without a limit: the pace is the engine's alone, read from the send times it
    // recorded. (Counting a limited simulator's 429s would test how requests bunch on a loaded
    // machine instead: a stalled test process hands the limiter a burst the engine never sent.)
    let server = start(sim_config(ACCOUNTS)).await;
    let (ws, base) = sweep_setup(&server);
    let started_at = SystemTime::now();
    let started = Instant::now();
    let output = run_with(
        &base,
        &["--rate", "20", "--concurrency", "16", "--no-verify"],
        &[],
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["rate_limited"], 0, "an exchange without a limit");
    // Request by request: the k-th left no sooner than k/RATE seconds after the start.
    let conn = db(&ws.db());
    let times = send_times(&conn, "1");
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts WHERE outcome = 'ok'"),
        ACCOUNTS as i64,
        "one cancel-all each"
    );
    // (More requests are retries: a nonce race between two in flight is more likely on a loaded
    // machine. Every one is paced.)
    assert_eq!(times.len() as u64, server.ledger().counters.requests);
    assert_paced(&times, started_at, RATE, 1, "--rate 20");
    // One request every 1/RATE seconds after the first: the run cannot be faster than that.
    let bound = Duration::from_secs_f64((ACCOUNTS - 1) as f64 / RATE);
    assert!(elapsed >= bound, "{elapsed:?} < {bound:?}");
    let wall = Duration::from_millis(summary["wall_ms"].as_u64().unwrap());
    assert!(wall >= bound, "{wall:?} < {bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_set_too_high_backs_off_instead_of_hammering() {
    const ACCOUNTS: usize = 40;
    let mut config = sim_config(ACCOUNTS);
    config.rate_limit = Some(RateLimitConfig {
        per_second: 20.0,
        burst_queue: 2,
        send_retry_after: false,
    });
    let server = start(config).await;
    let (_ws, base) = sweep_setup(&server);
    // Four in flight against one served and two queued: the fourth is refused whenever the key
    // outruns the exchange. That bounds what one push-back costs (each pauses the key for a
    // second or more) whatever the timing: a stalled machine that hands the exchange a burst
    // earns one refusal, not a window's worth.
    let output = run_with(
        &base,
        &[
            "--rate",
            "400",
            "--no-verify",
            "--max-attempts",
            "8",
            "--concurrency",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    let refused = summary["rate_limited"].as_u64().unwrap();
    assert_eq!(refused, server.ledger().counters.rate_limited);
    assert!(refused > 0, "the exchange did push back");
    // Without the slowdown, 40 accounts at 20 times the granted rate earn hundreds of 429s.
    assert!(
        refused < ACCOUNTS as u64,
        "{refused} 429s for {ACCOUNTS} accounts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_until_every_account_is_swept() {
    let mut config = sim_config(80);
    config.faults = FaultConfig {
        p_500: 0.03,
        p_502: 0.02,
        p_503: 0.01,
        p_drop: 0.02,
        p_garbage: 0.01,
        p_stall: 0.01,
        stall_for: Duration::from_secs(3),
        ..FaultConfig::default()
    };
    let server = start(config).await;
    let (ws, mut base) = sweep_setup(&server);
    base.retain(|a| a != "--timeout" && a != "2");
    let output = run_with(
        &base,
        &["--rate", "500", "--timeout", "0.5", "--max-attempts", "10"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["accounts_ok"], 80);
    let ledger = server.ledger();
    let injected: u64 = ledger.counters.faults.values().sum();
    assert!(
        injected > 0,
        "faults were injected: {:?}",
        ledger.counters.faults
    );
    let conn = db(&ws.db());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts") as u64,
        ledger.counters.requests,
        "every attempt is recorded"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE outcome = 'transient'"
        ) as u64,
        injected + ledger.counters.nonce_errors,
        "every injected fault (and lost nonce race) is a recorded transient attempt"
    );
    let (cancelled, _) = ledger_truth(&server);
    assert_eq!(
        order_rows(&conn, "cancelled_orders", 1)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        cancelled
    );
}

/// How a key can be refused, and what the run must then say.
struct Refusal {
    name: &'static str,
    /// Changes the simulator's key.
    key: fn(&mut gemini_sim::KeySpec),
    extra: &'static [&'static str],
    envs: &'static [(&'static str, &'static str)],
    /// Said by the stop reason.
    says: &'static [&'static str],
    /// Another process uses the key first, with nonces far ahead of the clock.
    other_process_first: bool,
}

async fn another_process_ran_ahead(server: &gemini_sim::SimServer) {
    let payload = r#"{"request":"/v1/heartbeat","nonce":9000000000000000}"#;
    let signed = gemini_sweep::signing::sign(SECRET.as_bytes(), payload.as_bytes());
    let reply = crate::http_client_builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/v1/heartbeat", server.base_url()))
        .header("X-GEMINI-APIKEY", KEY)
        .header("X-GEMINI-PAYLOAD", signed.payload_b64)
        .header("X-GEMINI-SIGNATURE", signed.signature_hex)
        .send()
        .await
        .expect("the other process's request");
    assert_eq!(reply.status(), 200);
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        name: "wrong secret",
        key: |_| {},
        extra: &[],
        envs: &[("GEMINI_API_SECRET", "not-the-secret")],
        says: &["InvalidSignature"],
        other_process_first: false,
    },
    Refusal {
        name: "no Trader role",
        key: |k| k.roles = vec![gemini_sim::Role::Auditor],
        extra: &[],
        envs: &[],
        says: &["MissingRole"],
        other_process_first: false,
    },
    Refusal {
        name: "a time-based key swept with increasing nonces",
        key: |k| k.nonce_mode = gemini_sim::NonceMode::Time,
        extra: &[],
        envs: &[],
        says: &["InvalidNonce", "--nonce-mode time"],
        other_process_first: false,
    },
    Refusal {
        name: "an increasing key swept with time nonces",
        key: |_| {},
        extra: &["--nonce-mode", "time"],
        envs: &[],
        says: &["InvalidNonce", "--nonce-mode increasing"],
        other_process_first: false,
    },
    Refusal {
        name: "another process ahead on the key",
        key: |_| {},
        extra: &[],
        envs: &[],
        says: &["InvalidNonce", "another process"],
        other_process_first: true,
    },
];

/// A key the exchange refuses stops the run at once: at most --concurrency + 2 requests for any
/// number of accounts, exit 4, and every account not reached recorded as not attempted, with
/// the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_the_run_at_once() {
    const ACCOUNTS: usize = 200;
    const CONCURRENCY: u64 = 8;
    for case in REFUSALS {
        let mut config = sim_config(ACCOUNTS);
        (case.key)(&mut config.keys[0]);
        let server = start(config).await;
        if case.other_process_first {
            another_process_ran_ahead(&server).await;
        }
        let requests_before = server.ledger().counters.requests;
        let (ws, base) = sweep_setup(&server);
        let mut extra = vec!["--rate", "1000", "--concurrency", "8"];
        extra.extend(case.extra);
        let output = run_with(&base, &extra, case.envs).await;
        let name = case.name;
        assert_eq!(output.status.code(), Some(4), "{name}: {}", stderr(&output));
        let sent = server.ledger().counters.requests - requests_before;
        assert!(
            sent <= CONCURRENCY + 2,
            "{name}: {sent} requests reached the exchange"
        );
        let summary = stdout_json(&output);
        assert_eq!(summary["status"], "refused", "{name}");
        let reason = summary["stop_reason"].as_str().unwrap_or_default();
        for needle in case.says {
            assert!(
                reason.contains(needle),
                "{name}: {needle:?} not in {reason}"
            );
        }
        let conn = db(&ws.db());
        assert_eq!(
            count(&conn, "SELECT count(*) FROM attempts") as u64,
            sent,
            "{name}: every request that left has a row"
        );
        let not_attempted = count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE status = 'not_attempted' AND last_error LIKE 'not attempted: %'",
        );
        assert!(
            not_attempted >= (ACCOUNTS as i64) - sent as i64,
            "{name}: {not_attempted} not attempted"
        );
        assert_eq!(summary["accounts_not_attempted"], not_attempted, "{name}");
        assert_eq!(summary["accounts_ok"], 0, "{name}");
        assert!(
            stderr(&output).contains("no further request will be sent"),
            "{name}"
        );
    }
}

/// A clock the test can step.
struct OffsetClock(AtomicU64);
impl Clock for OffsetClock {
    fn now_us(&self) -> u64 {
        SystemClock.now_us() - self.0.load(Ordering::SeqCst) * 1000
    }
}

fn library_config(url: String, db: std::path::PathBuf, concurrency: u32) -> SweepConfig {
    SweepConfig {
        accounts_file: "accounts.csv".into(),
        base_url: url,
        rate: 5000.0,
        burst: 1,
        concurrency,
        timeout: Duration::from_secs(5),
        max_attempts: 5,
        reject_retries: 1,
        verify: true,
        snapshot: false,
        nonce_mode: NonceMode::Increasing,
        lock_dir: None,
        proxy: None,
        group: gemini_sweep::config::DEFAULT_GROUP.into(),
        db,
        retry_base: Duration::from_millis(20),
        grace: Duration::from_secs(5),
        hold: Duration::ZERO,
    }
}

fn entries(names: &[String]) -> Vec<AccountEntry> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| AccountEntry {
            account: n.clone(),
            enabled: true,
            note: None,
            line: i as u64 + 2,
        })
        .collect()
}

fn credentials() -> Credentials {
    Credentials {
        key: KEY.into(),
        secret: SecretString::from(SECRET),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_survive_a_second_run_and_a_clock_stepped_back_an_hour() {
    let mut config = sim_config(20);
    config.orders_per_account = 1..=3;
    let server = start(config).await;
    let ws = Workspace::new();
    let names = account_names(&server);
    let clock = Arc::new(OffsetClock(AtomicU64::new(0)));
    for (run, offset_ms) in [(1, 0), (2, 0), (3, 3_600_000)] {
        clock.0.store(offset_ms, Ordering::SeqCst);
        // One request at a time: concurrent requests can race each other to the exchange (see
        // the concurrency test); here only the nonce's memory across runs is on trial.
        let summary = tokio::time::timeout(
            TEST_TIMEOUT,
            engine::run(
                library_config(server.base_url(), ws.db(), 1),
                credentials(),
                Target::New(entries(&names)),
                clock.clone(),
                engine::StopTokens::default(),
                || None,
            ),
        )
        .await
        .expect("run finishes")
        .expect("run succeeds");
        assert_eq!(summary.totals.run_id, run);
        assert_eq!(summary.totals.accounts_ok, 20, "run {run}");
    }
    assert_eq!(
        server.ledger().counters.nonce_errors,
        0,
        "no nonce ever went backwards"
    );
    // Every attempt's nonce is above every earlier one, across the three runs.
    let conn = db(&ws.db());
    let mut stmt = conn
        .prepare("SELECT CAST(nonce AS INTEGER) FROM attempts ORDER BY attempt_id")
        .unwrap();
    let nonces: Vec<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        nonces.len(),
        3 * 20 * 2,
        "three runs, 20 accounts, two calls each"
    );
    let last_of_run: Vec<i64> = (1..=3)
        .map(|run| {
            count(
                &conn,
                &format!("SELECT max(CAST(nonce AS INTEGER)) FROM attempts WHERE run_id = {run}"),
            )
        })
        .collect();
    for run in 2..=3 {
        let first_of_run = count(
            &conn,
            &format!("SELECT min(CAST(nonce AS INTEGER)) FROM attempts WHERE run_id = {run}"),
        );
        assert!(first_of_run > last_of_run[run as usize - 2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_in_flight_lose_no_account_to_nonce_races() {
    let mut config = sim_config(150);
    config.orders_per_account = 0..=5;
    let server = start(config).await;
    let ws = Workspace::new();
    let names = account_names(&server);
    let summary = tokio::time::timeout(
        TEST_TIMEOUT,
        engine::run(
            library_config(server.base_url(), ws.db(), 32),
            credentials(),
            Target::New(entries(&names)),
            Arc::new(SystemClock),
            engine::StopTokens::default(),
            || None,
        ),
    )
    .await
    .expect("run finishes")
    .expect("run succeeds");
    assert_eq!(summary.totals.accounts_ok, 150);
    assert_eq!(summary.totals.accounts_failed, 0);
    assert_eq!(summary.exit_code, gemini_sweep::exit::Exit::Ok);
    // Races may cost a retry (the exchange's InvalidNonce), never an account.
    let ledger = server.ledger();
    assert_eq!(
        summary.totals.attempts as u64,
        150 * 2 + ledger.counters.nonce_errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_mode_key_is_swept_with_second_nonces_and_never_races() {
    let server = time_mode_server(60).await;
    let (ws, base) = sweep_setup(&server);
    let output = run_with(
        &base,
        &[
            "--nonce-mode",
            "time",
            "--rate",
            "2000",
            "--concurrency",
            "16",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Time mode only asks for unused nonces near server time, so concurrency cannot reorder them.
    assert_eq!(server.ledger().counters.nonce_errors, 0);
    let conn = db(&ws.db());
    let nonce: String = conn
        .query_row("SELECT nonce FROM attempts LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let (secs, micros) = nonce.split_once('.').expect("seconds.micros");
    assert_eq!(micros.len(), 6, "{nonce}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(secs.parse::<u64>().unwrap()) < 60, "{nonce}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_successive_time_mode_runs_keep_their_nonces_near_the_clock() {
    let server = time_mode_server(3).await;
    let (ws, base) = sweep_setup(&server);
    for run in 1..=8 {
        let output = run_with(
            &base,
            &["--nonce-mode", "time", "--rate", "1000", "--no-verify"],
            &[],
        )
        .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "run {run}: {}",
            stderr(&output)
        );
    }
    assert_eq!(server.ledger().counters.nonce_errors, 0);
    let conn = db(&ws.db());
    let mark = count(&conn, "SELECT high_water_us FROM nonce_high_water");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        mark - now < 1_000_000,
        "the mark is the last nonce used, not leases stacked: {} us ahead",
        mark - now
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_verification_orders_are_cancelled_not_late_and_the_sweep_decides_the_exit() {
    let server = start(sim_config(10)).await;
    let (ws, base) = sweep_setup(&server);
    let output = run_with(&base, &["--rate", "1000", "--no-verify"], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    let (cancelled, _) = ledger_truth(&server);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM order_reconciliation WHERE outcome = 'cancelled'"
        ) as usize,
        cancelled.len()
    );
    assert_eq!(
        count(&conn, "SELECT sum(late) FROM account_reconciliation"),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM account_reconciliation WHERE clean IS NULL"
        ),
        10,
        "unknown, not dirty"
    );
    let runs_clean: Option<i64> = conn
        .query_row("SELECT clean FROM run_reconciliation", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs_clean, None);
}

async fn time_mode_server(accounts: usize) -> gemini_sim::SimServer {
    let mut config = sim_config(accounts);
    config.keys[0].nonce_mode = gemini_sim::NonceMode::Time;
    start(config).await
}

/// A network that reorders: every request is held 1-31 ms on its way in, before the nonce check,
/// so requests that leave in nonce order can arrive out of it. No account is lost to the races,
/// and every refused race is a recorded attempt. How few requests the adaptive window wastes
/// depends on timing, so it is measured, not asserted: `bench/run jitter` (bench/RESULTS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordering_network_loses_no_account_and_records_every_race() {
    let mut config = sim_config(80);
    config.orders_per_account = 0..=3;
    config.faults = FaultConfig {
        inbound_latency: Duration::from_millis(1),
        inbound_jitter: Duration::from_millis(30),
        ..FaultConfig::default()
    };
    let server = start(config).await;
    let (_ws, base) = sweep_setup(&server);
    let output = run_with(&base, &["--rate", "100000", "--concurrency", "16"], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["accounts_ok"], 80);
    let refused = server.ledger().counters.nonce_errors;
    let needed = 80 * 2;
    assert_eq!(summary["attempts"].as_u64().unwrap(), needed + refused);
}
