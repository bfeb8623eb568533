//! What a cancel-all whose reply was lost cancelled: the run reads the account's order history
//! after proving it flat, and the database then holds every id the exchange cancelled, those of
//! the lost reply in `unreported_cancels` (never in `cancelled_orders`, which only replies fill).

use std::collections::BTreeSet;

use crate::common::*;

/// (account, order_id) of the view, with the attempt it names as the one that may have cancelled.
fn unreported(conn: &rusqlite::Connection) -> BTreeSet<(String, u64, i64)> {
    let mut stmt = conn
        .prepare("SELECT account, order_id, lost_attempt_id FROM unreported_cancels")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// kill -9 after the exchange cancelled but before its reply arrived, then `--resume`: the
/// resumed run reads the history, and reply ids plus history ids equal the exchange's ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_a_reply_lost_to_kill_9_are_read_back_from_the_history() {
    let mut config = sim_config(4);
    config.orders_per_account = 5..=20;
    let server = start(config).await;
    server.hold_replies(true);
    let (ws, mut args) = sweep_setup(&server);
    args.retain(|a| a != "--timeout" && a != "2");
    args.extend(["--timeout", "60", "--rate", "1000"].map(String::from));
    let child = Bin::new().args(&args).spawn();
    // One request is in flight until the key's first reply: the exchange has acted on it.
    wait_until("a cancel-all acted on", || {
        server
            .ledger()
            .accounts
            .values()
            .any(|a| !a.cancelled.is_empty())
    })
    .await;
    child.signal("-KILL");
    let _ = child.finish().await;
    let (cancelled_by_lost, _) = ledger_truth(&server);
    assert!(!cancelled_by_lost.is_empty());

    server.hold_replies(false);
    let output = resume(
        &ws,
        "latest",
        &["--base-url", &server.base_url(), "--rate", "1000"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout_json(&output)["unreported_cancels"],
        cancelled_by_lost.len(),
        "{}",
        stderr(&output)
    );

    let conn = db(&ws.db());
    let lost_attempt: i64 = conn
        .query_row(
            "SELECT attempt_id FROM attempts WHERE outcome = 'abandoned'",
            [],
            |r| r.get(0),
        )
        .expect("exactly one abandoned attempt: the cancel-all in flight at the kill");
    let from_history = unreported(&conn);
    assert_eq!(
        from_history
            .iter()
            .map(|(a, id, _)| (a.clone(), *id))
            .collect::<OrderSet>(),
        cancelled_by_lost,
        "the history gives back exactly what the lost reply would have reported"
    );
    assert!(from_history.iter().all(|(_, _, by)| *by == lost_attempt));

    let replied: OrderSet = order_rows(&conn, "cancelled_orders", 1)
        .into_iter()
        .collect();
    assert!(
        replied.is_disjoint(&cancelled_by_lost),
        "no reply reported them"
    );
    let all: OrderSet = replied.union(&cancelled_by_lost).cloned().collect();
    assert_eq!(
        all,
        ledger_truth(&server).0,
        "the database equals the ledger"
    );
    let db_path = ws.db().display().to_string();
    let table = run_binary(&["report", "--db", &db_path], &[]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(&format!(
            "{} cancelled per the order history, in no reply",
            cancelled_by_lost.len()
        )),
        "{table}"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE phase = 'recover' AND outcome = 'ok'"
        ),
        1,
        "one history page, for the one account whose reply was lost"
    );
}

/// Without a lost reply, no history is read and the summary has no such field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_replies_all_arrived_reads_no_history() {
    let server = start(sim_config(3)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout_json(&output).get("unreported_cancels").is_none());
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE phase = 'recover'"
        ),
        0
    );
}
