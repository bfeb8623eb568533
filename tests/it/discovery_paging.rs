//! Discovery that cannot miss accounts: `/v1/account/list` under each reading of `timestamp`
//! (on or before, newest first, as documented; on or after, oldest first), under an exchange
//! that ignores it, and nicknames from the exchange treated as input.

use std::process::Output;

use crate::common::*;
use crate::raw_exchange::{RawExchange, Reply};
use gemini_sim::{AccountListPaging, AccountSpec, SimConfig, SimServer};

const READINGS: [AccountListPaging; 2] =
    [AccountListPaging::OnOrBefore, AccountListPaging::OnOrAfter];

/// `count` open exchange accounts with an order or two each, listed as `paging` says.
fn group(count: usize, paging: AccountListPaging) -> SimConfig {
    let mut config = sim_config(count);
    config.orders_per_account = 1..=2;
    config.account_list_paging = paging;
    config
}

async fn all_accounts(server: &SimServer, ws: &Workspace) -> Output {
    let db = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let url = server.base_url();
    run_binary(
        &[
            "run",
            "--all-accounts",
            "--base-url",
            &url,
            "--db",
            &db,
            "--lock-dir",
            &lock_dir,
            "--rate",
            "2000",
            "--concurrency",
            "8",
        ],
        &[],
    )
    .await
}

async fn accounts(url: &str, ws: &Workspace, extra: &[&str]) -> Output {
    let db = ws.db().display().to_string();
    let mut args = vec!["accounts", "--base-url", url, "--db", &db, "--rate", "1000"];
    args.extend_from_slice(extra);
    run_binary(&args, &[]).await
}

/// Accounts of the sim that still hold open orders, and accounts that were never sent anything.
fn left_open(server: &SimServer) -> Vec<String> {
    server
        .ledger()
        .accounts
        .into_iter()
        .filter(|(_, a)| !a.open.is_empty())
        .map(|(name, _)| name)
        .collect()
}

fn db_conn(ws: &Workspace) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.db()).unwrap()
}

fn one_text(conn: &rusqlite::Connection, sql: &str) -> Option<String> {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1200_account_group_is_listed_and_swept_whole_under_either_reading_of_timestamp() {
    for paging in READINGS {
        let server = start(group(1200, paging)).await;
        let ws = Workspace::new();

        let listed = accounts(&server.base_url(), &ws, &["--format", "json"]).await;
        assert_eq!(
            listed.status.code(),
            Some(0),
            "{paging:?}: {}",
            stderr(&listed)
        );
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1200, "{paging:?}: listed");

        let output = all_accounts(&server, &ws).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{paging:?}: {}",
            stderr(&output)
        );
        let summary = stdout_json(&output);
        assert_eq!(summary["status"], "completed", "{paging:?}: {summary}");
        assert_eq!(summary["accounts_total"], 1200, "{paging:?}: {summary}");
        assert_eq!(summary["accounts_ok"], 1200, "{paging:?}: {summary}");
        assert_eq!(left_open(&server), Vec::<String>::new(), "{paging:?}");
        let ledger = server.ledger();
        assert!(
            ledger.accounts.values().all(|a| a.requests > 0),
            "{paging:?}: every account was swept"
        );
        let conn = db_conn(&ws);
        assert_eq!(
            one_text(&conn, "SELECT listing FROM runs WHERE run_id = 1").as_deref(),
            Some("complete"),
            "{paging:?}"
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM run_accounts WHERE run_id = 1 AND status = 'swept'"
            ),
            1200,
            "{paging:?}"
        );
        eprintln!(
            "{paging:?}: 1200 accounts, listed {}, swept {}, exit {:?}",
            summary["accounts_total"],
            summary["accounts_ok"],
            output.status.code()
        );
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_ignores_timestamp_never_passes_for_a_whole_group() {
    let server = start(group(1200, AccountListPaging::IgnoresTimestamp)).await;
    let ws = Workspace::new();

    // `accounts`: no list that would pass for the group, printed or written.
    let csv = ws.path("group.csv");
    let csv_arg = csv.display().to_string();
    let listed = accounts(&server.base_url(), &ws, &["--csv", &csv_arg]).await;
    assert_eq!(listed.status.code(), Some(1), "{}", stderr(&listed));
    assert!(
        listed.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    assert!(!csv.exists(), "a partial CSV was written");
    let err = stderr(&listed);
    assert!(
        err.contains("may be incomplete") && err.contains("500 accounts listed"),
        "{err}"
    );

    // `run --all-accounts`: the listed accounts are swept, and the run is not clean.
    let output = all_accounts(&server, &ws).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "incomplete", "{summary}");
    assert_eq!(summary["accounts_total"], 500, "{summary}");
    assert_eq!(summary["accounts_ok"], 500, "{summary}");
    assert_eq!(
        left_open(&server).len(),
        700,
        "the 700 it never listed keep their orders"
    );
    let conn = db_conn(&ws);
    assert_eq!(
        one_text(&conn, "SELECT listing FROM runs WHERE run_id = 1").as_deref(),
        Some("possibly_incomplete")
    );
    let note = one_text(&conn, "SELECT listing_note FROM runs WHERE run_id = 1").unwrap();
    assert!(note.contains("may be incomplete"), "{note}");
    let reason = one_text(&conn, "SELECT stop_reason FROM runs WHERE run_id = 1").unwrap();
    assert!(reason.contains("may be incomplete"), "{reason}");
    eprintln!(
        "IgnoresTimestamp: 1200 accounts, listed {}, swept {}, exit {:?}",
        summary["accounts_total"],
        summary["accounts_ok"],
        output.status.code()
    );

    // A resume that finishes every listed account still cannot call the group clean.
    let again = resume(&ws, "latest", &[]).await;
    assert_ne!(again.status.code(), Some(0), "{}", stderr(&again));
    server.shutdown().await;
}

/// A page of `n` open exchange accounts `prefix-i`, created at `created(i)`.
fn page(prefix: &str, n: usize, created: impl Fn(usize) -> u64) -> String {
    let accounts: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("{prefix} {i}"),
                "account": format!("{prefix}-{i}"),
                "type": "exchange",
                "status": "open",
                "created": created(i),
            })
        })
        .collect();
    serde_json::Value::Array(accounts).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_fit_neither_reading_leave_the_listing_possibly_incomplete() {
    // The first page, in no order; the next, asked on or before its oldest account, lists
    // accounts created after it; then a short page.
    let exchange = RawExchange::start(|_, n| match n {
        0 => Reply::json(
            200,
            page("a", 500, |i| 1_600_000_000_000 + ((i * 7) % 500) as u64),
        ),
        1 => Reply::json(200, page("b", 500, |i| 1_700_000_000_000 + i as u64)),
        _ => Reply::json(200, page("c", 3, |i| 1_500_000_000_000 + i as u64)),
    })
    .await;
    let ws = Workspace::new();
    let listed = accounts(&exchange.url, &ws, &[]).await;
    assert_eq!(listed.status.code(), Some(1), "{}", stderr(&listed));
    let err = stderr(&listed);
    assert!(err.contains("fit neither reading"), "{err}");
    assert!(listed.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_exits_4_when_the_exchange_refuses_the_key() {
    let server = start(sim_config(3)).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let url = server.base_url();
    let output = run_binary(
        &["accounts", "--base-url", &url, "--db", &db],
        &[("GEMINI_API_SECRET", "not-the-secret")],
    )
    .await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));
    // One request, refused; nothing retried.
    assert_eq!(server.ledger().counters.requests, 1);
}

/// Nicknames no account may have, as an exchange could list them.
fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("nul", "desk\0one".into()),
        ("10 kB", "a".repeat(10 * 1024)),
        ("script", "<script>alert(1)</script>".into()),
        ("newline", "desk\nFAKE LOG LINE: all clean".into()),
        ("escape", "\x1b[2J\x1b]0;owned\x07".into()),
        ("bidi", "desk\u{202e}lcs.exe".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_nicknames_that_break_the_rule_are_skipped_with_the_reason_and_never_sent() {
    let mut config = group(20, AccountListPaging::OnOrBefore);
    for (_, name) in hostile() {
        config.accounts.push(AccountSpec {
            name,
            ..config.accounts[0].clone()
        });
    }
    let server = start(config).await;
    let ws = Workspace::new();

    let output = all_accounts(&server, &ws).await;
    let err = stderr(&output);
    assert!(!err.contains("UNIQUE constraint"), "{err}");
    // Every other account swept; the run cannot vouch for accounts it could not address.
    assert_eq!(output.status.code(), Some(1), "{err}");
    let summary = stdout_json(&output);
    assert_eq!(summary["accounts_total"], 27, "{summary}");
    assert_eq!(summary["accounts_ok"], 20, "{summary}");
    let ledger = server.ledger();
    for (what, name) in hostile() {
        assert_eq!(ledger.accounts[&name].requests, 0, "{what} was sent");
        assert!(!ledger.accounts[&name].open.is_empty(), "{what}");
    }
    let mut still_open = left_open(&server);
    still_open.sort();
    let mut expected: Vec<String> = hostile().into_iter().map(|(_, n)| n).collect();
    expected.sort();
    assert_eq!(still_open, expected, "every valid account swept");

    let conn = db_conn(&ws);
    let skipped: Vec<(String, String)> = conn
        .prepare("SELECT account, note FROM run_accounts WHERE run_id = 1 AND status = 'skipped'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(skipped.len(), 7, "{skipped:?}");
    for (account, note) in &skipped {
        assert!(
            account.starts_with('"') && account.len() <= 140,
            "kept escaped and bounded: {account}"
        );
        assert!(
            account.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "printable ASCII only: {account:?}"
        );
        assert!(note.starts_with("invalid nickname, never sent: "), "{note}");
    }
    let notes: Vec<&str> = skipped.iter().map(|(_, n)| n.as_str()).collect();
    for expected in [
        "it is empty",
        "10240 bytes long",
        "'\\u{0}'",
        "'<'",
        "'\\n'",
        "'\\u{1b}'",
        "'\\u{202e}'",
    ] {
        assert!(
            notes.iter().any(|n| n.contains(expected)),
            "{expected} in {notes:?}"
        );
    }
    assert!(
        skipped
            .iter()
            .any(|(a, _)| a == r#""\u{0}""# || a.contains("desk\\u{0}one")),
        "{skipped:?}"
    );
    // Only the group's own listing requests name no account; every other row names a valid one.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE account = '' AND phase <> 'discover'"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE phase <> 'discover'
             AND account NOT IN (SELECT account FROM run_accounts WHERE status = 'swept')"
        ),
        0
    );
    let note = one_text(&conn, "SELECT listing_note FROM runs WHERE run_id = 1").unwrap();
    assert!(note.contains("7 open exchange accounts"), "{note}");
    assert_eq!(
        one_text(&conn, "SELECT listing FROM runs WHERE run_id = 1").as_deref(),
        Some("complete")
    );

    // `accounts` shows them escaped, and writes a CSV without them that a run accepts.
    let csv = ws.path("group.csv");
    let csv_arg = csv.display().to_string();
    let listed = accounts(
        &server.base_url(),
        &ws,
        &["--format", "json", "--csv", &csv_arg],
    )
    .await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert!(
        stderr(&listed).contains("7 accounts whose nickname breaks"),
        "{}",
        stderr(&listed)
    );
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 27);
    let refused: Vec<_> = rows.iter().filter(|r| r["sweep"] == false).collect();
    assert_eq!(refused.len(), 7);
    for r in refused {
        let account = r["account"].as_str().unwrap();
        assert!(account.starts_with('"') && account.is_ascii(), "{r}");
        assert!(
            !account.contains('\n') && !account.contains('\u{1b}'),
            "{r}"
        );
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 21, "{text}");
    let db2 = ws.path("second.db");
    let mut args = run_args(&server.base_url(), &csv, &db2);
    args.extend(["--rate".into(), "2000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let rerun = run_binary(&args, &[]).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_repeats_its_first_page_at_either_end_is_not_a_one_page_group() {
    // A full first page, oldest first; asked on or after its newest account, the same page
    // again; asked on or before its oldest, just that account. Exactly 500 accounts, or an
    // exchange that never pages past its first 500: nothing tells them apart.
    let exchange = RawExchange::start(|_, n| match n {
        0 | 1 => Reply::json(200, page("a", 500, |i| 1_600_000_000_000 + i as u64)),
        _ => Reply::json(200, page("a", 1, |i| 1_600_000_000_000 + i as u64)),
    })
    .await;
    let ws = Workspace::new();
    let listed = accounts(&exchange.url, &ws, &[]).await;
    assert_eq!(listed.status.code(), Some(1), "{}", stderr(&listed));
    assert!(
        stderr(&listed).contains("may not page by `timestamp`"),
        "{}",
        stderr(&listed)
    );
    assert!(listed.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_page_of_accounts_created_in_one_millisecond_leaves_the_listing_in_doubt() {
    // Newest first; 1,000 accounts share one creation time, so asking on or before it can only
    // ever return the same 500 once the second page is in.
    let same = 1_650_000_000_000;
    let exchange = RawExchange::start(move |_, n| match n {
        0 => Reply::json(200, page("a", 500, |_| same)),
        1 => Reply::json(200, page("b", 500, |_| same)),
        _ => Reply::json(200, page("b", 500, |_| same)),
    })
    .await;
    let ws = Workspace::new();
    let listed = accounts(&exchange.url, &ws, &[]).await;
    assert_eq!(listed.status.code(), Some(1), "{}", stderr(&listed));
    let err = stderr(&listed);
    assert!(
        err.contains("1000 accounts listed") && err.contains("share a creation time"),
        "{err}"
    );
}
