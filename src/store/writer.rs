//! The one writer thread.
//!
//! A `Connection` cannot be shared across `.await`s, and one writer means no writer ever waits on
//! another. Async callers send it jobs and await the commit: when a job's future resolves, what
//! it wrote is on disk (`synchronous = FULL`). Jobs that arrive together are committed in one
//! transaction (one fsync for all of them), each inside its own savepoint so one failing job
//! cannot take the others with it.
//!
//! Some jobs are queued without anyone waiting for them ([`Writer::queue`]): the record of a
//! reply, whose caller has nothing to wait for but must not be lost. The queue is first in,
//! first out, so whatever is written after them (the next request's write-ahead row, the run's
//! settlement) is committed after them, and a crash leaves a prefix of the queue on disk. If one
//! of them fails, the writer fails every later job except a run's last word, so nothing else is
//! sent, and the run's settlement reads the failure ([`Writer::failure`]).

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

/// How long the writer keeps retrying a batch while another connection (an auditor's sqlite3
/// holding a write lock) keeps the database locked, before the jobs fail. A run whose writes
/// fail stops sending (nothing may leave without its row), so this is also how long a locked
/// database may hold a run up. Tests shorten it for every job but a run's last word (see
/// [`JobOptions::last_word`]) with `GEMINI_SWEEP_BUSY_PATIENCE_MS`.
pub(super) const BUSY_PATIENCE: Duration = Duration::from_secs(120);
/// At most this many jobs share one transaction.
const MAX_BATCH: usize = 512;

/// Why the writer did not write a job. Cheap to clone: one SQLite error is delivered to every
/// job of a batch it failed, and kept as the writer's poison.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// SQLite refused the job (or the batch's commit).
    #[error("{0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// A reply's record queued before this job could not be written: nothing after it is.
    #[error("an earlier record could not be written: {0}")]
    EarlierLost(#[source] Arc<rusqlite::Error>),
    #[error("the writer thread has stopped")]
    Stopped,
    /// A job reported done without its output (a bug).
    #[error("the job produced no output")]
    NoOutput,
}

impl WriteError {
    fn sqlite(e: rusqlite::Error) -> WriteError {
        WriteError::Sqlite(Arc::new(e))
    }

    /// What later jobs are told once this one, queued, failed.
    fn lost(&self) -> WriteError {
        match self {
            WriteError::Sqlite(e) | WriteError::EarlierLost(e) => {
                WriteError::EarlierLost(e.clone())
            }
            other => other.clone(),
        }
    }
}

/// A unit of work for the writer. `run` may be called again after a busy database rolled the
/// batch back, so it must not have effects outside the transaction that matter twice.
trait Job: Send {
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Delivers the outcome once the batch is committed (or has failed).
    fn deliver(self: Box<Self>, result: Result<(), WriteError>);
    /// See [`JobOptions::last_word`].
    fn last_word(&self) -> bool;
    /// Nobody waits for it: its failure poisons the writer.
    fn queued(&self) -> bool;
}

/// What a job needs beyond its work.
#[derive(Default)]
pub(super) struct JobOptions {
    /// The record of how a run ended: it waits out a locked database for the full
    /// [`BUSY_PATIENCE`] whatever the other jobs' patience, since nothing else will record it.
    pub last_word: bool,
    /// Queued by [`Writer::queue`]: nobody waits for the outcome.
    pub queued: bool,
}

struct TypedJob<T, F> {
    work: F,
    output: Option<T>,
    options: JobOptions,
    reply: oneshot::Sender<Result<T, WriteError>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.output = Some((self.work)(conn)?);
        Ok(())
    }

    fn deliver(self: Box<Self>, result: Result<(), WriteError>) {
        let TypedJob { output, reply, .. } = *self;
        let answer = result.and_then(|()| output.ok_or(WriteError::NoOutput));
        // A caller that has gone no longer wants the answer.
        let _ = reply.send(answer);
    }

    fn last_word(&self) -> bool {
        self.options.last_word
    }

    fn queued(&self) -> bool {
        self.options.queued
    }
}

/// The sending side of the writer's queue. Cloneable; the thread ends when the last one drops.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Why a queued job failed, once one has.
    poison: Poison,
}

type Poison = Arc<Mutex<Option<WriteError>>>;

fn poisoned(poison: &Poison) -> Option<WriteError> {
    poison.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The writer's patience with a locked database: [`BUSY_PATIENCE`], or what the test-only
/// `GEMINI_SWEEP_BUSY_PATIENCE_MS` sets (bounded to 1 ms ..= [`BUSY_PATIENCE`]).
pub(super) fn busy_patience() -> Duration {
    std::env::var("GEMINI_SWEEP_BUSY_PATIENCE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(BUSY_PATIENCE, |ms| {
            Duration::from_millis(ms).clamp(Duration::from_millis(1), BUSY_PATIENCE)
        })
}

pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to finish its queue and checkpoint the WAL into the main file.
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Writer {
    pub(super) fn start(
        conn: Connection,
        path: &Path,
        patience: Duration,
    ) -> Result<(Writer, WriterThread), std::io::Error> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let thread_path = path.to_path_buf();
        let poison = Poison::default();
        let thread_poison = poison.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, queue, &thread_path, patience, &thread_poison))?;
        Ok((Writer { jobs, poison }, WriterThread(handle)))
    }

    /// Why a queued job could not be written, if one could not.
    pub(super) fn failure(&self) -> Option<WriteError> {
        poisoned(&self.poison)
    }

    /// Queues `work` for the writer's next transaction and returns at once; nobody hears how it
    /// went, but if it fails every later job fails too (see the module's docs). Errs only when
    /// the writer has stopped or an earlier queued job failed.
    pub(super) fn queue<F>(&self, work: F) -> Result<(), WriteError>
    where
        F: FnMut(&Connection) -> rusqlite::Result<()> + Send + 'static,
    {
        self.submit(
            work,
            JobOptions {
                queued: true,
                ..JobOptions::default()
            },
        )
        .map(drop)
    }

    /// Runs `work` in the writer's next transaction and resolves once it is committed.
    pub(super) async fn exec<T, F>(&self, work: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.exec_with(work, JobOptions::default()).await
    }

    /// [`Writer::exec`] with every option.
    pub(super) async fn exec_with<T, F>(
        &self,
        work: F,
        options: JobOptions,
    ) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(work, options)?
            .await
            .map_err(|_| WriteError::Stopped)?
    }

    /// Hands the job to the writer (refused once a queued job has failed, unless it is a run's
    /// last word) and returns where its outcome will be delivered.
    fn submit<T, F>(
        &self,
        work: F,
        options: JobOptions,
    ) -> Result<oneshot::Receiver<Result<T, WriteError>>, WriteError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Some(why) = self.failure()
            && !options.last_word
        {
            return Err(why);
        }
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            work,
            output: None,
            options,
            reply,
        };
        self.jobs
            .send(Box::new(job))
            .map_err(|_| WriteError::Stopped)?;
        Ok(answer)
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn is_out_of_space(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
    )
}

fn writer_loop(
    mut conn: Connection,
    queue: mpsc::Receiver<Box<dyn Job>>,
    path: &Path,
    patience: Duration,
    poison: &Poison,
) {
    let (mut batches, mut jobs) = (0u64, 0u64);
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        if let Some(why) = poisoned(poison) {
            // Only a run's last word is still written: it records that the run was cut short.
            let (written, refused): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|job| job.last_word());
            for job in refused {
                job.deliver(Err(why.clone()));
            }
            if written.is_empty() {
                continue;
            }
            batch = written;
        }
        batches += 1;
        jobs += batch.len() as u64;
        let started = Instant::now();
        let patience = if batch.iter().any(|job| job.last_word()) {
            patience.max(BUSY_PATIENCE)
        } else {
            patience
        };
        let last_word = batch.iter().any(|job| job.last_word());
        let mut made_room = false;
        let results = loop {
            match run_batch(&mut conn, &mut batch) {
                Ok(results) => break results,
                Err(e) if is_busy(&e) && started.elapsed() < patience => {
                    tracing::warn!(db = %path.display(), "database is locked by another connection; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                // A full disk (or a file at its size limit) fails the run's writes, and the run
                // stops; its end is still worth one try after moving the WAL into the database
                // and truncating it, which gives back the space the WAL held.
                Err(e) if last_word && !made_room && is_out_of_space(&e) => {
                    made_room = true;
                    tracing::warn!(db = %path.display(), error = %e, "cannot write the database; checkpointing its WAL to make room for the run's end");
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                        tracing::warn!(db = %path.display(), error = %e, "the checkpoint failed too");
                    }
                }
                Err(e) => {
                    let failed = WriteError::sqlite(e);
                    break batch.iter().map(|_| Err(failed.clone())).collect();
                }
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            if let Err(e) = &result
                && job.queued()
            {
                let mut poison = poison.lock().unwrap_or_else(|e| e.into_inner());
                if poison.is_none() {
                    tracing::error!(db = %path.display(), error = %e, "a reply could not be recorded; nothing more is written or sent");
                    *poison = Some(e.lost());
                }
            }
            job.deliver(result);
        }
    }
    tracing::debug!(
        batches,
        jobs,
        "writer done: {:.1} jobs per commit",
        jobs as f64 / batches.max(1) as f64
    );
    // Leave one self-contained file behind for the auditors.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(db = %path.display(), error = %e, "WAL checkpoint at close failed");
    }
}

fn run_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn Job>],
) -> rusqlite::Result<Vec<Result<(), WriteError>>> {
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    // A queued job that failed: nothing after it is written but a run's last word.
    let mut lost: Option<WriteError> = None;
    for job in batch.iter_mut() {
        if let Some(why) = &lost
            && !job.last_word()
        {
            results.push(Err(why.clone()));
            continue;
        }
        let savepoint = tx.savepoint()?;
        match job.run(&savepoint) {
            Ok(()) => {
                savepoint.commit()?;
                results.push(Ok(()));
            }
            Err(e) if is_busy(&e) => return Err(e),
            // Dropping the savepoint rolls back just this job.
            Err(e) => {
                let failed = WriteError::sqlite(e);
                if job.queued() && lost.is_none() {
                    lost = Some(failed.lost());
                }
                results.push(Err(failed));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}
