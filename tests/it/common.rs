//! Shared pieces of the end-to-end tests: a simulator, an accounts file, the real binary.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gemini_sim::{self as sim, KeySpec, NonceMode, Role, SimConfig, SimServer};

pub const KEY: &str = "master-testkey";
pub const SECRET: &str = "test-secret-Zq8Kx1";

/// Bound on every test: a hung run or request fails instead of blocking CI. A hang guard only,
/// never a performance claim: what it bounds takes seconds at most, even on a loaded machine.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a test waits for a condition (a request sent, a row committed, a file written)
/// before it fails: what it waits for comes within a second or two on an idle machine, so a
/// loaded one has tens of times the margin.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(60);

/// Waits, polling, until `condition` holds; fails with `what` after [`WAIT_DEADLINE`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT_DEADLINE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulator key: the one builder of [`KeySpec`]s for every test.
pub fn key(key: &str, secret: &str, roles: &[Role], account: Option<&str>) -> KeySpec {
    KeySpec {
        key: key.into(),
        secret: secret.into(),
        nonce_mode: NonceMode::Increasing,
        roles: roles.to_vec(),
        account: account.map(Into::into),
        group: None,
    }
}

/// The tests' master key ([`KEY`], [`SECRET`]), able to trade and to list.
pub fn master_key() -> KeySpec {
    key(KEY, SECRET, &[Role::Trader, Role::Auditor], None)
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

/// The binary under test, run the way a scheduler runs it: an empty environment but `PATH`,
/// info logs and the test key (each can be overridden or removed), stdout and stderr captured.
/// Every test that runs the binary goes through here.
pub struct Bin {
    wrapper: Wrapper,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
}

enum Wrapper {
    None,
    /// Under `umask 000`, so the modes of the files it creates are its own doing.
    Umask000,
    /// On a fresh pseudo-terminal (util-linux `script`), as an operator at a terminal sees it;
    /// `script` keeps its transcript in this file.
    Terminal(PathBuf),
    /// A `sh -c` line that calls the binary ([`BIN_PATH`]) itself, as a crontab line does.
    Shell(String),
}

pub const BIN_PATH: &str = env!("CARGO_BIN_EXE_gemini-sweep");

impl Bin {
    pub fn new() -> Self {
        Bin {
            wrapper: Wrapper::None,
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
        }
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("GEMINI_API_KEY", KEY)
        .env("GEMINI_API_SECRET", SECRET)
    }

    /// A shell line (run by `sh -c`) in the binary's environment, instead of the binary.
    pub fn shell(line: &str) -> Self {
        Bin {
            wrapper: Wrapper::Shell(line.to_owned()),
            ..Bin::new()
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets (or replaces) one variable of the child's environment.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let name = name.as_ref().to_owned();
        self.envs.retain(|(n, _)| *n != name);
        self.envs.push((name, Some(value.as_ref().to_owned())));
        self
    }

    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        envs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in envs {
            self = self.env(k, v);
        }
        self
    }

    /// Leaves a variable out of the child's environment.
    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        let name = name.as_ref().to_owned();
        self.envs.retain(|(n, _)| *n != name);
        self.envs.push((name, None));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn umask_000(mut self) -> Self {
        self.wrapper = Wrapper::Umask000;
        self
    }

    /// `transcript`: where `script` keeps its copy of the screen (a file of the test's own, never
    /// a device: a program that writes a path it was given may replace it).
    pub fn in_terminal(mut self, transcript: &Path) -> Self {
        self.wrapper = Wrapper::Terminal(transcript.to_path_buf());
        self.env("TERM", "xterm")
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = match &self.wrapper {
            Wrapper::None => tokio::process::Command::new(BIN_PATH),
            Wrapper::Umask000 => {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.args(["-c", r#"umask 000 && exec "$@""#, "sh", BIN_PATH]);
                cmd
            }
            Wrapper::Shell(line) => {
                assert!(
                    self.args.is_empty(),
                    "a shell line carries its own arguments"
                );
                let mut cmd = tokio::process::Command::new("sh");
                cmd.args(["-c", line]);
                cmd
            }
            Wrapper::Terminal(transcript) => {
                let mut line = sh_quote(OsStr::new(BIN_PATH));
                for arg in &self.args {
                    line.push(' ');
                    line.push_str(&sh_quote(arg));
                }
                let mut cmd = tokio::process::Command::new("script");
                cmd.args([
                    OsStr::new("-qec"),
                    OsStr::new(&line),
                    transcript.as_os_str(),
                ]);
                cmd
            }
        };
        if !matches!(self.wrapper, Wrapper::Terminal(_)) {
            cmd.args(&self.args);
        }
        cmd.env_clear();
        for (name, value) in &self.envs {
            if let Some(value) = value {
                cmd.env(name, value);
            }
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        cmd
    }

    /// Starts it, for tests that watch, signal or kill it while it runs.
    pub fn spawn(self) -> Running {
        let mut child = self.command().spawn().expect("spawn the binary");
        if let Some(bytes) = self.stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // The child may exit without reading it all; that is its business.
                let _ = pipe.write_all(&bytes).await;
            });
        }
        // stderr is read as it comes, so a test can wait for a line, and a chatty child never
        // blocks on a full pipe.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let reader = {
            let stderr = stderr.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    stderr.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            })
        };
        Running {
            child,
            stderr,
            reader,
        }
    }

    /// Runs it to the end, within [`TEST_TIMEOUT`].
    pub async fn output(self) -> Output {
        self.spawn().finish().await
    }
}

/// The binary, running.
pub struct Running {
    child: tokio::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the binary is running")
    }

    /// Sends it a signal (`-TERM`, `-INT`, `-KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until it has written `needle` to stderr.
    pub async fn wait_for_stderr(&self, needle: &str) {
        wait_until(&format!("{needle:?} on stderr"), || {
            self.stderr_so_far().contains(needle)
        })
        .await;
    }

    /// Waits for it to exit, within [`TEST_TIMEOUT`]; the output holds all of its stderr.
    pub async fn finish(self) -> Output {
        let mut output = tokio::time::timeout(TEST_TIMEOUT, self.child.wait_with_output())
            .await
            .expect("binary finishes in time")
            .expect("binary runs");
        tokio::time::timeout(TEST_TIMEOUT, self.reader)
            .await
            .expect("stderr closes in time")
            .expect("stderr reader");
        output.stderr = std::mem::take(&mut *self.stderr.lock().unwrap());
        output
    }
}

impl Default for Bin {
    fn default() -> Self {
        Bin::new()
    }
}

/// Single-quoted for `sh`.
fn sh_quote(arg: &OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r#"'\''"#))
}

/// Runs the real binary with the test key in its environment, and `envs` on top.
pub async fn run_binary(
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    envs: &[(&str, &str)],
) -> Output {
    Bin::new()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .await
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
    // A scheduler's environment may still name the CSV; --resume must not care.
    Bin::new()
        .args(["run", "--resume", run, "--db", &db, "--lock-dir", &lock_dir])
        .args(extra)
        .env("GEMINI_SWEEP_ACCOUNTS", "/nonexistent/accounts.csv")
        .output()
        .await
}

/// Seconds since the epoch, as the audit trail's send times are compared.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Send times (seconds since the epoch, ascending) of the attempts `filter` selects (an SQL
/// condition on `attempts a` joined with `runs r`).
pub fn send_times(conn: &rusqlite::Connection, filter: &str) -> Vec<f64> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT (julianday(a.sent_at) - 2440587.5) * 86400.0 FROM attempts a
             JOIN runs r ON r.run_id = a.run_id WHERE {filter} ORDER BY 1"
        ))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The engine kept to `rate` requests per second (`burst` back to back) from `started`, taken
/// before the binary was started: the k-th request (from 0) left no earlier than
/// `started + (k + 1 - burst) / rate`. The pacer admits at that pace at most, and a request's send
/// time is taken after its admission, so a loaded machine can only make requests later: this
/// holds however slow the machine is. The slack covers the millisecond precision of the stored
/// times and the drift between the pacer's monotonic clock and the wall clock.
pub fn assert_paced(times: &[f64], started: SystemTime, rate: f64, burst: u32, what: &str) {
    const SLACK: f64 = 0.02;
    let t0 = epoch_secs(started);
    for (k, t) in times.iter().enumerate() {
        let earliest = t0 + (k as f64 + 1.0 - f64::from(burst)).max(0.0) / rate;
        assert!(
            *t >= earliest - SLACK,
            "{what}: request {k} left {:.3} s after the start, before its slot at {:.3} s",
            t - t0,
            earliest - t0
        );
    }
}

/// Every file under `dir` whose name ends in `.{extension}`, for the tests that read the
/// sources or the docs.
pub fn files_under(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, extension, found);
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
}
