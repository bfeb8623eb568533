//! The SQLite audit trail.
//!
//! One writer thread owns the read-write connection (a `Connection` cannot be shared across
//! `.await`s, and one writer means no writer ever waits on another). Async callers send it jobs
//! and await the commit: when `record_attempt` returns, the attempt and its order ids are on disk.
//! Jobs that arrive together are committed in one transaction, each inside its own savepoint so
//! one failing job cannot take the others with it.

mod migrations;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::client::{Attempt, Outcome};
use crate::error::Error;

pub use migrations::latest_version as schema_version;

/// How long one statement waits for a lock held by another connection (an auditor's sqlite3).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the writer keeps retrying a batch while the database stays locked, before giving up.
const BUSY_PATIENCE: Duration = Duration::from_secs(120);

/// SQL expression turning epoch milliseconds (parameter `?N`) into the schema's UTC text.
macro_rules! utc_text {
    ($param:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', ",
            $param,
            " / 1000.0, 'unixepoch')"
        )
    };
}

type Work = Box<dyn FnMut(&Connection) -> rusqlite::Result<i64> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<i64, String>>,
}

/// The writer. Cloneable handle; the thread ends when the last handle is dropped or on `close`.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to finish its queue and checkpoint the WAL into the main file.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

fn store_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Opens (creating if needed) and migrates the database, then starts its writer.
pub fn open(path: &Path) -> Result<(Store, WriterThread), Error> {
    if path.is_dir() {
        return Err(store_error(path, "is a directory; --db takes a file path"));
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| store_error(path, format!("cannot open: {e}")))?;
    configure_writer(&conn).map_err(|e| store_error(path, e))?;
    migrations::migrate(&mut conn).map_err(|e| store_error(path, e))?;

    let (jobs, queue) = mpsc::channel::<Job>();
    let thread_path = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer_loop(conn, queue, &thread_path))
        .map_err(|e| store_error(path, format!("cannot start the writer thread: {e}")))?;
    Ok((
        Store {
            path: path.to_path_buf(),
            jobs,
        },
        WriterThread(handle),
    ))
}

fn configure_writer(conn: &Connection) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    // Must run outside any transaction; a file that is not SQLite fails here first.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| format!("not a usable SQLite database ({e})"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "cannot switch to WAL journaling (got {mode}); is it on a network file system?"
        ));
    }
    // FULL: a commit is on disk before the writer answers, so an order id (or a nonce mark) that
    // was reported committed survives a power cut too, not only a process crash. Commits are
    // batched and come at the exchange's pace, so the fsyncs cost nothing that matters.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| e.to_string())
}

/// Opens a read-only connection for reports and summaries; works while a run is writing.
pub fn open_read_only(path: &Path) -> Result<Connection, Error> {
    if !path.is_file() {
        return Err(Error::Config(format!(
            "{}: no such database; run a sweep first or check --db",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| store_error(path, format!("cannot open: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| store_error(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| store_error(path, format!("not a usable SQLite database ({e})")))?;
    if version == 0 {
        return Err(Error::Config(format!(
            "{}: no runs recorded yet (the database is empty)",
            path.display()
        )));
    }
    if version > schema_version() {
        return Err(store_error(
            path,
            format!(
                "its schema version is {version}, newer than this gemini-sweep knows ({}); use a newer gemini-sweep",
                schema_version()
            ),
        ));
    }
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn writer_loop(mut conn: Connection, queue: mpsc::Receiver<Job>, path: &Path) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(511));
        let started = Instant::now();
        let results = loop {
            match run_batch(&mut conn, &mut batch) {
                Ok(results) => break results,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_PATIENCE => {
                    tracing::warn!(db = %path.display(), "database is locked by another connection; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    let reason = e.to_string();
                    break batch.iter().map(|_| Err(reason.clone())).collect();
                }
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
    // Leave one self-contained file behind for the auditors.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(db = %path.display(), error = %e, "WAL checkpoint at close failed");
    }
}

fn run_batch(
    conn: &mut Connection,
    batch: &mut [Job],
) -> rusqlite::Result<Vec<Result<i64, String>>> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let savepoint = tx.savepoint()?;
        match (job.work)(&savepoint) {
            Ok(value) => {
                savepoint.commit()?;
                results.push(Ok(value));
            }
            Err(e) if is_busy(&e) => return Err(e),
            // Dropping the savepoint rolls back just this job.
            Err(e) => results.push(Err(e.to_string())),
        }
    }
    tx.commit()?;
    Ok(results)
}

pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Order ids are u64 on the wire and INTEGER (i64) in SQLite. An id past i64::MAX (none has
/// ever been seen) must neither wrap nor cost the rest of its reply, so it goes to
/// `unstorable_order_ids` as text and the caller skips it. Returns the id when it fits.
fn storable_id(
    c: &Connection,
    run_id: i64,
    account: &str,
    id: u64,
    listed_as: &str,
    attempt_id: i64,
) -> rusqlite::Result<Option<i64>> {
    if let Ok(v) = i64::try_from(id) {
        return Ok(Some(v));
    }
    tracing::error!(
        account,
        order_id = id,
        listed_as,
        "order id beyond SQLite's INTEGER range; kept as text in unstorable_order_ids"
    );
    c.prepare_cached(
        "INSERT OR IGNORE INTO unstorable_order_ids (run_id, account, order_id, listed_as, attempt_id)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![run_id, account, id.to_string(), listed_as, attempt_id])?;
    Ok(None)
}

/// Which step of an account's sweep an attempt belongs to, as `attempts.phase` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Listing open orders before the cancel-all.
    Snapshot,
    Cancel,
    /// Listing open orders after the cancel-all.
    Verify,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Snapshot => "snapshot",
            Phase::Cancel => "cancel",
            Phase::Verify => "verify",
        }
    }
}

/// What a new run records before anything is sent.
pub struct NewRun<'a> {
    pub base_url: &'a str,
    pub key_fingerprint: &'a str,
    pub options_json: String,
    pub accounts: Vec<NewRunAccount>,
}

#[derive(Clone)]
pub struct NewRunAccount {
    pub account: String,
    pub csv_line: u64,
    pub note: Option<String>,
    pub enabled: bool,
}

/// Final status of one account, as `run_accounts.status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Swept,
    RejectsLeft,
    Failed,
    Interrupted,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Swept => "swept",
            AccountStatus::RejectsLeft => "rejects_left",
            AccountStatus::Failed => "failed",
            AccountStatus::Interrupted => "interrupted",
        }
    }
}

/// Final status of a run, as `runs.status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Completed = 0,
    Incomplete = 1,
    Interrupted = 2,
    Aborted = 3,
}

impl RunStatus {
    fn from_code(code: i64) -> RunStatus {
        match code {
            0 => RunStatus::Completed,
            1 => RunStatus::Incomplete,
            2 => RunStatus::Interrupted,
            _ => RunStatus::Aborted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Incomplete => "incomplete",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Aborted => "aborted",
        }
    }
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn exec(&self, work: Work) -> Result<i64, Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { work, reply })
            .map_err(|_| store_error(&self.path, "the writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| store_error(&self.path, "the writer thread has stopped"))?
            .map_err(|e| store_error(&self.path, e))
    }

    pub async fn nonce_high_water(&self, key_fingerprint: &str) -> Result<u64, Error> {
        let fp = key_fingerprint.to_owned();
        let mark = self
            .exec(Box::new(move |c| {
                c.query_row(
                    "SELECT high_water_ms FROM nonce_high_water WHERE key_fingerprint = ?1",
                    [&fp],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map(|m| m.unwrap_or(0))
            }))
            .await?;
        Ok(mark.max(0) as u64)
    }

    /// Raises (never lowers) the key's mark; returns once it is committed.
    pub async fn raise_nonce_high_water(
        &self,
        key_fingerprint: &str,
        mark_ms: u64,
    ) -> Result<(), Error> {
        let fp = key_fingerprint.to_owned();
        let mark = i64::try_from(mark_ms).unwrap_or(i64::MAX);
        let now = epoch_ms(SystemTime::now());
        self.exec(Box::new(move |c| {
            c.execute(
                concat!(
                    "INSERT INTO nonce_high_water (key_fingerprint, high_water_ms, updated_at) VALUES (?1, ?2, ",
                    utc_text!("?3"),
                    ") ON CONFLICT (key_fingerprint) DO UPDATE SET
                       high_water_ms = max(high_water_ms, excluded.high_water_ms),
                       updated_at = excluded.updated_at"
                ),
                params![fp, mark, now],
            )
            .map(|_| 0)
        }))
        .await
        .map(|_| ())
    }

    /// At the end of a run, replaces the lease-ahead mark with the last nonce really used, so the
    /// next run does not start a lease ahead (in time mode, leases stacked by quick successive
    /// runs would drift past the exchange's ±30 s window). Nothing above `last_used_ms` was sent.
    pub async fn settle_nonce_high_water(
        &self,
        key_fingerprint: &str,
        last_used_ms: u64,
    ) -> Result<(), Error> {
        let fp = key_fingerprint.to_owned();
        let mark = i64::try_from(last_used_ms).unwrap_or(i64::MAX);
        let now = epoch_ms(SystemTime::now());
        self.exec(Box::new(move |c| {
            c.execute(
                concat!(
                    "UPDATE nonce_high_water SET high_water_ms = ?2, updated_at = ",
                    utc_text!("?3"),
                    " WHERE key_fingerprint = ?1 AND high_water_ms > ?2"
                ),
                params![fp, mark, now],
            )
            .map(|_| 0)
        }))
        .await
        .map(|_| ())
    }

    pub async fn begin_run(&self, run: NewRun<'_>) -> Result<i64, Error> {
        let base_url = run.base_url.to_owned();
        let fp = run.key_fingerprint.to_owned();
        let options = run.options_json;
        let accounts = run.accounts;
        let now = epoch_ms(SystemTime::now());
        let pid = std::process::id() as i64;
        self.exec(Box::new(move |c| {
            c.execute(
                concat!(
                    "INSERT INTO runs (started_at, status, base_url, key_fingerprint, options, pid, tool_version)
                     VALUES (",
                    utc_text!("?1"),
                    ", 'running', ?2, ?3, ?4, ?5, ?6)"
                ),
                params![now, base_url, fp, options, pid, env!("CARGO_PKG_VERSION")],
            )?;
            let run_id = c.last_insert_rowid();
            let mut insert = c.prepare(
                "INSERT INTO run_accounts (run_id, account, csv_line, note, status)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for a in &accounts {
                let status = if a.enabled { "pending" } else { "skipped" };
                insert.execute(params![run_id, a.account, a.csv_line as i64, a.note, status])?;
            }
            Ok(run_id)
        }))
        .await
    }

    /// Commits one attempt and every order its reply reported, in one transaction.
    /// Returns the attempt's id.
    pub async fn record_attempt(
        &self,
        run_id: i64,
        account: &str,
        attempt_no: u32,
        phase: Phase,
        attempt: &Attempt,
    ) -> Result<i64, Error> {
        let account = account.to_owned();
        let attempt = attempt.clone();
        self.exec(Box::new(move |c| {
            let (outcome, reason, message) = match &attempt.outcome {
                Outcome::CancelAll { .. } | Outcome::Orders(_) => ("ok", None, None),
                Outcome::Transient {
                    reason, message, ..
                } => ("transient", Some(reason.as_str()), Some(message.as_str())),
                Outcome::Permanent { reason, message } => {
                    ("permanent", Some(reason.as_str()), Some(message.as_str()))
                }
            };
            c.execute(
                concat!(
                    "INSERT INTO attempts (run_id, account, attempt_no, endpoint, nonce, sent_at,
                        latency_ms, http_status, outcome, error_reason, error_message, body, body_truncated, phase)
                     VALUES (?1, ?2, ?3, ?4, ?5, ",
                    utc_text!("?6"),
                    ", ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    run_id,
                    account,
                    attempt_no,
                    attempt.endpoint,
                    attempt.nonce,
                    epoch_ms(attempt.sent_at),
                    attempt.latency.as_millis() as i64,
                    attempt.http_status,
                    outcome,
                    reason,
                    message,
                    attempt.body,
                    attempt.body_truncated,
                    phase.as_str(),
                ],
            )?;
            let attempt_id = c.last_insert_rowid();
            if let Outcome::CancelAll {
                cancelled,
                rejected,
            } = &attempt.outcome
            {
                // OR IGNORE: an order reported twice (a reject re-tried, a resumed run) keeps the
                // row of the attempt that first reported it, so nothing is counted twice.
                let mut insert = c.prepare_cached(
                    "INSERT OR IGNORE INTO cancelled_orders (run_id, account, order_id, attempt_id)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for id in cancelled {
                    if let Some(id) = storable_id(c, run_id, &account, *id, "cancelled", attempt_id)? {
                        insert.execute(params![run_id, account, id, attempt_id])?;
                    }
                }
                let mut insert = c.prepare_cached(
                    "INSERT OR IGNORE INTO cancel_rejects (run_id, account, order_id, attempt_id)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for id in rejected {
                    if let Some(id) = storable_id(c, run_id, &account, *id, "rejected", attempt_id)? {
                        insert.execute(params![run_id, account, id, attempt_id])?;
                    }
                }
            }
            if let Outcome::Orders(orders) = &attempt.outcome {
                record_listing(c, run_id, &account, phase, orders, attempt_id, epoch_ms(attempt.sent_at))?;
            }
            c.execute(
                "UPDATE run_accounts SET attempts = attempts + 1 WHERE run_id = ?1 AND account = ?2",
                params![run_id, account],
            )?;
            Ok(attempt_id)
        }))
        .await
    }

    /// Sets the account's final status and derives its counts from the order tables.
    pub async fn finish_account(
        &self,
        run_id: i64,
        account: &str,
        status: AccountStatus,
        last_error: Option<String>,
    ) -> Result<(), Error> {
        let account = account.to_owned();
        let now = epoch_ms(SystemTime::now());
        self.exec(Box::new(move |c| {
            c.execute(
                concat!(
                    "UPDATE run_accounts SET status = ?3, last_error = ?4, finished_at = ",
                    utc_text!("?5"),
                    ",
                       cancelled_count = (SELECT count(*) FROM cancelled_orders o
                                          WHERE o.run_id = ?1 AND o.account = ?2),
                       rejected_count = (SELECT count(*) FROM cancel_rejects r
                                         WHERE r.run_id = ?1 AND r.account = ?2
                                           AND NOT EXISTS (SELECT 1 FROM cancelled_orders o
                                               WHERE o.run_id = r.run_id AND o.account = r.account
                                                 AND o.order_id = r.order_id))
                     WHERE run_id = ?1 AND account = ?2"
                ),
                params![run_id, account, status.as_str(), last_error, now],
            )
            .map(|_| 0)
        }))
        .await
        .map(|_| ())
    }

    /// Puts a run back to `running` under this process, with its remaining accounts `pending`.
    pub async fn reopen_run(
        &self,
        run_id: i64,
        base_url: &str,
        options_json: String,
        accounts: &[String],
    ) -> Result<(), Error> {
        let base_url = base_url.to_owned();
        let accounts = accounts.to_vec();
        let pid = std::process::id() as i64;
        self.exec(Box::new(move |c| {
            c.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, pid = ?2, base_url = ?3, options = ?4
                 WHERE run_id = ?1",
                params![run_id, pid, base_url, options_json],
            )?;
            let mut reset = c.prepare_cached(
                "UPDATE run_accounts SET status = 'pending', finished_at = NULL
                 WHERE run_id = ?1 AND account = ?2",
            )?;
            for account in &accounts {
                reset.execute(params![run_id, account])?;
            }
            Ok(0)
        }))
        .await
        .map(|_| ())
    }

    /// For a resumed account: the last attempt number used, and whether its snapshot was taken.
    pub async fn account_progress(&self, run_id: i64, account: &str) -> Result<(u32, bool), Error> {
        let account = account.to_owned();
        let packed = self
            .exec(Box::new(move |c| {
                c.query_row(
                    "SELECT (SELECT coalesce(max(attempt_no), 0) FROM attempts
                             WHERE run_id = ?1 AND account = ?2) * 2
                            + (SELECT snapshot_at IS NOT NULL FROM run_accounts
                               WHERE run_id = ?1 AND account = ?2)",
                    params![run_id, account],
                    |r| r.get::<_, i64>(0),
                )
            }))
            .await?;
        Ok(((packed / 2) as u32, packed % 2 == 1))
    }

    /// Decides and records the run's final status from all its accounts, through the same
    /// reconciliation view the reports read: completed when every account is swept and (when
    /// verifying) clean, interrupted when any is unfinished, incomplete otherwise. With
    /// --no-verify `clean` is unknown (NULL) and only the sweep itself is judged.
    pub async fn settle_run(&self, run_id: i64, aborted: bool) -> Result<RunStatus, Error> {
        let now = epoch_ms(SystemTime::now());
        let code = self
            .exec(Box::new(move |c| {
                let status = if aborted {
                    RunStatus::Aborted
                } else {
                    let (unfinished, not_done): (i64, i64) = c.query_row(
                        "SELECT coalesce(sum(status IN ('pending', 'interrupted')), 0),
                                coalesce(sum(dirty), 0)
                         FROM account_reconciliation WHERE run_id = ?1",
                        [run_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    if unfinished > 0 {
                        RunStatus::Interrupted
                    } else if not_done > 0 {
                        RunStatus::Incomplete
                    } else {
                        RunStatus::Completed
                    }
                };
                c.execute(
                    concat!(
                        "UPDATE runs SET status = ?2, ended_at = ",
                        utc_text!("?3"),
                        " WHERE run_id = ?1"
                    ),
                    params![run_id, status.as_str(), now],
                )?;
                Ok(status as i64)
            }))
            .await?;
        Ok(RunStatus::from_code(code))
    }
}

/// Stores a listing of open orders. The snapshot keeps the first listing taken (a resumed run does
/// not re-take it, or orders placed meanwhile would stop counting as late); the verify step keeps
/// the latest listing only, since only "open now" matters.
fn record_listing(
    c: &Connection,
    run_id: i64,
    account: &str,
    phase: Phase,
    orders: &[crate::client::OpenOrder],
    attempt_id: i64,
    listed_at_ms: i64,
) -> rusqlite::Result<()> {
    let (table, column) = match phase {
        Phase::Snapshot => ("open_orders_before", "snapshot_at"),
        Phase::Verify => ("open_orders_after", "verified_at"),
        Phase::Cancel => return Ok(()),
    };
    if phase == Phase::Verify {
        c.execute(
            "DELETE FROM open_orders_after WHERE run_id = ?1 AND account = ?2",
            params![run_id, account],
        )?;
    }
    let mut insert = c.prepare_cached(&format!(
        concat!(
            "INSERT OR IGNORE INTO {} (run_id, account, order_id, symbol, side, price,
                remaining_amount, client_order_id, placed_at, attempt_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ",
            utc_text!("?9"),
            ", ?10)"
        ),
        table
    ))?;
    for o in orders {
        let Some(order_id) = storable_id(c, run_id, account, o.order_id, table, attempt_id)? else {
            continue;
        };
        insert.execute(params![
            run_id,
            account,
            order_id,
            o.symbol,
            o.side,
            o.price,
            o.remaining_amount,
            o.client_order_id,
            o.timestampms,
            attempt_id
        ])?;
    }
    c.execute(
        &format!(
            concat!(
                "UPDATE run_accounts SET {} = ",
                utc_text!("?3"),
                " WHERE run_id = ?1 AND account = ?2"
            ),
            column
        ),
        params![run_id, account, listed_at_ms],
    )?;
    Ok(())
}

/// What `--resume` needs of an earlier run.
pub struct Resumable {
    pub run_id: i64,
    pub status: String,
    pub base_url: String,
    pub key_fingerprint: String,
    pub options_json: String,
    pub pid: i64,
    /// Accounts not finished: pending, interrupted, failed on a transient error (and failed on a
    /// permanent one when asked), in CSV order.
    pub accounts: Vec<String>,
}

pub fn resumable(
    conn: &Connection,
    run_id: i64,
    retry_permanent: bool,
) -> rusqlite::Result<Option<Resumable>> {
    let Some((status, base_url, key_fingerprint, options_json, pid)) = conn
        .query_row(
            "SELECT status, base_url, key_fingerprint, options, pid FROM runs WHERE run_id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT a.account FROM run_accounts a
         WHERE a.run_id = ?1
           AND (a.status IN ('pending', 'interrupted')
                OR (a.status = 'failed'
                    AND (?2 OR coalesce((SELECT t.outcome FROM attempts t
                                         WHERE t.run_id = a.run_id AND t.account = a.account
                                         ORDER BY t.attempt_no DESC LIMIT 1), '') <> 'permanent')))
         ORDER BY a.csv_line, a.account",
    )?;
    let accounts = stmt
        .query_map(params![run_id, retry_permanent], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(Resumable {
        run_id,
        status,
        base_url,
        key_fingerprint,
        options_json,
        pid,
        accounts,
    }))
}

/// A run's totals, read back from the database so the summary and the audit trail cannot differ.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RunTotals {
    pub run_id: i64,
    pub status: String,
    pub accounts_total: i64,
    pub accounts_ok: i64,
    pub accounts_rejects_left: i64,
    pub accounts_failed: i64,
    pub accounts_skipped: i64,
    pub accounts_unfinished: i64,
    pub orders_cancelled: i64,
    pub orders_rejected: i64,
    pub attempts: i64,
    pub rate_limited: i64,
}

pub fn run_totals(conn: &Connection, run_id: i64) -> rusqlite::Result<RunTotals> {
    conn.query_row(
        "SELECT r.run_id, r.status,
                (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id),
                (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id AND a.status = 'swept'),
                (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id AND a.status = 'rejects_left'),
                (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id AND a.status = 'failed'),
                (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id AND a.status = 'skipped'),
                (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id
                    AND a.status IN ('pending', 'interrupted')),
                (SELECT count(*) FROM cancelled_orders o WHERE o.run_id = r.run_id),
                (SELECT coalesce(sum(a.rejected_count), 0) FROM run_accounts a WHERE a.run_id = r.run_id),
                (SELECT count(*) FROM attempts t WHERE t.run_id = r.run_id),
                (SELECT count(*) FROM attempts t WHERE t.run_id = r.run_id AND t.http_status = 429)
         FROM runs r WHERE r.run_id = ?1",
        [run_id],
        |row| {
            Ok(RunTotals {
                run_id: row.get(0)?,
                status: row.get(1)?,
                accounts_total: row.get(2)?,
                accounts_ok: row.get(3)?,
                accounts_rejects_left: row.get(4)?,
                accounts_failed: row.get(5)?,
                accounts_skipped: row.get(6)?,
                accounts_unfinished: row.get(7)?,
                orders_cancelled: row.get(8)?,
                orders_rejected: row.get(9)?,
                attempts: row.get(10)?,
                rate_limited: row.get(11)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_id_beyond_sqlite_integers_is_kept_as_text_without_losing_its_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (store, writer) = open(&path).unwrap();
        let run_id = store
            .begin_run(NewRun {
                base_url: "http://127.0.0.1:1/",
                key_fingerprint: "master:00",
                options_json: "{}".into(),
                accounts: vec![NewRunAccount {
                    account: "a".into(),
                    csv_line: 2,
                    note: None,
                    enabled: true,
                }],
            })
            .await
            .unwrap();
        let attempt = Attempt {
            endpoint: crate::client::CANCEL_ALL,
            nonce: "1".into(),
            sent_at: SystemTime::now(),
            latency: Duration::from_millis(3),
            http_status: Some(200),
            body: String::new(),
            body_truncated: false,
            outcome: Outcome::CancelAll {
                cancelled: vec![7, u64::MAX, 9],
                rejected: vec![u64::MAX - 1],
            },
        };
        store
            .record_attempt(run_id, "a", 1, Phase::Cancel, &attempt)
            .await
            .unwrap();
        drop(store);
        writer.join();
        let conn = Connection::open(&path).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT count(*) FROM attempts"), 1);
        assert_eq!(count("SELECT count(*) FROM cancelled_orders"), 2);
        assert_eq!(count("SELECT count(*) FROM cancel_rejects"), 0);
        let kept: Vec<(String, String)> = conn
            .prepare("SELECT order_id, listed_as FROM unstorable_order_ids ORDER BY listed_as")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            kept,
            vec![
                (u64::MAX.to_string(), "cancelled".to_string()),
                ((u64::MAX - 1).to_string(), "rejected".to_string())
            ]
        );
    }
}
