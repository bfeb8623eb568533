//! The run's own record is right in every ending: a run refused before it had accounts can be
//! reported, a time-mode nonce mark from a clock that ran ahead does not poison the key, a key
//! variable holding something else is never stored whole, and a run that aborts on its
//! database prints its summary and reads `aborted`, with a row for every request that left and
//! none for a request that did not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gemini_sweep::sim::{NonceMode, SimServer};

use crate::common::*;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn text_args(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_on_its_listing_can_be_reported_and_says_why() {
    let server = start(sim_config(3)).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let url = server.base_url();
    let output = run_binary(
        &[
            "run",
            "--all-accounts",
            "--base-url",
            &url,
            "--db",
            &db,
            "--lock-dir",
            &lock_dir,
        ],
        &[("GEMINI_API_SECRET", "not-the-secret")],
    )
    .await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["status"], "refused");

    let report = run_binary(&["report", "--db", &db, "--format", "json"], &[]).await;
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    let doc: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let run = &doc["run"];
    assert_eq!(run["status"], "refused");
    assert_eq!(run["accounts"], 0);
    assert_eq!(
        run["clean"],
        serde_json::Value::Null,
        "nothing is known flat"
    );
    let reason = run["stop_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the exchange refused the key (InvalidSignature")
            && reason.ends_with(" while listing the group's accounts"),
        "{reason}"
    );
    assert_eq!(summary["stop_reason"].as_str(), Some(reason));

    let table = run_binary(&["report", "--db", &db], &[]).await;
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    assert!(String::from_utf8_lossy(&table.stdout).contains("while listing the group's accounts"));
    for format in ["table", "json", "csv"] {
        let runs = run_binary(&["runs", "--db", &db, "--format", format], &[]).await;
        assert_eq!(runs.status.code(), Some(0), "{format}: {}", stderr(&runs));
        assert!(
            String::from_utf8_lossy(&runs.stdout).contains("refused"),
            "{format}"
        );
    }
    let html = ws.path("report.html").display().to_string();
    let page = run_binary(
        &["report", "--db", &db, "--format", "html", "--out", &html],
        &[],
    )
    .await;
    assert_eq!(page.status.code(), Some(0), "{}", stderr(&page));
}

/// A database whose mark for the test key is `ahead` of the clock, made by one run and moved.
async fn database_with_mark_ahead(
    server: &SimServer,
    mode: &str,
    ahead: Duration,
) -> (Workspace, Vec<String>, u64) {
    let (ws, mut args) = sweep_setup(server);
    args.extend(["--rate", "1000", "--nonce-mode", mode].map(String::from));
    let first = run_binary(&text_args(&args), &[]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let mark = now_us() + ahead.as_micros() as u64;
    let conn = db(&ws.db());
    let changed = conn
        .execute(
            "UPDATE nonce_high_water SET high_water_us = ?1",
            [mark as i64],
        )
        .unwrap();
    assert_eq!(changed, 1);
    (ws, args, mark)
}

/// The nonces (in microseconds) the run sent, as the attempts table records them.
fn nonces_us(ws: &Workspace, run_id: i64) -> Vec<u64> {
    let conn = db(&ws.db());
    let mut stmt = conn
        .prepare("SELECT nonce FROM attempts WHERE run_id = ?1")
        .unwrap();
    stmt.query_map([run_id], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|n| {
            let n = n.unwrap();
            match n.split_once('.') {
                Some((secs, micros)) => {
                    secs.parse::<u64>().unwrap() * 1_000_000 + micros.parse::<u64>().unwrap()
                }
                None => n.parse::<u64>().unwrap() * 1000,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_mode_mark_beyond_the_window_does_not_make_the_key_unusable() {
    let mut config = sim_config(3);
    config.keys[0].nonce_mode = NonceMode::Time;
    let server = start(config).await;
    let ten_minutes = Duration::from_secs(600);
    let (ws, args, mark) = database_with_mark_ahead(&server, "time", ten_minutes).await;
    let before = now_us();
    let output = run_binary(&text_args(&args), &[]).await;
    let after = now_us();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        err.contains("ahead of this machine's clock")
            && err.contains("nonces start from the clock"),
        "what was found is said:\n{err}"
    );
    let nonces = nonces_us(&ws, stdout_json(&output)["run_id"].as_i64().unwrap());
    assert!(!nonces.is_empty());
    for n in nonces {
        assert!(
            n >= before && n <= after,
            "nonce {n} is on the clock ({before}..{after}), not above the mark {mark}"
        );
    }
    assert_eq!(server.ledger().counters.nonce_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increasing_mode_mark_ahead_of_the_clock_is_still_continued_from() {
    let server = start(sim_config(3)).await;
    let (ws, args, mark) =
        database_with_mark_ahead(&server, "increasing", Duration::from_secs(600)).await;
    let output = run_binary(&text_args(&args), &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(!err.contains("ahead of this machine's clock"), "{err}");
    let nonces = nonces_us(&ws, stdout_json(&output)["run_id"].as_i64().unwrap());
    assert!(!nonces.is_empty());
    for n in nonces {
        assert!(n > mark, "nonce {n} continues above the mark {mark}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_no_known_form_is_stored_and_logged_only_as_a_hash() {
    // The secret pasted into the key variable: no `master-`/`account-` prefix, no dash at all.
    const PASTED: &str = "Zq8Kx1PastedSecretValue";
    let server = start(sim_config(1)).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    let args = run_args(&server.base_url(), &csv, &ws.db());
    let output = run_binary(&text_args(&args), &[("GEMINI_API_KEY", PASTED)]).await;
    let err = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(4),
        "the exchange refuses it: {err}"
    );
    assert!(!err.contains(PASTED), "{err}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(PASTED));

    let conn = db(&ws.db());
    let fingerprints: Vec<String> = [
        "SELECT key_fingerprint FROM runs",
        "SELECT key_fingerprint FROM nonce_high_water",
        "SELECT key_fingerprint FROM attempts",
    ]
    .iter()
    .map(|q| conn.query_row(q, [], |r| r.get(0)).unwrap())
    .collect();
    for fp in &fingerprints {
        assert!(
            fp.starts_with("key:") && fp.len() == "key:".len() + 16,
            "{fp}"
        );
        assert_eq!(fp, &fingerprints[0]);
    }
    drop(conn);
    for entry in std::fs::read_dir(ws.dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(PASTED), "file name {name}");
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(PASTED.len()).any(|w| w == PASTED.as_bytes()),
                "{name} holds the key"
            );
        }
    }
}
