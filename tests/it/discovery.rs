//! Discovering the group's accounts instead of typing them: `gemini-sweep accounts` and
//! `run --all-accounts`, against the simulator's `/v1/account/list` (500 per page).

use crate::common::*;
use gemini_sim::{AccountKind, AccountStatus, SimConfig};

/// 1,200 accounts, every 100th a custody account and every 150th closed.
fn big_group() -> SimConfig {
    let mut config = sim_config(1200);
    config.orders_per_account = 0..=1;
    for (i, a) in config.accounts.iter_mut().enumerate() {
        if (i + 1) % 100 == 0 {
            a.kind = AccountKind::Custody;
        } else if (i + 1) % 150 == 0 {
            a.status = AccountStatus::Closed;
        }
    }
    config
}

fn expected_to_sweep(config: &SimConfig) -> usize {
    config
        .accounts
        .iter()
        .filter(|a| a.kind == AccountKind::Exchange && a.status == AccountStatus::Open)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_pages_past_500_and_writes_a_csv_a_run_accepts() {
    let config = big_group();
    let to_sweep = expected_to_sweep(&config);
    let server = start(config).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let csv = ws.path("group.csv").display().to_string();
    let url = server.base_url();
    let output = run_binary(
        &[
            "accounts",
            "--base-url",
            &url,
            "--db",
            &db,
            "--csv",
            &csv,
            "--format",
            "json",
            "--rate",
            "1000",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1200, "every account, across pages");
    assert_eq!(
        listed.iter().filter(|a| a["sweep"] == true).count(),
        to_sweep
    );
    let custody = listed
        .iter()
        .find(|a| a["type"] == "custody")
        .expect("a custody account");
    assert_eq!(custody["sweep"], false);
    assert!(
        custody["note"].as_str().unwrap().contains("custody"),
        "{custody}"
    );
    // Three pages of at most 500, recorded like every other request.
    let conn = db_conn(&ws);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE phase = 'discover' AND run_id IS NULL AND outcome = 'ok'"
        ),
        3
    );

    // The CSV is what `run --accounts` reads: the listed accounts, custody and closed disabled.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("account,enabled,note,name,type,status\n"),
        "{text}"
    );
    let mut args = run_args(&url, std::path::Path::new(&csv), &ws.db());
    args.extend(["--rate", "2000", "--no-verify"].map(String::from));
    let run = run_binary(&args, &[]).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let summary = stdout_json(&run);
    assert_eq!(summary["accounts_ok"], to_sweep);
    assert_eq!(summary["accounts_skipped"], 1200 - to_sweep);
}

fn db_conn(ws: &Workspace) -> rusqlite::Connection {
    db(&ws.db())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_accounts_sweeps_the_open_exchange_accounts_but_the_excluded_ones() {
    let mut config = big_group();
    config.accounts.truncate(620);
    let to_sweep = expected_to_sweep(&config) - 3;
    let server = start(config).await;
    let ws = Workspace::new();
    let exclude_file = ws.write("exclude.txt", b"# paused\nacct-0003\n");
    let db = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let url = server.base_url();
    let exclude_file = exclude_file.display().to_string();
    let output = run_binary(
        &[
            "run",
            "--all-accounts",
            "--exclude",
            "acct-0001,acct-0002",
            "--exclude-file",
            &exclude_file,
            "--base-url",
            &url,
            "--db",
            &db,
            "--lock-dir",
            &lock_dir,
            "--rate",
            "2000",
            "--no-verify",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(
        summary["accounts_total"], 620,
        "the run holds the list it used"
    );
    assert_eq!(summary["accounts_ok"], to_sweep);

    let conn = db_conn(&ws);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts WHERE source = 'discovery'"
        ),
        620
    );
    let notes: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT account, status, note FROM run_accounts WHERE status = 'skipped' ORDER BY account LIMIT 5",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(notes[0].0, "acct-0001");
    assert_eq!(notes[0].2, "excluded (--exclude)");
    assert_eq!(notes[2].0, "acct-0003");
    assert!(notes[3].2.contains("custody"), "{notes:?}");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE phase = 'discover' AND run_id = 1"
        ),
        2,
        "620 accounts: two pages, recorded with the run"
    );
    // Excluded accounts were never sent a request.
    let ledger = server.ledger();
    for name in ["acct-0001", "acct-0002", "acct-0003"] {
        assert_eq!(ledger.accounts[name].requests, 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_key_cannot_discover_and_sends_nothing() {
    let server = start(sim_config(3)).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let url = server.base_url();
    let output = run_binary(
        &["run", "--all-accounts", "--base-url", &url, "--db", &db],
        &[("GEMINI_API_KEY", "account-desk")],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("master key"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.ledger().counters.requests, 0);
}
