//! `--hold` (issue 26) through the real binary: a strategy that quotes again after its account's
//! cancel-all is caught by the hold, the hold ends on its own when its time is up, a signal ends
//! it early, and without `--hold` nothing changes.

use std::collections::BTreeSet;

use crate::common::*;
use gemini_sim::{FaultConfig, Requote, RequoteWhen, SimConfig, SimServer};

/// Accounts acct-0001..=4; on `strategies`, a strategy places two new orders right after the
/// first listing that follows a cancel-all (the sweep's proof), once. Tied to the sweeper's own
/// requests, not to the clock: the orders exist before the hold begins.
async fn quoting_again(strategies: &[&str]) -> SimServer {
    start(quoting_again_config(strategies)).await
}

fn quoting_again_config(strategies: &[&str]) -> SimConfig {
    let mut config: SimConfig = sim_config(4);
    config.orders_per_account = 2..=4;
    config.requote = Some(Requote {
        accounts: strategies.iter().map(|s| s.to_string()).collect(),
        orders: 2,
        when: RequoteWhen::AfterListings(1),
        rounds: Some(1),
    });
    config
}

/// The rows `sql` reads from the database the run writes, or none while it is not there yet.
fn rows<T: Ord>(
    path: &std::path::Path,
    sql: &str,
    row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
) -> BTreeSet<T> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let Ok(conn) = rusqlite::Connection::open_with_flags(path, flags) else {
        return BTreeSet::new();
    };
    conn.prepare(sql)
        .and_then(|mut stmt| stmt.query_map([], row)?.collect())
        .unwrap_or_default()
}

/// Accounts the hold cancelled again and then listed flat.
fn recancelled_and_flat(path: &std::path::Path) -> BTreeSet<String> {
    let sql = "SELECT DISTINCT c.account FROM attempts c JOIN attempts l
               ON l.account = c.account AND l.attempt_id > c.attempt_id
               WHERE c.phase = 'hold' AND c.endpoint = '/v1/order/cancel/all' AND c.outcome = 'ok'
                 AND l.phase = 'hold' AND l.endpoint = '/v1/orders' AND l.outcome = 'ok'
                 AND l.items = 0";
    rows(path, sql, |r| r.get(0))
}

/// The orders a strategy placed after the sweep's proof are cancelled by the hold, ahead of its
/// listings, and SIGTERM ends the hold: the run is flat, and says what the hold did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_that_quotes_again_is_caught_by_the_hold_and_sigterm_ends_it() {
    let server = quoting_again(&["acct-0002", "acct-0003"]).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "20", "--hold", "10m", "--grace", "5"].map(String::from));
    let child = Bin::new().args(&args).spawn();
    let both: BTreeSet<String> = ["acct-0002", "acct-0003"].map(String::from).into();
    wait_until(
        "the hold to cancel both strategies' orders and list them flat",
        || recancelled_and_flat(&ws.db()) == both,
    )
    .await;
    child.signal("-TERM");
    let output = child.finish().await;
    let err = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "flat when the hold ended: {err}"
    );
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["hold_recancels"], 2, "{summary}");
    assert_eq!(
        summary["hold_recancelled_accounts"],
        serde_json::json!(["acct-0002", "acct-0003"])
    );
    assert!(summary["last_order_seen_at"].is_string(), "{summary}");
    let reason = summary["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("SIGTERM"), "{summary}");
    // Nothing is open on the exchange, and the database holds exactly what it cancelled.
    let ledger = server.ledger();
    assert!(
        ledger.accounts.values().all(|a| a.open.is_empty()),
        "{ledger:?}"
    );
    let (cancelled, _) = ledger_truth(&server);
    let run_id = summary["run_id"].as_i64().unwrap();
    let recorded: BTreeSet<_> = order_rows(&db(&ws.db()), "cancelled_orders", run_id)
        .into_iter()
        .collect();
    assert_eq!(recorded, cancelled);
    assert_eq!(ledger.accounts["acct-0002"].late.len(), 2);
}

/// A hold ends by itself when its time is up, and exits 0 with the group flat; a run without
/// --hold reports nothing of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_ends_on_its_own_and_without_one_nothing_changes() {
    let server = start(sim_config(3)).await;
    let (ws, args) = sweep_setup(&server);
    let plain = run_binary(&args, &[]).await;
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let summary = stdout_json(&plain);
    for field in [
        "hold_ms",
        "hold_cycles",
        "hold_recancels",
        "last_order_seen_at",
    ] {
        assert!(
            summary.get(field).is_none(),
            "{field} without --hold: {summary}"
        );
    }
    let mut held = args.clone();
    held.extend(["--hold", "1s", "--rate", "50"].map(String::from));
    let output = run_binary(&held, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert!(summary["hold_ms"].as_i64().unwrap() >= 1000, "{summary}");
    assert_eq!(summary["hold_recancels"], 0, "{summary}");
    assert!(summary["last_order_seen_at"].is_null(), "{summary}");
    assert!(summary["stop_reason"].is_null(), "{summary}");
    drop(ws);
}

/// A hold needs the listings --no-verify turns off; the dry run says how long an order can stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_without_listings_is_refused_and_the_plan_gives_its_worst_case() {
    let server = start(sim_config(20)).await;
    let (_ws, args) = sweep_setup(&server);
    let mut refused = args.clone();
    refused.extend(["--hold", "5m", "--no-verify"].map(String::from));
    let output = run_binary(&refused, &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--hold"), "{}", stderr(&output));
    let mut plan = args.clone();
    plan.extend(["--hold", "15m", "--rate", "10", "--dry-run"].map(String::from));
    let output = run_binary(&plan, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = stdout_json(&output);
    assert_eq!(json["hold_s"], 900.0);
    assert_eq!(json["hold_cycle_s"], 2.0, "20 accounts at 10/s");
    assert!(
        stderr(&output).contains("at most about 2.0 s"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.ledger().counters.requests, 0, "nothing sent");
}

/// Cancelled ids the database holds for the run: those replies reported, and those the order
/// history gave back for replies that were lost.
fn recorded_and_recovered(path: &std::path::Path) -> OrderSet {
    let sql = "SELECT account, order_id FROM cancelled_orders
               UNION SELECT account, order_id FROM unreported_cancels";
    rows(path, sql, |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
}

/// A re-cancel of the hold that acted but lost its reply (the exchange's faults are seeded, so the
/// same requests lose theirs every run): the account's order history is read once the account is
/// listed again, and the database equals the exchange's ledger while the hold goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_cancel_whose_reply_is_lost_is_read_back_from_the_history() {
    let mut config = quoting_again_config(&["acct-0002", "acct-0003"]);
    // Under this seed the exchange loses the replies of two of the hold's re-cancels, after
    // acting on them (seeds 1, 3 and 8 lose none; the test checks that some were lost).
    config.seed = 2;
    config.faults = FaultConfig {
        p_lost_reply: 0.4,
        ..FaultConfig::default()
    };
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(
        [
            "--rate",
            "20",
            "--hold",
            "10m",
            "--grace",
            "5",
            "--max-attempts",
            "10",
        ]
        .map(String::from),
    );
    let child = Bin::new().args(&args).spawn();
    let both: BTreeSet<String> = ["acct-0002", "acct-0003"].map(String::from).into();
    wait_until(
        "the hold to cancel both strategies' orders, list them flat and read back what it lost",
        || {
            recancelled_and_flat(&ws.db()) == both
                && recorded_and_recovered(&ws.db()) == ledger_truth(&server).0
        },
    )
    .await;
    child.signal("-TERM");
    let output = child.finish().await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    let lost_in_hold = count(
        &conn,
        "SELECT count(*) FROM attempts WHERE phase = 'hold'
           AND endpoint = '/v1/order/cancel/all' AND outcome = 'transient'",
    );
    assert!(lost_in_hold > 0, "a re-cancel of the hold lost its reply");
    let hold_ids = count(
        &conn,
        "SELECT count(*) FROM unreported_cancels u JOIN attempts a
           ON a.attempt_id = u.lost_attempt_id WHERE a.phase = 'hold'",
    );
    assert!(
        hold_ids > 0,
        "the history gave back what a lost re-cancel cancelled"
    );
    assert_eq!(recorded_and_recovered(&ws.db()), ledger_truth(&server).0);
    assert_eq!(
        stdout_json(&output)["unreported_cancels"],
        count(&conn, "SELECT count(*) FROM unreported_cancels"),
        "the summary counts them"
    );
}

/// Hold listings the run has made so far.
fn hold_listings(path: &std::path::Path) -> usize {
    let sql = "SELECT attempt_id FROM attempts WHERE phase = 'hold'
                 AND endpoint = '/v1/orders' AND outcome = 'ok'";
    rows(path, sql, |r| r.get::<_, i64>(0)).len()
}

/// kill -9 during the hold, then `--resume`: every account was swept and proven flat, so there is
/// nothing left to sweep, but the resume holds every account the run cancelled again, and an
/// order placed after the kill is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_kill_9_in_the_hold_holds_every_cancelled_account_again() {
    let server = start(sim_config(4)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "50", "--hold", "10m"].map(String::from));
    let child = Bin::new().args(&args).spawn();
    wait_until("the hold to list every account", || {
        hold_listings(&ws.db()) >= 4
    })
    .await;
    child.signal("-KILL");
    let _ = child.finish().await;
    let placed = server.place_order("acct-0001");

    let url = server.base_url();
    let output = resume(&ws, "latest", &["--base-url", &url, "--hold", "1s"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        server.ledger().accounts.values().all(|a| a.open.is_empty()),
        "the order placed after the kill was cancelled: {:?}",
        server.ledger()
    );
    let conn = db(&ws.db());
    let recorded = order_rows(&conn, "cancelled_orders", 1);
    assert!(recorded.contains(&("acct-0001".to_string(), placed)));
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT account) FROM attempts
             WHERE invocation_id = 2 AND phase = 'hold' AND endpoint = '/v1/orders'"
        ),
        4,
        "the resume held all four accounts"
    );
}
