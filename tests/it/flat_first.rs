//! Flat first, proof after: every account's cancel-all before the listings that prove them,
//! orders a proof still finds cancelled again, and the times the summary reports.

use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::raw_exchange::*;

/// Milliseconds from the run's start to the latest reply of the attempts `filter` selects,
/// read from the attempts table as an auditor would.
fn latest_reply_ms(conn: &rusqlite::Connection, filter: &str) -> i64 {
    count(
        conn,
        &format!(
            "SELECT CAST(round(max((julianday(t.sent_at) - julianday(r.started_at)) * 86400000.0
                                   + t.latency_ms)) AS INTEGER)
             FROM attempts t JOIN runs r ON r.run_id = t.run_id
             WHERE t.run_id = 1 AND {filter}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_is_cancelled_then_proven_and_the_summary_says_when() {
    let mut config = sim_config(12);
    config.reject_fraction = 0.0;
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["accounts_ok"], 12);

    let conn = db(&ws.db());
    // Each account: its cancel-all first, then the listing after it; no listing before. (A
    // request may be retried after a transient failure, a nonce race on a loaded machine, say:
    // only the answered ones are counted.)
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE run_id = 1 AND outcome NOT IN ('ok', 'transient')"
        ),
        0
    );
    let phases: Vec<(String, String)> = conn
        .prepare("SELECT account, group_concat(phase, ',') FROM (SELECT account, phase FROM attempts WHERE run_id = 1 AND outcome = 'ok' ORDER BY account, attempt_no) GROUP BY account")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(phases.len(), 12);
    for (account, phases) in &phases {
        assert_eq!(phases, "cancel,verify", "{account}");
    }

    let flat = summary["time_to_flat_ms"]
        .as_i64()
        .expect("every account cancelled");
    let proven = summary["time_to_proven_flat_ms"]
        .as_i64()
        .expect("every account proven flat");
    assert_eq!(
        flat,
        latest_reply_ms(&conn, "t.phase = 'cancel' AND t.outcome = 'ok'")
    );
    assert_eq!(
        proven,
        latest_reply_ms(&conn, "t.phase = 'verify' AND t.outcome = 'ok'")
    );
    assert!(0 < flat && flat <= proven, "{flat} {proven}");
    // The audit trail's own answer to "what was cancelled" is the exchange's.
    let (cancelled, _) = ledger_truth(&server);
    assert_eq!(
        order_rows(&conn, "cancelled_orders", 1).len(),
        cancelled.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_flat_is_null_while_an_account_was_never_cancelled() {
    let server = start(sim_config(3)).await;
    let ws = Workspace::new();
    let mut names = account_names(&server);
    names.push("acct-gone".into()); // not on the exchange: refused for good
    let csv = ws.accounts_csv(&names);
    let mut args = run_args(&server.base_url(), &csv, &ws.db());
    args.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["accounts_ok"], 3);
    assert!(summary["time_to_flat_ms"].is_null(), "{summary}");
    assert!(summary["time_to_proven_flat_ms"].is_null(), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_verification_nothing_is_proven_and_with_snapshot_the_listing_comes_first() {
    let server = start(sim_config(4)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000", "--no-verify"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert!(summary["time_to_flat_ms"].as_i64().is_some(), "{summary}");
    assert!(summary["time_to_proven_flat_ms"].is_null(), "{summary}");
    // One cancel-all each (more only as retries of a transient failure, or for a rejected order).
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT account) FROM attempts WHERE run_id = 1 AND phase = 'cancel' AND outcome = 'ok'"
        ),
        4
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE run_id = 1 AND phase <> 'cancel'"
        ),
        0,
        "nothing listed"
    );

    let server = start(sim_config(4)).await;
    let (ws2, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000", "--snapshot"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws2.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE run_id = 1 AND attempt_no = 1 AND phase = 'snapshot'"
        ),
        4,
        "each account listed before its cancel-all"
    );
    assert_eq!(
        count(&conn, "SELECT sum(open_before) FROM account_reconciliation"),
        count(&conn, "SELECT count(*) FROM open_orders_before"),
    );
    drop(ws);
}

/// An order placed while the sweep runs is found by the listing meant to prove the account flat:
/// it is cancelled (ahead of any listing) and listed again, and only then is the account clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_during_the_sweep_is_cancelled_before_the_account_is_called_flat() {
    let listings = Arc::new(Mutex::new(0));
    let cancels = Arc::new(Mutex::new(0));
    let exchange = {
        let (listings, cancels) = (listings.clone(), cancels.clone());
        RawExchange::start(move |seen: &Seen, _| {
            if is_listing(seen) {
                let mut n = listings.lock().unwrap();
                *n += 1;
                return match *n {
                    1 => Reply::json(
                        200,
                        r#"[{"order_id":"7000000002","symbol":"btcusd","side":"sell","price":"2","remaining_amount":"1"}]"#,
                    ),
                    _ => Reply::json(200, "[]"),
                };
            }
            let mut n = cancels.lock().unwrap();
            *n += 1;
            match *n {
                1 => Reply::json(
                    200,
                    r#"{"result":"ok","details":{"cancelledOrders":[7000000001],"cancelRejects":[]}}"#,
                ),
                _ => Reply::json(
                    200,
                    r#"{"result":"ok","details":{"cancelledOrders":[7000000002],"cancelRejects":[]}}"#,
                ),
            }
        })
        .await
    };
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    let args = run_args(&exchange.url, &csv, &ws.db());
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    let phases: Vec<String> = conn
        .prepare("SELECT phase FROM attempts ORDER BY attempt_no")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(phases, ["cancel", "verify", "cancel", "verify"]);
    assert_eq!(
        order_rows(&conn, "cancelled_orders", 1),
        [
            ("acct-0001".to_string(), 7000000001),
            ("acct-0001".to_string(), 7000000002)
        ]
    );
    let (status, clean): (String, i64) = conn
        .query_row(
            "SELECT status, clean FROM account_reconciliation WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), clean), ("swept", 1));
}
