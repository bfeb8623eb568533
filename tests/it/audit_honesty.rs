//! The audit trail never says more than it knows, and a resume never rewrites history or picks up
//! the wrong run. Each test drives the real binary against the simulator or a scripted exchange
//! and reads the database the way an auditor would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::raw_exchange::*;

fn invocations(conn: &rusqlite::Connection) -> i64 {
    count(conn, "SELECT count(*) FROM invocations")
}

/// `run … || run --resume latest`, the obvious cron line, when today's run fails validation: the
/// resume must not pick up yesterday's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_line_never_resumes_yesterdays_run() {
    let mut config = sim_config(4);
    config.faults.failing_accounts.insert("acct-0002".into());
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000", "--max-attempts", "2"].map(String::from));
    let yesterday = run_binary(&args, &[]).await;
    assert_eq!(yesterday.status.code(), Some(1), "{}", stderr(&yesterday));
    // The run was yesterday's.
    db(&ws.db())
        .execute_batch(
            "UPDATE runs SET started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-20 hours')",
        )
        .unwrap();
    let requests = server.ledger().counters.requests;

    let bin = BIN_PATH;
    let db_path = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let url = server.base_url();
    let cron_line = format!(
        "{bin} run --accounts {missing} --base-url {url} --db {db_path} --lock-dir {lock_dir} || {bin} run --resume latest --db {db_path} --lock-dir {lock_dir}",
        missing = ws.path("renamed-by-mistake.csv").display()
    );
    let output = Bin::shell(&cron_line).output().await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("renamed-by-mistake.csv"), "{err}");
    assert!(err.contains("older than --resume-within"), "{err}");
    assert!(
        err.contains("--resume 1"),
        "says how to resume it on purpose: {err}"
    );
    assert_eq!(
        server.ledger().counters.requests,
        requests,
        "nothing was sent"
    );
    assert_eq!(invocations(&db(&ws.db())), 1, "nothing was written");

    // Named on purpose, yesterday's run can still be resumed.
    let output = resume(&ws, "1", &["--rate", "1000", "--max-attempts", "2"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(invocations(&db(&ws.db())), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_finished_run_changes_nothing_and_says_so() {
    let server = start(sim_config(5)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let first = run_binary(&args, &[]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before: (String, String, Option<i64>, i64) = db(&ws.db())
        .query_row(
            "SELECT r.options, r.ended_at, x.clean, r.pid FROM runs r JOIN run_reconciliation x USING (run_id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let requests = server.ledger().counters.requests;

    // A resume with --no-verify used to turn the verified run's `clean` from 1 to NULL.
    let output = resume(&ws, "latest", &["--no-verify"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("nothing left to resume"),
        "{}",
        stderr(&output)
    );
    let summary = stdout_json(&output);
    assert_eq!(summary["nothing_to_resume"], true);
    assert_eq!(summary["status"], "completed");
    let conn = db(&ws.db());
    let after: (String, String, Option<i64>, i64) = conn
        .query_row(
            "SELECT r.options, r.ended_at, x.clean, r.pid FROM runs r JOIN run_reconciliation x USING (run_id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(after, before, "the run's record is untouched");
    assert_eq!(before.2, Some(1));
    assert_eq!(invocations(&conn), 1);
    assert_eq!(server.ledger().counters.requests, requests);
}

/// The issue's case: an account whose cancel-all left a reject, verified empty afterwards (the
/// reject filled); resumed, its cancel-all goes through but the listing after it fails. The old
/// listing is older than the new cancel-all: the account is not verified flat, and the run does
/// not say completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_older_than_the_last_cancel_all_proves_nothing() {
    let calls = Arc::new(Mutex::new((0, 0)));
    let script = {
        let calls = calls.clone();
        move |seen: &Seen, _| {
            let mut calls = calls.lock().unwrap();
            if is_listing(seen) {
                calls.0 += 1;
                return match calls.0 {
                    1 => Reply::json(
                        200,
                        r#"[{"order_id":"7000000001","symbol":"btcusd","side":"buy","price":"1","remaining_amount":"1"},{"order_id":"7000000002","symbol":"btcusd","side":"buy","price":"1","remaining_amount":"1"}]"#,
                    ),
                    2 => Reply::json(200, "[]"),
                    _ => Reply::json(
                        500,
                        r#"{"result":"error","reason":"System","message":"down"}"#,
                    ),
                };
            }
            calls.1 += 1;
            match calls.1 {
                1 => Reply::json(
                    200,
                    r#"{"result":"ok","details":{"cancelledOrders":[7000000001],"cancelRejects":[7000000002]}}"#,
                ),
                2 => Reply::json(
                    200,
                    r#"{"result":"ok","details":{"cancelledOrders":[],"cancelRejects":[7000000002]}}"#,
                ),
                _ => Reply::empty_cancel_all(),
            }
        }
    };
    let exchange = RawExchange::start(script).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    // The script answers a listing before the cancel-all, as --snapshot sends it.
    let mut args = run_args(&exchange.url, &csv, &ws.db());
    args.push("--snapshot".into());
    let first = run_binary(&args, &[]).await;
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let summary = stdout_json(&first);
    assert_eq!(summary["accounts_rejects_left"], 1);
    assert_eq!(
        summary["accounts_ok"], 0,
        "an account with a reject is not ok"
    );

    // The resume picks the rejects_left account up (it used to be skipped) and retries it.
    let resumed = resume(&ws, "latest", &["--max-attempts", "2"]).await;
    assert_eq!(resumed.status.code(), Some(1), "{}", stderr(&resumed));
    let summary = stdout_json(&resumed);
    assert_eq!(summary["accounts_ok"], 0, "not flat: nothing verified it");
    assert_eq!(summary["accounts_unverified"], 1);
    assert_eq!(summary["status"], "incomplete");
    assert_eq!(calls.lock().unwrap().1, 3, "the resume sent a cancel-all");
    let conn = db(&ws.db());
    let (status, verified, clean): (String, i64, Option<i64>) = conn
        .query_row(
            "SELECT status, verified, clean FROM account_reconciliation",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), verified, clean), ("swept", 0, None));
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM invocations ORDER BY invocation_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kinds, ["start", "resume"], "one row per invocation");
}

/// Orders listed before a cancel-all that never went through, on an account never listed after
/// it, are unknown: not "unexplained", and not absent from "what may still be open".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_never_verified_reads_unverified_and_a_missing_listing_reads_unknown() {
    let exchange = RawExchange::start(|seen: &Seen, _| {
        let account = seen.account.as_deref().unwrap_or_default();
        if is_listing(seen) && account == "acct-0001" {
            return Reply::json(
                200,
                r#"[{"order_id":"7000000001"},{"order_id":"7000000002"},{"order_id":"7000000003"}]"#,
            );
        }
        Reply::json(500, r#"{"result":"error","reason":"System","message":"down"}"#)
    })
    .await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string(), "acct-0002".to_string()]);
    let mut args = run_args(&exchange.url, &csv, &ws.db());
    args.extend(["--max-attempts", "2", "--snapshot"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["orders_unverified"], 3);
    let conn = db(&ws.db());
    let outcomes: Vec<(String, i64)> = conn
        .prepare("SELECT outcome, count(*) FROM order_reconciliation GROUP BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes, [("unverified".to_string(), 3)]);
    // docs/audit-trail.md's query for what may still be open finds them.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM order_reconciliation WHERE run_id = (SELECT max(run_id) FROM runs) AND outcome IN ('still_open', 'unverified', 'rejected')"
        ),
        3
    );

    let db_path = ws.db().display().to_string();
    let report = run_binary(&["report", "--db", &db_path, "--format", "json"], &[]).await;
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let second = &doc["accounts"][1];
    assert_eq!(second["account"], "acct-0002");
    assert!(
        second["open_before"].is_null(),
        "its listing failed: unknown, not 0: {second}"
    );
    assert!(second["open_after"].is_null(), "{second}");
    assert!(second["clean"].is_null(), "{second}");
    assert_eq!(doc["run"]["accounts_without_snapshot"], 1);
    let table = run_binary(&["report", "--db", &db_path], &[]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.starts_with("acct-0002"))
        .expect("a row for acct-0002");
    assert_eq!(row.split_whitespace().nth(2), Some("-"), "{table}");
    assert!(
        table.contains("3+?"),
        "a total over a missing listing is a lower bound: {table}"
    );
}

/// kill -9 with a request in flight: its row is already there (nonce, send time), the run shows
/// `died` instead of running forever, and the next run marks the request abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_left_its_requests_recorded_and_reads_died() {
    let mut config = sim_config(5);
    config.faults.p_stall = 1.0;
    config.faults.stall_for = Duration::from_secs(60);
    let stalling = start(config).await;
    let (ws, mut args) = sweep_setup(&stalling);
    args.retain(|a| a != "--timeout" && a != "2");
    args.extend(["--timeout", "50"].map(String::from));
    let child = Bin::new().args(&args).spawn();
    wait_until("a request sent", || stalling.ledger().counters.requests > 0).await;
    child.signal("-KILL");
    let _ = child.finish().await;

    let conn = db(&ws.db());
    let (in_flight, nonce, sent_at): (i64, String, String) = conn
        .query_row(
            "SELECT count(*), max(nonce), max(sent_at) FROM attempts WHERE outcome = 'in_flight'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        in_flight, 1,
        "the request in flight was written before it left"
    );
    assert!(nonce.parse::<u64>().is_ok(), "{nonce}");
    assert!(sent_at.starts_with("20"), "{sent_at}");

    let db_path = ws.db().display().to_string();
    let runs = run_binary(&["runs", "--db", &db_path, "--format", "json"], &[]).await;
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "died", "{runs}");

    // The next run on the database takes the dead one over.
    let healthy = start(sim_config(5)).await;
    let output = resume(
        &ws,
        "latest",
        &["--base-url", &healthy.base_url(), "--rate", "1000"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("taking it over"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE outcome = 'in_flight'"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE outcome = 'abandoned' AND nonce = (SELECT max(nonce) FROM attempts WHERE invocation_id = 1)"
        ),
        1
    );
    let first_invocation: String = conn
        .query_row(
            "SELECT status FROM invocations WHERE invocation_id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(first_invocation, "died");
}
