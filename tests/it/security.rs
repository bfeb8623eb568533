//! Who can read the audit trail, and what stays fast as it grows.

use crate::common::*;

/// Mode bits of a file.
#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The database, its WAL and shared-memory files and the lock files are private to their owner
/// whatever the umask; the key's lock is beside the database.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_a_run_creates_is_private_whatever_the_umask() {
    let server = start(sim_config(3)).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&account_names(&server));
    let db_path = ws.path("private/sweep.db");
    std::fs::create_dir(ws.path("private")).unwrap();
    // The run is held open long enough to see the -wal and -shm files.
    let output = Bin::new()
        .umask_000()
        .args([
            "run",
            "--accounts",
            &csv.display().to_string(),
            "--base-url",
            &server.base_url(),
            "--db",
            &db_path.display().to_string(),
            "--rate",
            "1000",
        ])
        .output()
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(ws.path("private")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(mode(&path), 0o600, "{name}");
        seen.push(name);
    }
    seen.sort();
    assert!(seen.contains(&"sweep.db".to_string()), "{seen:?}");
    assert!(seen.contains(&"sweep.db.lock".to_string()), "{seen:?}");
    assert!(
        seen.iter()
            .any(|n| n.starts_with("gemini-sweep-master-") && n.ends_with(".lock")),
        "the key's lock lives beside the database: {seen:?}"
    );
    // SQLite creates -wal and -shm with the database's mode; reopening shows them.
    let conn = db(&db_path);
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;").unwrap();
    for suffix in ["-wal", "-shm"] {
        let path = ws.path(&format!("private/sweep.db{suffix}"));
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "sweep.db{suffix}");
        }
    }
}

/// `report --run N` and `runs --limit N` read only the runs asked for: every view, filtered by
/// run, searches each table by key and scans none. (A plan is deterministic where a timing is
/// not; `bench/run` measures the time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runs_report_reads_that_run_only() {
    let server = start(sim_config(3)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    for query in [
        "SELECT * FROM run_reconciliation WHERE run_id = 1",
        "SELECT * FROM account_reconciliation WHERE run_id = 1 ORDER BY csv_line, account",
        "SELECT * FROM order_reconciliation WHERE run_id = 1 AND outcome IN ('still_open', 'unverified', 'rejected')",
        "SELECT account FROM account_reconciliation WHERE run_id = 1 AND dirty",
    ] {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // The only scan allowed is of `t`, run_reconciliation's one-row aggregate of the run.
        let scans: Vec<&String> = plan
            .iter()
            .filter(|step| step.starts_with("SCAN") && step.as_str() != "SCAN t")
            .collect();
        assert!(
            scans.is_empty(),
            "{query}\nscans: {scans:?}\nplan:\n{}",
            plan.join("\n")
        );
    }
}
