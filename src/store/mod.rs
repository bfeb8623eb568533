//! The SQLite audit trail.
//!
//! - [`writer`]: the one writer thread, batching jobs into group commits.
//! - [`runs`]: a run's lifecycle: its invocations, its accounts' outcomes, dead runs taken over.
//! - [`attempts`]: every request, written before it leaves and completed when its reply is read,
//!   with the order ids and listings the reply carried.
//! - [`reads`]: what the engine and the reports read back (resumable accounts, run totals, the
//!   latest job).
//! - [`values`]: the words the text columns store (statuses, phases, outcomes), as enums.
//! - [`migrations`]: the schema in `migrations/`.

mod attempts;
mod migrations;
mod reads;
mod runs;
mod values;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::output_file::OutputError;

pub use crate::exit::RunStatus;
pub use attempts::{Action, AttemptEnd, AttemptStart, Outcome as AttemptOutcome, Sent};
pub use migrations::{MigrationError, latest_version as schema_version};
pub use reads::{
    HoldTotals, JobRun, Resumable, RunTotals, latest_job, resolve_run, resumable, run_group,
    run_totals,
};
pub use runs::{AccountFinish, NewRun, NewRunAccount, Resume, Settle, TakenOver};
pub use values::{
    AccountFailure, AccountStatus, AttemptState, InvocationKind, Listing, OrderOutcome, Phase,
    UnknownValue,
};
pub use writer::{WriteError, WriterThread};

/// How long one statement waits for a lock held by another connection (an auditor's sqlite3).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
pub(crate) use utc_text;

/// The writer's handle. Cloneable; the writer thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    writer: writer::Writer,
    /// Attempts recorded before leaving whose requests never left (the run stopped first), by
    /// invocation: settling the invocation removes their rows, which would otherwise read
    /// `abandoned`, a request that may have acted.
    unsent: Unsent,
}

/// A database that cannot be opened, read or written, or a `--db` that names none.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Something underneath failed: the database, the disk, the environment.
    #[error("database {}: {cause}", path.display())]
    Failed {
        path: PathBuf,
        #[source]
        cause: Cause,
    },
    /// `--db`, or a file SQLite puts beside it, is a device, a FIFO, a socket or a link.
    #[error(transparent)]
    Refused(OutputError),
    #[error("{}: no such database; run a sweep first or check --db", path.display())]
    Missing { path: PathBuf },
    #[error("{}: no runs recorded yet (the database is empty)", path.display())]
    Empty { path: PathBuf },
}

/// What failed underneath a [`StoreError::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("cannot create: {0}")]
    Create(#[source] std::io::Error),
    #[error("cannot open: {0}")]
    Open(#[source] rusqlite::Error),
    #[error("not a usable SQLite database ({0})")]
    NotSqlite(#[source] rusqlite::Error),
    #[error("cannot switch to WAL journaling (got {mode}); is it on a network file system?")]
    NoWal { mode: String },
    #[error("cannot start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Schema(#[from] MigrationError),
    #[error("{0}")]
    Write(#[from] WriteError),
    /// What stands at the path (or beside it, `beside` says where) is no file SQLite can use.
    #[error("{beside}{}", .refusal.problem())]
    Unusable {
        beside: String,
        #[source]
        refusal: OutputError,
    },
    /// A run's stored options are not the JSON this gemini-sweep reads.
    #[error("run {run_id}'s stored options cannot be read ({source})")]
    Options {
        run_id: i64,
        #[source]
        source: serde_json::Error,
    },
}

/// The error for a database at `path` that cannot be read or written.
pub fn store_error(path: &Path, cause: impl Into<Cause>) -> StoreError {
    StoreError::Failed {
        path: path.to_path_buf(),
        cause: cause.into(),
    }
}

/// Opens (creating it readable by its owner only) and migrates the database, then starts its
/// writer.
pub fn open(path: &Path) -> Result<(Store, WriterThread), StoreError> {
    check_outputs(path)?;
    create_private(path).map_err(|e| store_error(path, Cause::Create(e)))?;
    // NOFOLLOW: a link put at the path since the check is refused, not written through.
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(|e| store_error(path, Cause::Open(e)))?;
    let patience = writer::busy_patience();
    conn.busy_timeout(BUSY_TIMEOUT.min(patience))
        .map_err(|e| store_error(path, e))?;
    // Before anything is written: a file that is not SQLite, or another program's database,
    // is refused untouched.
    migrations::check_identity(&conn).map_err(|e| store_error(path, e))?;
    warn_if_shared(path);
    configure_writer(&conn).map_err(|e| store_error(path, e))?;
    migrations::migrate(&mut conn).map_err(|e| store_error(path, e))?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(|e| store_error(path, e))?;

    let (writer, thread) = writer::Writer::start(conn, path, patience)
        .map_err(|e| store_error(path, Cause::Thread(e)))?;
    Ok((
        Store {
            path: path.to_path_buf(),
            writer,
            unsent: Arc::default(),
        },
        thread,
    ))
}

/// Refuses a `--db` SQLite could not safely write: the database and the files SQLite puts beside
/// it (`-wal`, `-shm`, and `-journal` while it switches to WAL) must each be absent or a regular
/// file. A device, a FIFO, a socket or a link is bad input (exit 2): SQLite would write through
/// a link, or into /dev for `--db /dev/null`. A directory, or a missing one, stays what it was, a
/// database the environment cannot hold (exit 3). Either way before anything is sent.
pub fn check_outputs(path: &Path) -> Result<(), StoreError> {
    use crate::output_file::{derived, file};
    // `beside`: the file SQLite puts beside the database, and what it is.
    let refused = |refusal: OutputError, beside: Option<(&str, &Path)>| -> StoreError {
        if refusal.is_special() {
            return StoreError::Refused(refusal);
        }
        let beside = beside.map_or_else(String::new, |(what, at)| {
            format!("its {what} {}: ", at.display())
        });
        store_error(path, Cause::Unusable { beside, refusal })
    };
    file("--db", path).map_err(|e| refused(e, None))?;
    for (suffix, what) in [
        ("-wal", "WAL file"),
        ("-shm", "shared-memory file"),
        ("-journal", "journal"),
    ] {
        let mut beside = path.as_os_str().to_owned();
        beside.push(suffix);
        let beside = Path::new(&beside);
        derived("--db", path, what, beside).map_err(|e| refused(e, Some((what, beside))))?;
    }
    Ok(())
}

/// Creates the database file with mode 0600 whatever the umask, so the audit trail (and the WAL
/// and shared-memory files, which SQLite creates with the database's mode) is private.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                db = %path.display(),
                "the database is readable by group or others; chmod 600 it (and its -wal and -shm files)"
            );
        }
    }
}

fn configure_writer(conn: &Connection) -> Result<(), Cause> {
    // Must run outside any transaction.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(Cause::NotSqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Cause::NoWal { mode });
    }
    // FULL: a commit is on disk before the writer answers, so an order id (or a nonce mark) that
    // was reported committed survives a power cut too, not only a process crash. Commits are
    // grouped, so one fsync serves every request that arrived meanwhile.
    Ok(conn.execute_batch("PRAGMA synchronous = FULL;")?)
}

/// Opens a connection that only reads, for reports and summaries; works while a run is writing.
/// A database written by an older gemini-sweep is upgraded first (the only write a report makes).
///
/// It is opened read-write with `query_only` on, not `SQLITE_OPEN_READ_ONLY`: the last connection
/// to close a WAL database checkpoints it and removes its `-wal` and `-shm` files, which a
/// read-only connection cannot do, so they stayed beside the database after every report.
/// SQLite falls back to reading only when the file is not writable, as before.
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.is_file() {
        let path = path.to_path_buf();
        return Err(StoreError::Missing { path });
    }
    let open = || -> Result<(Connection, i64), StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| store_error(path, Cause::Open(e)))?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| store_error(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store_error(path, e))?;
        let version = migrations::check_identity(&conn).map_err(|e| store_error(path, e))?;
        Ok((conn, version))
    };
    let (conn, version) = open()?;
    if version == 0 {
        let path = path.to_path_buf();
        return Err(StoreError::Empty { path });
    }
    if version == schema_version() {
        return Ok(conn);
    }
    drop(conn);
    let mut upgrade = Connection::open(path).map_err(|e| store_error(path, e))?;
    upgrade
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| store_error(path, e))?;
    migrations::migrate(&mut upgrade).map_err(|e| store_error(path, e))?;
    drop(upgrade);
    tracing::info!(db = %path.display(), "upgraded the database from schema {version} to {}", schema_version());
    Ok(open()?.0)
}

pub fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The attempt, recorded before leaving, never left: its row goes when its invocation is
    /// settled.
    pub fn never_sent(&self, invocation_id: Option<i64>, attempt_id: i64) {
        never_sent(&self.unsent, invocation_id, attempt_id);
    }

    /// Queues `work` for the writer without waiting for it (see `writer`).
    fn queue<F>(&self, work: F) -> Result<(), StoreError>
    where
        F: FnMut(&Connection) -> rusqlite::Result<()> + Send + 'static,
    {
        self.writer
            .queue(work)
            .map_err(|e| store_error(&self.path, e))
    }

    /// Waits until everything queued so far is written; errs if any of it could not be.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.exec(|_| Ok(())).await
    }

    /// Why a queued record could not be written, if one could not: the run was cut short.
    pub fn write_failure(&self) -> Option<StoreError> {
        self.writer.failure().map(|e| store_error(&self.path, e))
    }

    /// Runs `work` in the writer's next transaction; resolves once it is committed.
    async fn exec<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.writer
            .exec(work)
            .await
            .map_err(|e| store_error(&self.path, e))
    }
}

type Unsent = Arc<Mutex<HashMap<Option<i64>, Vec<i64>>>>;

fn never_sent(unsent: &Unsent, invocation_id: Option<i64>, attempt_id: i64) {
    unsent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(invocation_id)
        .or_default()
        .push(attempt_id);
}

fn unsent_of(unsent: &Unsent, invocation_id: Option<i64>) -> Vec<i64> {
    unsent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&invocation_id)
        .cloned()
        .unwrap_or_default()
}
