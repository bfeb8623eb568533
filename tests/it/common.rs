//! Shared pieces of the end-to-end tests: a simulator, an accounts file, the real binary.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use gemini_sweep::sim::{self, KeySpec, NonceMode, Role, SimConfig, SimServer};

pub const KEY: &str = "master-testkey";
pub const SECRET: &str = "test-secret-Zq8Kx1";

/// Bound on every end-to-end test: a hung run fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

pub fn master_key() -> KeySpec {
    KeySpec {
        key: KEY.into(),
        secret: SECRET.into(),
        nonce_mode: NonceMode::Increasing,
        roles: vec![Role::Trader, Role::Auditor],
        account: None,
        group: None,
    }
}

pub fn sim_config(accounts: usize) -> SimConfig {
    SimConfig {
        seed: 11,
        accounts: SimConfig::numbered_accounts(accounts as u32),
        keys: vec![master_key()],
        // The exchange's own 10/s would make every test a minute long; tests that are about the
        // limit set one themselves.
        rate_limit: None,
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> SimServer {
    sim::start(config).await.expect("simulator starts")
}

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("sweep.db")
    }

    /// Writes an accounts CSV naming `names`, all enabled.
    pub fn accounts_csv(&self, names: &[String]) -> PathBuf {
        let mut text = String::from("account,enabled,note\n");
        for n in names {
            text.push_str(&format!("{n},true,\n"));
        }
        self.write("accounts.csv", text.as_bytes())
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write test file");
        path
    }
}

pub fn account_names(server: &SimServer) -> Vec<String> {
    server.ledger().accounts.keys().cloned().collect()
}

/// Runs the real binary with the test key in its environment.
pub async fn run_binary(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemini-sweep"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("GEMINI_API_KEY", KEY)
        .env("GEMINI_API_SECRET", SECRET)
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::time::timeout(TEST_TIMEOUT, cmd.output())
        .await
        .expect("binary finishes in time")
        .expect("binary runs")
}

pub fn stdout_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no stdout; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last}"))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A workspace whose accounts CSV names every account of `server`, and the `run` arguments
/// (see [`run_args`]) that sweep them into the workspace's database.
pub fn sweep_setup(server: &SimServer) -> (Workspace, Vec<String>) {
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&account_names(server));
    let args = run_args(&server.base_url(), &csv, &ws.db());
    (ws, args)
}

/// Common run arguments against a simulator.
pub fn run_args<'a>(server_url: &'a str, csv: &'a Path, db: &'a Path) -> Vec<String> {
    vec![
        "run".into(),
        "--base-url".into(),
        server_url.into(),
        "--accounts".into(),
        csv.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--timeout".into(),
        "2".into(),
        "--lock-dir".into(),
        db.parent().unwrap().display().to_string(),
    ]
}

pub fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open test database")
}

/// (account, order_id) pairs of a table for one run.
pub fn order_rows(conn: &rusqlite::Connection, table: &str, run_id: i64) -> Vec<(String, u64)> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT account, order_id FROM {table} WHERE run_id = ?1 ORDER BY account, order_id"
        ))
        .unwrap();
    stmt.query_map([run_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// (account, order_id) pairs.
pub type OrderSet = BTreeSet<(String, u64)>;

/// What the simulator says it cancelled and rejected.
pub fn ledger_truth(server: &SimServer) -> (OrderSet, OrderSet) {
    let ledger = server.ledger();
    let mut cancelled = BTreeSet::new();
    let mut rejected = BTreeSet::new();
    for (account, l) in &ledger.accounts {
        for c in &l.cancelled {
            cancelled.insert((account.clone(), c.order_id));
        }
        for r in &l.rejects {
            rejected.insert((account.clone(), *r));
        }
    }
    (cancelled, rejected)
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn statuses(conn: &rusqlite::Connection, run_id: i64) -> BTreeMap<String, String> {
    let mut stmt = conn
        .prepare("SELECT account, status FROM run_accounts WHERE run_id = ?1")
        .unwrap();
    stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `run --resume RUN` on the workspace's database, with extra flags.
pub async fn resume(ws: &Workspace, run: &str, extra: &[&str]) -> Output {
    let db = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let mut args = vec!["run", "--resume", run, "--db", &db, "--lock-dir", &lock_dir];
    args.extend(extra);
    // A scheduler's environment may still name the CSV; --resume must not care.
    run_binary(
        &args,
        &[("GEMINI_SWEEP_ACCOUNTS", "/nonexistent/accounts.csv")],
    )
    .await
}
