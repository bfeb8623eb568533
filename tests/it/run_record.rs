//! The run's own record is right in every ending: a run refused before it had accounts can be
//! reported, a time-mode nonce mark from a clock that ran ahead does not poison the key, a key
//! variable holding something else is never stored whole, and a run that aborts on its
//! database prints its summary and reads `aborted`, with a row for every request that left and
//! none for a request that did not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gemini_sim::{NonceMode, SimServer};

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

/// Waits for `condition`, checking often, within the suite's bound.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_aborted_by_a_locked_database_prints_its_summary_and_reads_aborted() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};

    // Every account answers 500 at once and is retried: the run keeps writing, and cannot end
    // on its own within the test's bound (100 attempts each, with back-off).
    let mut config = sim_config(4);
    config.faults.failing_accounts = (1..=4).map(|i| format!("acct-{i:04}")).collect();
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    let timeout = args.iter().position(|a| a == "--timeout").unwrap();
    // Requests already recorded get all the time they need to come back: each one that was
    // recorded reaches the exchange, whatever the machine's load.
    args[timeout + 1] = "600".into();
    args.extend(
        [
            "--rate",
            "1000",
            "--concurrency",
            "4",
            "--max-attempts",
            "100",
            "--grace",
            "600",
        ]
        .map(String::from),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemini-sweep"))
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("GEMINI_API_KEY", KEY)
        .env("GEMINI_API_SECRET", SECRET)
        // The test-only knob: give up on the locked database after 0.3 s, not 120 s. The
        // run's last word (its settlement) still waits the full 120 s.
        .env("GEMINI_SWEEP_BUSY_PATIENCE_MS", "300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let mut stdout = child.stdout.take().unwrap();
    let stdout = tokio::spawn(async move {
        let mut text = String::new();
        stdout.read_to_string(&mut text).await.unwrap();
        text
    });

    // Once the run has recorded requests, an auditor's connection takes the write lock.
    let recorded = || {
        // Read-only, so the test never creates the file the run is about to create.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let count = "SELECT count(*) FROM attempts";
        rusqlite::Connection::open_with_flags(ws.db(), flags)
            .and_then(|c| c.query_row(count, [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n >= 4)
    };
    wait_until("the run has recorded requests", recorded).await;
    let blocker = db(&ws.db());
    blocker.busy_timeout(TEST_TIMEOUT).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    wait_until("the run gives up on the locked database", || {
        log.lock().unwrap().contains("sweep aborted")
    })
    .await;
    blocker.execute_batch("COMMIT").unwrap();

    let status = tokio::time::timeout(TEST_TIMEOUT, child.wait())
        .await
        .expect("the run ends")
        .unwrap();
    let stdout = stdout.await.unwrap();
    reader.await.unwrap();
    let err = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(3), "{err}");

    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary line; stderr:\n{err}"));
    let summary: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(summary["status"], "aborted", "{summary}");
    assert_eq!(summary["exit_code"], 3);
    assert!(summary.get("record_unwritten").is_none(), "{summary}");
    let reason = summary["stop_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("aborted: the audit trail could not be written")
            && reason.contains("locked"),
        "{reason}"
    );

    let conn = db(&ws.db());
    let (run_status, stop_reason, exit_code): (String, String, i64) = conn
        .query_row(
            "SELECT r.status, r.stop_reason, i.exit_code FROM runs r JOIN invocations i USING (run_id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (run_status.as_str(), stop_reason.as_str(), exit_code),
        ("aborted", reason, 3)
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts
             WHERE sent_at > (SELECT ended_at FROM runs WHERE run_id = 1)"
        ),
        0,
        "no request is recorded as sent after the run ended"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE outcome = 'in_flight'"
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts") as u64,
        server.ledger().counters.requests,
        "a row for every request the exchange saw, and none for a request it did not"
    );
    assert!(server.ledger().counters.requests >= 4);

    let report = run_binary(&["report", "--db", &ws.db().display().to_string()], &[]).await;
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    assert!(String::from_utf8_lossy(&report.stdout).contains("aborted"));
}

/// A disk that fills up during the run, made deterministic: the database's files may not grow
/// past a size limit (RLIMIT_FSIZE, set by `ulimit -f` with SIGXFSZ ignored, so a write past it
/// fails as on a full disk). The limit leaves room for the run's start, not for its sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_aborted_by_a_full_disk_prints_its_summary_and_reads_aborted() {
    let server = start(sim_config(300)).await;
    let ws = Workspace::new();
    let names = account_names(&server);
    // A first run creates and migrates the database; its end leaves it one checkpointed file.
    let first_csv = ws.accounts_csv(&names[..1]);
    let mut first = run_args(&server.base_url(), &first_csv, &ws.db());
    first.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&text_args(&first), &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let sent_before = server.ledger().counters.requests;
    let size = std::fs::metadata(ws.db()).unwrap().len();

    let csv = ws.write(
        "rest.csv",
        format!("account\n{}\n", names[1..].join("\n")).as_bytes(),
    );
    let mut args = run_args(&server.base_url(), &csv, &ws.db());
    args.extend(["--rate", "1000"].map(String::from));
    // `ulimit -f` counts 512-byte blocks (POSIX); 256 KiB over the database's size.
    let blocks = size / 512 + 512;
    let script = format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\"");
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_gemini-sweep"))
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("GEMINI_API_KEY", KEY)
        .env("GEMINI_API_SECRET", SECRET)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .expect("the run ends")
        .unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    let summary = stdout_json(&output);
    assert_eq!(summary["run_id"], 2, "{summary}");
    assert_eq!(summary["status"], "aborted", "{summary}");
    assert_eq!(summary["exit_code"], 3);
    assert!(summary.get("record_unwritten").is_none(), "{summary}");
    let reason = summary["stop_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("aborted: the audit trail could not be written"),
        "{reason}"
    );
    assert!(
        summary["accounts_ok"].as_i64().unwrap() < 299,
        "the limit stopped the sweep: {summary}"
    );

    let conn = db(&ws.db());
    let (status, stop_reason): (String, String) = conn
        .query_row(
            "SELECT status, stop_reason FROM runs WHERE run_id = 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), stop_reason.as_str()), ("aborted", reason));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts
             WHERE run_id = 2 AND sent_at > (SELECT ended_at FROM runs WHERE run_id = 2)"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM attempts WHERE outcome = 'in_flight'"
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts WHERE run_id = 2") as u64,
        server.ledger().counters.requests - sent_before,
        "a row for every request the exchange saw, and none for a request it did not"
    );
}
