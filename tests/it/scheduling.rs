//! Safe to schedule: signals, kill -9 and resume, locks, dry runs, a busy database, secrets.
//! Each test does the bad thing for real to a child process, then compares the database with the
//! simulator's ledger.

use std::time::{Duration, Instant};

use crate::common::*;
use gemini_sim::{RateLimitConfig, SimConfig, SimServer};

fn rate_limited(accounts: usize, per_second: f64) -> SimConfig {
    let mut config = sim_config(accounts);
    config.orders_per_account = 1..=8;
    config.rate_limit = Some(RateLimitConfig {
        per_second,
        burst_queue: 5,
        send_retry_after: false,
    });
    config
}

fn spawn_sweep(args: &[String]) -> Running {
    Bin::new().args(args).spawn()
}

/// Waits until the run has committed at least `n` attempts (read-only, like an auditor would).
async fn wait_for_attempts(db_path: &std::path::Path, n: i64) {
    wait_until(&format!("the sweep to reach {n} attempts"), || {
        rusqlite::Connection::open_with_flags(db_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|conn| {
                conn.query_row("SELECT count(*) FROM attempts", [], |r| r.get::<_, i64>(0))
            })
            .is_ok_and(|done| done >= n)
    })
    .await;
}

/// Nothing the exchange cancelled and said so in a committed reply is missing; nothing is there
/// that the exchange did not cancel; no order appears twice.
fn assert_db_matches_ledger(server: &SimServer, conn: &rusqlite::Connection) -> OrderSet {
    let (truth, _) = ledger_truth(server);
    let rows = order_rows(conn, "cancelled_orders", 1);
    let recorded: OrderSet = rows.iter().cloned().collect();
    assert_eq!(rows.len(), recorded.len(), "no duplicate rows");
    assert!(
        recorded.is_subset(&truth),
        "only what the exchange cancelled"
    );
    truth.difference(&recorded).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_new_requests_lets_in_flight_ones_finish_and_exits_143() {
    let server = start(rate_limited(60, 25.0)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate".into(), "25".into()]);
    let child = spawn_sweep(&args);
    wait_for_attempts(&ws.db(), 15).await;
    child.signal("-TERM");
    let output = child.finish().await;
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["exit_code"], 143);
    assert!(summary["accounts_unfinished"].as_i64().unwrap() > 0);

    let conn = db(&ws.db());
    let missing = assert_db_matches_ledger(&server, &conn);
    assert!(
        missing.is_empty(),
        "in-flight replies were recorded: {missing:?}"
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts") as u64,
        server.ledger().counters.requests,
        "every request sent was recorded"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE status = 'pending'"
        ),
        0,
        "unfinished accounts are marked interrupted"
    );

    // Resume finishes the rest under the same run id.
    let output = resume(&ws, "latest", &["--rate", "500"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["run_id"], 1);
    assert_eq!(summary["accounts_ok"], 60);
    let missing = assert_db_matches_ledger(&server, &conn);
    assert!(missing.is_empty());
    assert_eq!(
        count(
            &conn,
            "SELECT clean FROM run_reconciliation WHERE run_id = 1"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_then_resume_loses_nothing_confirmed() {
    // 300 requests at 40/s: after the 70th, the pace keeps the run going for at least 5.75 s
    // more, however fast the machine, so the kill lands mid-run.
    const ACCOUNTS: i64 = 100;
    for kill_after in [1, 20, 70] {
        let server = start(rate_limited(ACCOUNTS as usize, 40.0)).await;
        let (ws, mut args) = sweep_setup(&server);
        // With the listing before each cancel-all, what a lost reply cancelled is known by id
        // (unexplained); without it, only the abandoned attempt says a cancel-all may have acted.
        args.extend(["--rate".into(), "40".into(), "--snapshot".into()]);
        let child = spawn_sweep(&args);
        wait_for_attempts(&ws.db(), kill_after).await;
        child.signal("-KILL");
        let output = child.finish().await;
        assert_eq!(output.status.code(), None, "killed by a signal");

        let conn = db(&ws.db());
        let status: String = conn
            .query_row("SELECT status FROM runs WHERE run_id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "running", "a killed run shows as running");
        assert_db_matches_ledger(&server, &conn);

        let output = resume(&ws, "1", &["--rate", "500"]).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "after {kill_after}: {}",
            stderr(&output)
        );
        let summary = stdout_json(&output);
        assert_eq!(summary["accounts_ok"], ACCOUNTS, "after {kill_after}");
        assert!(
            stderr(&output).contains("taking it over"),
            "{}",
            stderr(&output)
        );

        // What the killed process had in flight was cancelled by the exchange without a reply
        // reaching the database: it must show as unexplained, never vanish.
        let lost = assert_db_matches_ledger(&server, &conn);
        let unexplained = count(
            &conn,
            "SELECT count(*) FROM order_reconciliation WHERE outcome = 'unexplained'",
        );
        assert_eq!(unexplained as usize, lost.len(), "after {kill_after}");
        assert_eq!(
            count(
                &conn,
                "SELECT clean FROM run_reconciliation WHERE run_id = 1"
            ),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_database_or_key_is_refused() {
    // The first run is held mid-sweep by a request the exchange never answers, so it is still
    // running, however slow the machine, when the others try; no grace period to wait out.
    let (server, ws, args, first) = stalled_sweep("0").await;
    let pid = first.pid();

    let second = run_binary(&args, &[]).await;
    assert_eq!(second.status.code(), Some(2));
    let err = stderr(&second);
    assert!(err.contains("already running with this database"), "{err}");
    assert!(err.contains(&format!("pid={pid} run=1")), "{err}");

    let other_db = ws.path("other.db");
    let other_args = run_args(&server.base_url(), &ws.path("accounts.csv"), &other_db);
    let third = run_binary(&other_args, &[]).await;
    assert_eq!(third.status.code(), Some(2));
    assert!(
        stderr(&third).contains("already running with this API key"),
        "{}",
        stderr(&third)
    );

    first.signal("-INT");
    let output = first.finish().await;
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sends_nothing_and_writes_nothing() {
    let server = start(sim_config(25)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--dry-run".into(), "--rate".into(), "5".into()]);
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = stdout_json(&output);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["accounts_enabled"], 25);
    assert_eq!(plan["requests"], 50, "a cancel-all and a listing each");
    assert_eq!(plan["expected_seconds"], 9.8);
    assert_eq!(server.ledger().counters.requests, 0);
    assert!(!ws.db().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_delays_the_run_but_loses_nothing() {
    let server = start(sim_config(30)).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&account_names(&server));
    // Create and migrate the database, then hold its write lock as a careless auditor might.
    let url = server.base_url();
    let mut args = run_args(&url, &csv, &ws.db());
    args.extend(["--rate".into(), "1000".into()]);
    let first = run_binary(&args, &[]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let blocker = db(&ws.db());
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let sweep = Bin::new().args(&args).spawn();
    // Released once the run has met the lock and said it waits, not after a guess at how long
    // that takes.
    sweep
        .wait_for_stderr("database is locked by another connection; retrying")
        .await;
    blocker.execute_batch("COMMIT").unwrap();
    let output = sweep.finish().await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("locked"), "the wait was logged");
    let conn = db(&ws.db());
    let summary = stdout_json(&output);
    assert_eq!(summary["run_id"], 2);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts") as u64,
        server.ledger().counters.requests,
        "every request of both runs is recorded"
    );
    assert_eq!(summary["accounts_ok"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_the_key_never_appear_in_output_or_database_even_at_trace_level() {
    let mut config = sim_config(6);
    // An Auditor-only key: listing works, cancel-all earns MissingRole, whose message quotes
    // the key.
    config.keys[0].roles = vec![gemini_sim::Role::Auditor];
    config.faults.p_500 = 0.2;
    config.faults.failing_accounts.insert("acct-0002".into());
    let server = start(config).await;
    let ws = Workspace::new();
    let mut names = account_names(&server);
    names.push("no-such-account".into());
    let csv = ws.accounts_csv(&names);
    let url = server.base_url();
    let mut args = run_args(&url, &csv, &ws.db());
    args.extend(["--rate".into(), "1000".into()]);
    let output = run_binary(&args, &[("RUST_LOG", "trace")]).await;
    // The missing Trader role refuses the key: the run stops at once.
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("TRACE"), "trace logging was on");
    let conn = db(&ws.db());
    assert!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE error_reason = 'MissingRole'"
        ) > 0,
        "the reply that quotes the key was received and recorded"
    );
    drop(conn);

    let mut haystacks = vec![
        ("stdout", output.stdout.clone()),
        ("stderr", output.stderr.clone()),
    ];
    for entry in std::fs::read_dir(ws.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            haystacks.push(("file", std::fs::read(&path).unwrap_or_default()));
        }
    }
    for (what, bytes) in &haystacks {
        for needle in [SECRET, KEY] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} found in {what}"
            );
        }
    }
}

/// A simulator whose every request hangs, so requests stay in flight as long as a test needs.
async fn stalling_server(accounts: usize) -> SimServer {
    let mut config = sim_config(accounts);
    config.faults.p_stall = 1.0;
    config.faults.stall_for = Duration::from_secs(3600);
    start(config).await
}

/// A sweep of 10 accounts against a stalling simulator, with a request in flight when it
/// returns (only one: until the exchange accepts a cancel-all, a key sends one at a time), and
/// its arguments. The request would time out only after 600 s, the longest --timeout: a run
/// that ends sooner did not wait for it.
async fn stalled_sweep(grace: &str) -> (SimServer, Workspace, Vec<String>, Running) {
    let server = stalling_server(10).await;
    let (ws, mut args) = sweep_setup(&server);
    args.retain(|a| a != "--timeout" && a != "2");
    args.extend(["--timeout", "600", "--grace", grace, "--rate", "100"].map(String::from));
    let child = spawn_sweep(&args);
    wait_for_requests(&server, 1).await;
    (server, ws, args, child)
}

/// The request left in flight reads `abandoned`, with the nonce and the time it was sent.
fn assert_abandoned_with_nonce(conn: &rusqlite::Connection) {
    let (abandoned, with_nonce): (i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(nonce <> '' AND sent_at LIKE '20%') FROM attempts WHERE outcome = 'abandoned'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(abandoned, 1, "the request in flight");
    assert_eq!(with_nonce, 1);
    assert_eq!(
        count(
            conn,
            "SELECT count(*) FROM attempts WHERE outcome = 'in_flight'"
        ),
        0
    );
}

async fn wait_for_requests(server: &SimServer, n: u64) {
    wait_until(&format!("the sweep to send {n} requests"), || {
        server.ledger().counters.requests >= n
    })
    .await;
}

fn integrity(conn: &rusqlite::Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_waiting_but_still_settles_the_run_and_prints_the_summary() {
    let (_server, ws, _args, child) = stalled_sweep("600").await;
    child.signal("-INT");
    // The second signal only means "stop waiting" once the first has been taken.
    child.wait_for_stderr("received: finishing requests").await;
    child.signal("-INT");
    let started = Instant::now();
    let output = child.finish().await;
    // A hang guard, not a speed claim: waiting out the grace period (or the request's timeout)
    // would take 600 s; stopping at once takes well under a second.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "did not wait out the 600 s grace period"
    );
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("second signal"),
        "{}",
        stderr(&output)
    );
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["exit_code"], 130);
    assert_eq!(summary["accounts_unfinished"], 10);
    let conn = db(&ws.db());
    assert_eq!(integrity(&conn), "ok");
    let status: String = conn
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted", "settled, not left running");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE status = 'pending'"
        ),
        0
    );
    assert_abandoned_with_nonce(&conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_in_flight_after_the_grace_period_are_abandoned() {
    let (_server, ws, _args, child) = stalled_sweep("1").await;
    let started = Instant::now();
    child.signal("-TERM");
    let output = child.finish().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the grace period was given: {took:?}"
    );
    // A hang guard, not a speed claim: without the grace period's end the run would wait 600 s
    // for the request's timeout; it ends about a second after the signal.
    assert!(
        took < Duration::from_secs(60),
        "and not the request's 600 s timeout: {took:?}"
    );
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "interrupted");
    assert_eq!(summary["accounts_unfinished"], 10);
    let conn = db(&ws.db());
    assert_eq!(integrity(&conn), "ok");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE status = 'interrupted'"
        ),
        10
    );
    assert_abandoned_with_nonce(&conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_resumed_only_when_asked() {
    let mut config = sim_config(5);
    config.accounts[2].status = gemini_sim::AccountStatus::Closed;
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate".into(), "1000".into()]);
    let first = run_binary(&args, &[]).await;
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let conn = db(&ws.db());
    let attempts = count(&conn, "SELECT count(*) FROM attempts");
    assert!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE last_error LIKE 'AccountClosed%'"
        ) == 1
    );

    let again = resume(&ws, "latest", &[]).await;
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts"),
        attempts,
        "nothing to redo without --retry-permanent"
    );

    let retried = resume(&ws, "latest", &["--retry-permanent"]).await;
    assert_eq!(retried.status.code(), Some(1), "{}", stderr(&retried));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts"),
        attempts + 1,
        "the closed account was tried again (its cancel-all), the others were not"
    );
    assert_eq!(stdout_json(&retried)["run_id"], 1);
}
