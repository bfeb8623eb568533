//! A run's lifecycle: its first invocation, each resume as an invocation of its own, its
//! accounts' outcomes, its settlement, and the runs a dead process left behind.
//!
//! Nothing here rewrites the past: a run's options, pid and base URL are the first invocation's
//! and stay; each resume records its own in `invocations`. Only current state (a run's status,
//! an account's status) changes.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::attempts::discard_rows;
use super::{
    AccountFailure, AccountStatus, Action, Phase, RunStatus, Store, StoreError, epoch_ms, utc_text,
};
use crate::exit::{self, Exit, StopSignal};

/// What a new run records before anything is sent.
pub struct NewRun {
    pub base_url: String,
    pub key_fingerprint: String,
    pub group_name: String,
    pub options_json: String,
    pub verify: bool,
    pub accounts: Vec<NewRunAccount>,
}

#[derive(Clone)]
pub struct NewRunAccount {
    pub account: String,
    pub csv_line: u64,
    pub note: Option<String>,
    pub enabled: bool,
}

/// A later invocation picking up some of a run's accounts.
pub struct Resume {
    pub run_id: i64,
    pub base_url: String,
    pub options_json: String,
    pub verify: bool,
    pub accounts: Vec<String>,
}

/// An account's outcome in this invocation.
pub struct AccountFinish {
    pub run_id: i64,
    pub account: String,
    pub status: AccountStatus,
    pub failure: Option<AccountFailure>,
    pub last_error: Option<String>,
}

/// How an invocation ends.
pub struct Settle {
    pub run_id: i64,
    pub invocation_id: i64,
    /// An internal or database error stopped the sweep.
    pub aborted: bool,
    /// Why the key stopped sending, if it did.
    pub halt: Option<exit::KeyHalt>,
    /// A status the accounts cannot tell (the group's accounts could not be listed, or a signal
    /// came before they were): it wins over what the accounts say, unless aborted or refused.
    pub forced: Option<RunStatus>,
    /// Why the sweep stopped before finishing its accounts, if it did.
    pub stop_reason: Option<String>,
    /// The signal that stopped the run, if any: with the status, it decides the exit code
    /// recorded for the invocation ([`Exit::of_run`]).
    pub signal: Option<StopSignal>,
    /// How long the invocation held the group after its sweep, and the cycles it completed.
    pub hold: Option<(std::time::Duration, u64)>,
}

/// A run whose process died, found by the next invocation that took the database's lock.
#[derive(Debug, Clone)]
pub struct TakenOver {
    pub run_id: i64,
    pub pid: i64,
    pub abandoned_attempts: i64,
}

fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

impl Store {
    /// Records a new run, its first invocation and its accounts; returns (run id, invocation id).
    pub async fn begin_run(&self, run: NewRun) -> Result<(i64, i64), StoreError> {
        let now = now_ms();
        let pid = std::process::id() as i64;
        self.exec(move |c| {
            c.execute(
                concat!(
                    "INSERT INTO runs (started_at, status, base_url, key_fingerprint, options, pid,
                        tool_version, group_name)
                     VALUES (",
                    utc_text!("?1"),
                    ", 'running', ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    now,
                    run.base_url,
                    run.key_fingerprint,
                    run.options_json,
                    pid,
                    env!("CARGO_PKG_VERSION"),
                    run.group_name
                ],
            )?;
            let run_id = c.last_insert_rowid();
            let enabled = run.accounts.iter().filter(|a| a.enabled).count() as i64;
            let invocation_id = insert_invocation(
                c,
                run_id,
                "start",
                now,
                &run.base_url,
                &run.options_json,
                enabled,
            )?;
            let mut insert = c.prepare(
                "INSERT INTO run_accounts (run_id, account, csv_line, note, status, verify_wanted)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for a in &run.accounts {
                let status = if a.enabled { "pending" } else { "skipped" };
                insert.execute(params![
                    run_id,
                    a.account,
                    a.csv_line as i64,
                    a.note,
                    status,
                    run.verify
                ])?;
            }
            Ok((run_id, invocation_id))
        })
        .await
    }

    /// Adds the accounts a discovery found to a run recorded without them (`source`:
    /// `discovery`), and counts the enabled ones as the invocation's accounts.
    pub async fn add_accounts(
        &self,
        run_id: i64,
        invocation_id: i64,
        accounts: Vec<NewRunAccount>,
        verify: bool,
    ) -> Result<(), StoreError> {
        self.exec(move |c| {
            let mut insert = c.prepare_cached(
                "INSERT INTO run_accounts (run_id, account, csv_line, note, status, verify_wanted, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'discovery')",
            )?;
            for a in &accounts {
                let status = if a.enabled { "pending" } else { "skipped" };
                insert.execute(params![
                    run_id,
                    a.account,
                    a.csv_line as i64,
                    a.note,
                    status,
                    verify
                ])?;
            }
            c.execute(
                "UPDATE invocations SET accounts = ?2 WHERE invocation_id = ?1",
                params![
                    invocation_id,
                    accounts.iter().filter(|a| a.enabled).count() as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Records what the run's listing of the group proves: `possibly_incomplete` is whether the
    /// pages may have missed accounts; `note`, why the run cannot vouch for every account (it
    /// keeps the run from `completed` in this and every later invocation; see [`Store::settle`]).
    pub async fn record_listing(
        &self,
        run_id: i64,
        possibly_incomplete: bool,
        note: Option<String>,
    ) -> Result<(), StoreError> {
        self.exec(move |c| {
            c.execute(
                "UPDATE runs SET listing = ?2, listing_note = ?3 WHERE run_id = ?1",
                params![
                    run_id,
                    if possibly_incomplete {
                        "possibly_incomplete"
                    } else {
                        "complete"
                    },
                    note
                ],
            )
            .map(|_| ())
        })
        .await
    }

    /// Records a resume as a new invocation and puts the accounts it picks up back to pending.
    /// Returns the invocation id.
    pub async fn begin_resume(&self, resume: Resume) -> Result<i64, StoreError> {
        let now = now_ms();
        self.exec(move |c| {
            let invocation_id = insert_invocation(
                c,
                resume.run_id,
                "resume",
                now,
                &resume.base_url,
                &resume.options_json,
                resume.accounts.len() as i64,
            )?;
            c.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, stop_reason = NULL
                 WHERE run_id = ?1",
                [resume.run_id],
            )?;
            let mut reset = c.prepare_cached(
                "UPDATE run_accounts SET status = 'pending', failure = NULL, finished_at = NULL,
                    verify_wanted = ?3
                 WHERE run_id = ?1 AND account = ?2",
            )?;
            for account in &resume.accounts {
                reset.execute(params![resume.run_id, account, resume.verify])?;
            }
            Ok(invocation_id)
        })
        .await
    }

    /// Marks runs left `running` by a process that died as `died`, and their unanswered attempts
    /// as abandoned. Call it holding the database's lock: then no live process owns them.
    pub async fn take_over_dead_runs(&self) -> Result<Vec<TakenOver>, StoreError> {
        let now = now_ms();
        self.exec(move |c| {
            let mut stmt = c.prepare("SELECT run_id, pid FROM runs WHERE status = 'running'")?;
            let dead = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut taken = Vec::with_capacity(dead.len());
            for (run_id, first_pid) in dead {
                let pid: i64 = c.query_row(
                    "SELECT coalesce(max(pid), ?2) FROM invocations
                     WHERE run_id = ?1 AND status = 'running'",
                    params![run_id, first_pid],
                    |r| r.get(0),
                )?;
                let abandoned = abandon_in_flight(
                    c,
                    "invocation_id IN (SELECT invocation_id FROM invocations WHERE run_id = ?1)",
                    run_id,
                )?;
                c.execute(
                    concat!(
                        "UPDATE invocations SET status = 'died', ended_at = ",
                        utc_text!("?2"),
                        " WHERE run_id = ?1 AND status = 'running'"
                    ),
                    params![run_id, now],
                )?;
                c.execute(
                    "UPDATE runs SET status = 'died' WHERE run_id = ?1",
                    [run_id],
                )?;
                taken.push(TakenOver {
                    run_id,
                    pid,
                    abandoned_attempts: abandoned,
                });
            }
            Ok(taken)
        })
        .await
    }

    /// The account's orders the run's cancel-alls reported rejected and none has cancelled since.
    pub async fn still_rejected(&self, run_id: i64, account: &str) -> Result<Vec<u64>, StoreError> {
        let account = account.to_owned();
        self.exec(move |c| {
            c.prepare_cached(
                "SELECT r.order_id FROM cancel_rejects r
                 WHERE r.run_id = ?1 AND r.account = ?2
                   AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                                   WHERE c.run_id = r.run_id AND c.account = r.account
                                     AND c.order_id = r.order_id)",
            )?
            .query_map(params![run_id, account], |r| r.get::<_, i64>(0))?
            .map(|id| id.map(|id| id as u64))
            .collect()
        })
        .await
    }

    /// The run's accounts whose cancel-all went through (swept, or left with rejects), in the
    /// accounts file's order: those a hold keeps flat.
    pub async fn cancelled_accounts(&self, run_id: i64) -> Result<Vec<String>, StoreError> {
        self.exec(move |c| {
            c.prepare_cached(
                "SELECT account FROM run_accounts
                 WHERE run_id = ?1 AND status IN ('swept', 'rejects_left')
                 ORDER BY csv_line, account",
            )?
            .query_map([run_id], |r| r.get(0))?
            .collect()
        })
        .await
    }

    /// For a resumed account: the last attempt number used, and whether its snapshot was taken.
    pub async fn account_progress(
        &self,
        run_id: i64,
        account: &str,
    ) -> Result<(u32, bool), StoreError> {
        let account = account.to_owned();
        self.exec(move |c| {
            c.query_row(
                "SELECT (SELECT coalesce(max(attempt_no), 0) FROM attempts
                         WHERE run_id = ?1 AND account = ?2),
                        (SELECT snapshot_attempt_id IS NOT NULL FROM run_accounts
                         WHERE run_id = ?1 AND account = ?2)",
                params![run_id, account],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, bool>(1)?)),
            )
        })
        .await
    }

    /// Whether the account has a cancel-all in this run whose reply never arrived, and if so
    /// from when its order history must be read (ms since the epoch; `None`: from the start).
    /// See the view `unreported_cancels` for how the history is then read.
    pub async fn history_needed(
        &self,
        run_id: i64,
        account: &str,
    ) -> Result<Option<Option<i64>>, StoreError> {
        let account = account.to_owned();
        self.exec(move |c| {
            let (lost, unbounded, floor): (i64, i64, Option<i64>) = c.query_row(
                "WITH lost AS (
                     SELECT (SELECT CAST((julianday(max(y.sent_at)) - 2440587.5) * 86400000.0
                                         AS INTEGER) - 5000
                             FROM attempts y
                             WHERE y.account = x.account
                               AND y.key_fingerprint = x.key_fingerprint
                               AND y.endpoint = '/v1/order/cancel/all' AND y.outcome = 'ok'
                               AND y.attempt_id < x.attempt_id) AS floor_ms
                     FROM attempts x
                     WHERE x.run_id = ?1 AND x.account = ?2
                       AND x.endpoint = '/v1/order/cancel/all'
                       AND (x.outcome = 'abandoned'
                            OR (x.outcome = 'transient'
                                AND coalesce(x.http_status, 500) IN (500, 502, 504))))
                 SELECT count(*),
                        coalesce(sum(floor_ms IS NULL), 0)
                          + (SELECT count(*) FROM cancel_rejects WHERE account = ?2)
                          + (SELECT count(*) FROM open_orders_after WHERE account = ?2),
                        min(floor_ms)
                 FROM lost",
                params![run_id, account],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            // Orders known open after an earlier cancel-all may be older than it: read it all.
            Ok((lost > 0).then_some(if unbounded > 0 { None } else { floor }))
        })
        .await
    }

    /// How many orders of the account the history lists as cancelled that no reply reported.
    pub async fn unreported_cancels(&self, run_id: i64, account: &str) -> Result<i64, StoreError> {
        let account = account.to_owned();
        self.exec(move |c| {
            c.query_row(
                "SELECT count(*) FROM unreported_cancels WHERE run_id = ?1 AND account = ?2",
                params![run_id, account],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Sets the account's outcome and derives its counts from the order tables. Queued, not
    /// awaited (see `writer`): the account's place goes to the next one at once.
    pub fn finish_account(&self, finish: AccountFinish) -> Result<(), StoreError> {
        let now = now_ms();
        self.queue(move |c| {
            c.prepare_cached(concat!(
                "UPDATE run_accounts SET status = ?3, failure = ?4, last_error = ?5, finished_at = ",
                utc_text!("?6"),
                ",
                   cancelled_count = (SELECT count(*) FROM cancelled_orders o
                                      WHERE o.run_id = ?1 AND o.account = ?2),
                   rejected_count = (SELECT count(*) FROM cancel_rejects r
                                     WHERE r.run_id = ?1 AND r.account = ?2
                                       AND NOT EXISTS (SELECT 1 FROM cancelled_orders o
                                           WHERE o.run_id = r.run_id AND o.account = r.account
                                             AND o.order_id = r.order_id))
                 WHERE run_id = ?1 AND account = ?2"
            ))?
            .execute(params![
                finish.run_id,
                finish.account,
                finish.status.as_str(),
                finish.failure.map(AccountFailure::as_str),
                finish.last_error,
                now
            ])
            .map(|_| ())
        })
    }

    /// Ends an invocation: what it sent and never heard back about reads `abandoned`; the run's
    /// status is decided from all its accounts through the same reconciliation view the reports
    /// read; the run and the invocation record it. Returns the status and the exit code.
    pub async fn settle(&self, settle: Settle) -> Result<(RunStatus, Exit), StoreError> {
        let now = now_ms();
        let unsent = self.unsent.clone();
        let writer = self.writer.clone();
        let work = move |c: &Connection| {
            // Read when the job runs: a reply record queued before it that could not be written
            // has poisoned the writer by then, and the run is cut short, whatever its accounts
            // say (what the record would have said is missing from them).
            let lost_record = writer.failure();
            // Read when the job runs: attempts found unsent until then are all in.
            let never_left = super::unsent_of(&unsent, Some(settle.invocation_id));
            forget_unsent(c, settle.invocation_id, &never_left)?;
            abandon_in_flight(c, "invocation_id = ?1", settle.invocation_id)?;
            let listing_note: Option<String> = c.query_row(
                "SELECT listing_note FROM runs WHERE run_id = ?1",
                [settle.run_id],
                |r| r.get(0),
            )?;
            let status = if settle.aborted || lost_record.is_some() {
                RunStatus::Aborted
            } else if settle.halt == Some(exit::KeyHalt::Refused) {
                RunStatus::Refused
            } else if let Some(forced) = settle.forced {
                forced
            } else {
                let (unfinished, dirty): (i64, i64) = c.query_row(
                    "SELECT coalesce(sum(status IN ('pending', 'interrupted')), 0),
                            coalesce(sum(dirty), 0)
                     FROM account_reconciliation WHERE run_id = ?1",
                    [settle.run_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if unfinished > 0 {
                    RunStatus::Interrupted
                } else if dirty > 0 {
                    RunStatus::Incomplete
                } else if listing_note.is_some() {
                    // Every listed account is clean, but the group may have others.
                    RunStatus::Incomplete
                } else {
                    RunStatus::Completed
                }
            };
            let stop_reason = match status {
                RunStatus::Incomplete => settle.stop_reason.clone().or(listing_note),
                _ => settle.stop_reason.clone(),
            }
            .or_else(|| lost_record.as_ref().map(ToString::to_string));
            let exit_code = Exit::of_run(status, settle.signal, settle.halt);
            c.execute(
                concat!(
                    "UPDATE runs SET status = ?2, stop_reason = ?3, ended_at = ",
                    utc_text!("?4"),
                    " WHERE run_id = ?1"
                ),
                params![settle.run_id, status.as_str(), stop_reason, now],
            )?;
            let (hold_ms, hold_cycles) = settle.hold.map_or((None, None), |(took, cycles)| {
                (Some(took.as_millis() as i64), Some(cycles as i64))
            });
            c.execute(
                concat!(
                    "UPDATE invocations SET status = ?2, stop_reason = ?3, exit_code = ?5,
                        hold_ms = ?6, hold_cycles = ?7, ended_at = ",
                    utc_text!("?4"),
                    " WHERE invocation_id = ?1"
                ),
                params![
                    settle.invocation_id,
                    status.as_str(),
                    stop_reason,
                    now,
                    exit_code,
                    hold_ms,
                    hold_cycles
                ],
            )?;
            Ok((status, exit_code))
        };
        let options = super::writer::JobOptions {
            last_word: true,
            ..Default::default()
        };
        self.writer
            .exec_with(work, options)
            .await
            .map_err(|e| super::store_error(&self.path, e))
    }
}

/// Removes the write-ahead rows of attempts that never left (the run stopped between recording
/// a request and sending it), and what recording them counted on their account.
fn forget_unsent(c: &Connection, invocation_id: i64, attempt_ids: &[i64]) -> rusqlite::Result<()> {
    for &attempt_id in attempt_ids {
        let found = c
            .query_row(
                "SELECT run_id, account, phase FROM attempts
                 WHERE attempt_id = ?1 AND invocation_id = ?2 AND outcome = 'in_flight'",
                params![attempt_id, invocation_id],
                |r| {
                    Ok((
                        r.get::<_, Option<i64>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Phase>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((run_id, account, phase)) = found else {
            continue;
        };
        c.execute("DELETE FROM attempts WHERE attempt_id = ?1", [attempt_id])?;
        if phase == Phase::Discover {
            continue;
        }
        c.execute(
            "UPDATE run_accounts SET attempts = max(attempts - 1, 0),
                last_cancel_attempt_id = CASE WHEN last_cancel_attempt_id = ?3
                    THEN (SELECT max(attempt_id) FROM attempts
                          WHERE run_id = ?1 AND account = ?2
                            AND endpoint = '/v1/order/cancel/all')
                    ELSE last_cancel_attempt_id END
             WHERE run_id = ?1 AND account = ?2",
            params![run_id, account, attempt_id],
        )?;
    }
    Ok(())
}

fn insert_invocation(
    c: &Connection,
    run_id: i64,
    kind: &str,
    now: i64,
    base_url: &str,
    options_json: &str,
    accounts: i64,
) -> rusqlite::Result<i64> {
    c.execute(
        concat!(
            "INSERT INTO invocations (run_id, kind, started_at, pid, base_url, options, tool_version,
                accounts, status)
             VALUES (?1, ?2, ",
            utc_text!("?3"),
            ", ?4, ?5, ?6, ?7, ?8, 'running')"
        ),
        params![
            run_id,
            kind,
            now,
            std::process::id() as i64,
            base_url,
            options_json,
            env!("CARGO_PKG_VERSION"),
            accounts
        ],
    )?;
    Ok(c.last_insert_rowid())
}

/// Marks the unanswered attempts selected by `filter` (with `?1` bound to `key`) abandoned, and
/// drops the partial listings they were streaming. Returns how many there were.
fn abandon_in_flight(c: &Connection, filter: &str, key: i64) -> rusqlite::Result<i64> {
    let mut stmt = c.prepare(&format!(
        "SELECT attempt_id, run_id, account, phase, endpoint FROM attempts
         WHERE outcome = 'in_flight' AND {filter}"
    ))?;
    let open = stmt
        .query_map([key], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Phase>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (attempt_id, run_id, account, phase, endpoint) in &open {
        // Ids a cancel-all reply had reported before it broke off stay: the exchange said so.
        // A listing cut short says nothing about the account and would read as complete.
        match Action::recorded(*phase, endpoint) {
            Some(action) if action != Action::Discover && !action.cancels() => {
                discard_rows(c, *run_id, account, action, *attempt_id)?;
            }
            _ => {}
        }
    }
    c.execute(
        &format!(
            "UPDATE attempts SET outcome = 'abandoned',
                error_message = 'sent, but the reply was never read (the process stopped waiting)'
             WHERE outcome = 'in_flight' AND {filter}"
        ),
        [key],
    )?;
    Ok(open.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Nonce, NonceMode};
    use crate::store::{AttemptStart, Sent};

    fn start(run_id: i64, invocation_id: i64, attempt_no: u32, action: Action) -> AttemptStart {
        AttemptStart {
            run_id: Some(run_id),
            invocation_id: Some(invocation_id),
            account: "acct-1".into(),
            attempt_no,
            action,
            key_fingerprint: "master:00".into(),
            nonce: Nonce {
                value_us: 1_700_000_000_000_000 + u64::from(attempt_no) * 1000,
                mode: NonceMode::Increasing,
            },
        }
    }

    async fn begin(store: &crate::store::Store, start: AttemptStart) -> Result<Sent, StoreError> {
        let mut sent = store.begin_attempts(vec![start]).await?;
        Ok(sent.remove(0))
    }

    /// A store at `path` with a run of one account, `acct-1`.
    async fn one_account_run(
        path: &std::path::Path,
        verify: bool,
    ) -> (crate::store::Store, crate::store::WriterThread, i64, i64) {
        let (store, writer) = crate::store::open(path).unwrap();
        let (run_id, invocation_id) = store
            .begin_run(NewRun {
                base_url: "https://api.gemini.com/".into(),
                key_fingerprint: "master:00".into(),
                group_name: "default".into(),
                options_json: "{}".into(),
                verify,
                accounts: vec![NewRunAccount {
                    account: "acct-1".into(),
                    csv_line: 1,
                    note: None,
                    enabled: true,
                }],
            })
            .await
            .unwrap();
        (store, writer, run_id, invocation_id)
    }

    /// A request recorded but never sent leaves no row once the run is settled; the one that
    /// left keeps its own.
    #[tokio::test]
    async fn requests_that_never_left_leave_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let (store, writer, run_id, invocation_id) = one_account_run(&path, true).await;
        let sent = begin(&store, start(run_id, invocation_id, 1, Action::Cancel))
            .await
            .unwrap();
        let unsent = begin(&store, start(run_id, invocation_id, 2, Action::Cancel))
            .await
            .unwrap();
        store.never_sent(Some(invocation_id), unsent.attempt_id);

        let (status, _) = store
            .settle(Settle {
                run_id,
                invocation_id,
                aborted: true,
                halt: None,
                forced: None,
                stop_reason: Some("aborted: a test".into()),
                signal: None,
                hold: None,
            })
            .await
            .unwrap();
        assert_eq!(status, RunStatus::Aborted);
        drop(store);
        writer.join();

        let conn = Connection::open(&path).unwrap();
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT attempt_id, outcome FROM attempts ORDER BY attempt_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [(sent.attempt_id, "abandoned".to_string())]);
        let (attempts, last_cancel): (i64, i64) = conn
            .query_row(
                "SELECT attempts, last_cancel_attempt_id FROM run_accounts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((attempts, last_cancel), (1, sent.attempt_id));
    }

    /// A record queued without waiting that cannot be written stops everything after it: the
    /// next request's row (so it is never sent) and a flush; the run's end is still written, and
    /// reads aborted with the reason, whatever its accounts say.
    #[tokio::test]
    async fn a_queued_record_that_fails_cuts_the_run_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let (store, writer, run_id, invocation_id) = one_account_run(&path, false).await;
        // Queued back to back, so the failing record and the next row share a transaction.
        store
            .queue(|c| {
                c.execute("INSERT INTO no_such_table VALUES (1)", [])
                    .map(|_| ())
            })
            .unwrap();
        let next = begin(&store, start(run_id, invocation_id, 1, Action::Cancel));
        assert!(next.await.is_err(), "the next request's row is refused");
        assert!(store.write_failure().is_some());
        assert!(store.flush().await.is_err());
        assert!(
            store
                .queue(|_| panic!("nothing is queued after a lost record"))
                .is_err()
        );

        let (status, exit_code) = store
            .settle(Settle {
                run_id,
                invocation_id,
                aborted: false,
                halt: None,
                forced: Some(RunStatus::Completed),
                stop_reason: None,
                signal: None,
                hold: None,
            })
            .await
            .unwrap();
        assert_eq!(status, RunStatus::Aborted);
        assert_ne!(exit_code, crate::exit::Exit::Ok);
        drop(store);
        writer.join();

        let conn = Connection::open(&path).unwrap();
        let (attempts, reason): (i64, String) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM attempts), stop_reason FROM runs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(attempts, 0);
        assert!(reason.contains("could not be written"), "{reason}");
    }
}
