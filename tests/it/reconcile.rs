//! Reconciliation: snapshot before, verify after, and every order accounted for, against the
//! simulator's ledger.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use gemini_sim::{FaultConfig, SimConfig};

/// (open_before, cancelled, rejected, open_after, unexplained, late, clean) per account.
type Recon = BTreeMap<String, (i64, i64, i64, i64, i64, i64, Option<bool>)>;

fn reconciliation(conn: &rusqlite::Connection, run_id: i64) -> Recon {
    let mut stmt = conn
        .prepare(
            "SELECT account, open_before, cancelled, rejected, open_after, unexplained, late, clean
             FROM account_reconciliation WHERE run_id = ?1",
        )
        .unwrap();
    stmt.query_map([run_id], |r| {
        Ok((
            r.get(0)?,
            (
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get::<_, Option<i64>>(7)?.map(|c| c != 0),
            ),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

async fn sweep(
    config: SimConfig,
    extra: &[&str],
) -> (gemini_sim::SimServer, Workspace, std::process::Output) {
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    // These tests reconcile against the listing before the cancel-all: --snapshot takes it.
    args.extend(["--rate".into(), "2000".into(), "--snapshot".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = run_binary(&args, &[]).await;
    (server, ws, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_sweep_accounts_for_every_order() {
    let mut config = sim_config(30);
    config.orders_per_account = 0..=25;
    config.reject_fraction = 0.05;
    let (server, ws, output) = sweep(config, &[]).await;
    let conn = db(&ws.db());
    let recon = reconciliation(&conn, 1);
    let ledger = server.ledger();
    let mut dirty = 0;
    for (account, &(before, cancelled, rejected, after, unexplained, late, clean)) in &recon {
        let truth = &ledger.accounts[account];
        assert_eq!(before as usize, truth.initial_orders.len(), "{account}");
        assert_eq!(
            cancelled + after,
            before,
            "{account}: before = cancelled + still open"
        );
        assert_eq!(
            rejected, after,
            "{account}: what stayed open is what was rejected"
        );
        assert_eq!((unexplained, late), (0, 0), "{account}");
        assert_eq!(after as usize, truth.open.len(), "{account}");
        assert_eq!(clean, Some(after == 0), "{account}");
        dirty += (after > 0) as i32;
    }
    assert!(
        dirty > 0,
        "the book has rejects, so some accounts are not clean"
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let run_clean: Option<i64> = conn
        .query_row(
            "SELECT clean FROM run_reconciliation WHERE run_id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(run_clean, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_rejects_the_run_is_clean_and_exits_0() {
    let (server, ws, output) = sweep(sim_config(20), &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    assert_eq!(
        count(
            &conn,
            "SELECT clean FROM run_reconciliation WHERE run_id = 1"
        ),
        1
    );
    assert_eq!(
        count(&conn, "SELECT sum(open_before) FROM account_reconciliation") as usize,
        server
            .ledger()
            .accounts
            .values()
            .map(|a| a.initial_orders.len())
            .sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_filled_between_snapshot_and_cancel_are_unexplained_not_lost() {
    let mut config = sim_config(20);
    config.orders_per_account = 10..=20;
    config.fill_after_snapshot_fraction = 0.3;
    let (server, ws, output) = sweep(config, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    let recon = reconciliation(&conn, 1);
    let ledger = server.ledger();
    let filled: usize = ledger.accounts.values().map(|a| a.filled.len()).sum();
    assert!(filled > 0);
    for (account, &(before, cancelled, _, after, unexplained, late, clean)) in &recon {
        let truth = &ledger.accounts[account];
        assert_eq!(unexplained as usize, truth.filled.len(), "{account}");
        assert_eq!(before, cancelled + unexplained, "{account}");
        assert_eq!((after, late, clean), (0, 0, Some(true)), "{account}");
    }
    // The unexplained orders are exactly the filled ones.
    let mut stmt = conn
        .prepare("SELECT account, order_id FROM order_reconciliation WHERE outcome = 'unexplained'")
        .unwrap();
    let unexplained: OrderSet = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let truth: OrderSet = ledger
        .accounts
        .iter()
        .flat_map(|(a, l)| l.filled.iter().map(move |id| (a.clone(), *id)))
        .collect();
    assert_eq!(unexplained, truth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_after_the_snapshot_are_late_arrivals() {
    let mut config = sim_config(15);
    config.late_orders_after_snapshot = 2;
    let (server, ws, output) = sweep(config, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    for (account, (_, _, _, _, unexplained, late, clean)) in reconciliation(&conn, 1) {
        assert_eq!(
            late as usize,
            server.ledger().accounts[&account].late.len(),
            "{account}"
        );
        assert_eq!(late, 2, "{account}");
        assert_eq!((unexplained, clean), (0, Some(true)), "{account}");
    }
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM order_reconciliation WHERE outcome = 'late'"
        ),
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_the_cancel_shows_as_unexplained_and_the_account_still_clean() {
    let mut config = sim_config(30);
    config.orders_per_account = 5..=15;
    config.faults = FaultConfig {
        p_lost_reply: 0.3,
        ..FaultConfig::default()
    };
    let (server, ws, output) = sweep(config, &["--max-attempts", "10"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ledger = server.ledger();
    assert!(
        ledger
            .counters
            .faults
            .get("lost_reply")
            .copied()
            .unwrap_or(0)
            > 0
    );
    let conn = db(&ws.db());
    let (truth_cancelled, _) = ledger_truth(&server);
    let recorded: OrderSet = order_rows(&conn, "cancelled_orders", 1)
        .into_iter()
        .collect();
    let lost: OrderSet = truth_cancelled.difference(&recorded).cloned().collect();
    assert!(!lost.is_empty(), "some replies were lost after cancelling");
    assert!(recorded.is_subset(&truth_cancelled));
    let mut stmt = conn
        .prepare("SELECT account, order_id FROM order_reconciliation WHERE outcome = 'unexplained'")
        .unwrap();
    let unexplained: OrderSet = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        unexplained, lost,
        "what the lost replies cancelled is unexplained, not missing"
    );
    let mut stmt = conn
        .prepare("SELECT account, order_id FROM unreported_cancels WHERE run_id = 1")
        .unwrap();
    let from_history: OrderSet = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        from_history, lost,
        "the order history gives back what the lost replies cancelled"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM account_reconciliation WHERE clean = 1"
        ),
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_formats_agree_with_the_views() {
    let mut config = sim_config(12);
    config.reject_fraction = 0.1;
    config.orders_per_account = 5..=10;
    let (_server, ws, _) = sweep(config, &[]).await;
    let db_path = ws.db().display().to_string();
    let conn = db(&ws.db());

    let json = run_binary(&["report", "--db", &db_path, "--format", "json"], &[]).await;
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let recon = reconciliation(&conn, 1);
    let accounts = doc["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), recon.len());
    for a in accounts {
        let (before, cancelled, rejected, after, unexplained, late, clean) =
            recon[a["account"].as_str().unwrap()];
        assert_eq!(a["open_before"], before);
        assert_eq!(a["cancelled"], cancelled);
        assert_eq!(a["rejected"], rejected);
        assert_eq!(a["open_after"], after);
        assert_eq!(a["unexplained"], unexplained);
        assert_eq!(a["late"], late);
        assert_eq!(a["clean"].as_bool(), clean);
    }
    assert_eq!(
        doc["run"]["cancelled"],
        count(&conn, "SELECT count(*) FROM cancelled_orders")
    );
    assert_eq!(doc["run"]["clean"], false);

    let csv_out = run_binary(&["report", "--db", &db_path, "--format", "csv"], &[]).await;
    let mut reader = csv::Reader::from_reader(&csv_out.stdout[..]);
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "account");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), recon.len() + 1, "accounts plus the total row");
    let cancelled_col = headers.iter().position(|h| h == "cancelled").unwrap();
    let total: i64 = rows[..recon.len()]
        .iter()
        .map(|r| r[cancelled_col].parse::<i64>().unwrap())
        .sum();
    assert_eq!(
        rows.last().unwrap()[cancelled_col].parse::<i64>().unwrap(),
        total
    );

    let table = run_binary(&["report", "--db", &db_path], &[]).await;
    let text = String::from_utf8(table.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        recon.len() + 3,
        "title, header, accounts, total"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");

    let dirty = run_binary(
        &[
            "report", "--db", &db_path, "--only", "dirty", "--format", "json",
        ],
        &[],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&dirty.stdout).unwrap();
    assert_eq!(
        doc["accounts"].as_array().unwrap().len() as i64,
        count(
            &conn,
            "SELECT count(*) FROM account_reconciliation WHERE NOT clean"
        )
    );

    let runs = run_binary(&["runs", "--db", &db_path, "--format", "json"], &[]).await;
    let doc: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(doc[0]["run_id"], 1);
    assert_eq!(doc[0]["clean"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_that_look_like_formulas_are_neutralised() {
    let mut config = sim_config(0);
    config.accounts = SimConfig::numbered_accounts(1);
    config.accounts[0].name = "-cmd".into();
    let (_server, ws, output) = sweep(config, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let db_path = ws.db().display().to_string();
    let out = run_binary(&["report", "--db", &db_path, "--format", "csv"], &[]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("'-cmd,")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("-cmd")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_work_while_a_sweep_is_writing() {
    // 120 requests at 30/s: the engine's pace holds the run open for 4 s, however fast the
    // machine; reports are read over and over until the run has ended, not a fixed number of
    // times that a slow start could use up.
    let server = start(sim_config(40)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate".into(), "30".into()]);
    let db_path = ws.db().display().to_string();
    let sweeping = std::sync::atomic::AtomicBool::new(true);
    let sweep = async {
        let output = run_binary(&args, &[]).await;
        sweeping.store(false, std::sync::atomic::Ordering::SeqCst);
        output
    };
    let reports = async {
        let mut seen_running = false;
        while sweeping.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !ws.db().exists() {
                continue;
            }
            let out = run_binary(&["report", "--db", &db_path, "--format", "json"], &[]).await;
            if out.status.code() != Some(0) {
                // Before the first run row is committed there is nothing to report yet.
                assert!(stderr(&out).contains("no run"), "{}", stderr(&out));
                continue;
            }
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if doc["run"]["status"] == "running" {
                seen_running = true;
                assert!(
                    doc["run"]["clean"].is_null(),
                    "a running run is not judged yet"
                );
            }
        }
        seen_running
    };
    let (output, seen_running) = tokio::join!(sweep, reports);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(seen_running, "a report was read while the run was writing");
}
