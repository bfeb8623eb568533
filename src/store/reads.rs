//! What the engine and the command line read back: which accounts a resume picks up, a run's
//! totals for the summary line, and which runs the latest job worked on. The totals go through
//! the reconciliation views, so they say exactly what `report` and an auditor's sqlite3 say.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Listing, RunStatus};

/// What `--resume` needs of an earlier run.
pub struct Resumable {
    pub run_id: i64,
    pub status: RunStatus,
    pub started_at: String,
    /// Seconds since the run started, by the database's clock.
    pub age_secs: f64,
    pub key_fingerprint: String,
    pub group_name: String,
    /// The latest invocation's base URL and options: what a resume carries on with.
    pub base_url: String,
    pub options_json: String,
    /// The latest invocation's process, for "taking it over" messages.
    pub pid: i64,
    /// Accounts not done: every enabled account that is not swept (and, where verification was
    /// asked for, verified flat), except those the exchange refused for good unless asked.
    pub accounts: Vec<String>,
}

pub fn resumable(
    conn: &Connection,
    run_id: i64,
    retry_permanent: bool,
) -> rusqlite::Result<Option<Resumable>> {
    let Some(mut found) = conn
        .query_row(
            "SELECT r.run_id, r.status, r.started_at,
                    (julianday('now') - julianday(r.started_at)) * 86400.0,
                    r.key_fingerprint, r.group_name, i.base_url, i.options, i.pid
             FROM runs r
             JOIN invocations i ON i.invocation_id =
                 (SELECT max(invocation_id) FROM invocations WHERE run_id = r.run_id)
             WHERE r.run_id = ?1",
            [run_id],
            |r| {
                Ok(Resumable {
                    run_id: r.get(0)?,
                    status: r.get(1)?,
                    started_at: r.get(2)?,
                    age_secs: r.get(3)?,
                    key_fingerprint: r.get(4)?,
                    group_name: r.get(5)?,
                    base_url: r.get(6)?,
                    options_json: r.get(7)?,
                    pid: r.get(8)?,
                    accounts: Vec::new(),
                })
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT account FROM account_reconciliation
         WHERE run_id = ?1 AND dirty AND (?2 OR failure IS NOT 'account_refused')
         ORDER BY csv_line, account",
    )?;
    found.accounts = stmt
        .query_map(params![run_id, retry_permanent], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(found))
}

/// The run `run` names (`latest` or an id), within `group` when one is given.
pub fn resolve_run(
    conn: &Connection,
    run: &str,
    group: Option<&str>,
) -> rusqlite::Result<Option<i64>> {
    if run == "latest" {
        return conn
            .query_row(
                "SELECT max(run_id) FROM runs WHERE ?1 IS NULL OR group_name = ?1",
                [group],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten);
    }
    let Ok(id) = run.parse::<i64>() else {
        return Ok(None);
    };
    conn.query_row(
        "SELECT run_id FROM runs WHERE run_id = ?1 AND (?2 IS NULL OR group_name = ?2)",
        rusqlite::params![id, group],
        |r| r.get(0),
    )
    .optional()
}

/// A run the latest job worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub run_id: i64,
    pub group: String,
}

/// The runs the latest job worked on (started or resumed), oldest first: those of the
/// invocations at the end of the table made by the latest invocation's process. A job of
/// several groups (`run --config`) is one process with an invocation per group, and the
/// database's lock keeps two processes from interleaving theirs. The schema records no job id:
/// should two jobs in a row get the same pid, they read as one. Empty before any invocation.
pub fn latest_job(conn: &Connection) -> rusqlite::Result<Vec<JobRun>> {
    // One row per process and group: a table small enough to scan.
    let mut stmt = conn.prepare(
        "WITH last AS (SELECT pid FROM invocations ORDER BY invocation_id DESC LIMIT 1),
              bound AS (SELECT coalesce(max(i.invocation_id), 0) AS id
                        FROM invocations i, last WHERE i.pid <> last.pid)
         SELECT DISTINCT i.run_id, r.group_name
         FROM invocations i JOIN runs r ON r.run_id = i.run_id, bound
         WHERE i.invocation_id > bound.id
         ORDER BY i.run_id",
    )?;
    let runs = stmt.query_map([], |r| {
        Ok(JobRun {
            run_id: r.get(0)?,
            group: r.get(1)?,
        })
    })?;
    runs.collect()
}

/// The group a run (given by id) belongs to.
pub fn run_group(conn: &Connection, run: &str) -> rusqlite::Result<Option<String>> {
    let Ok(id) = run.parse::<i64>() else {
        return Ok(None);
    };
    conn.query_row("SELECT group_name FROM runs WHERE run_id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()
}

/// A run's totals, read back from the database so the summary and the audit trail cannot differ.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RunTotals {
    pub run_id: i64,
    pub group: String,
    pub status: RunStatus,
    pub stop_reason: Option<String>,
    pub accounts_total: i64,
    /// Swept, nothing left rejected, and verified flat (or swept without verification when
    /// --no-verify was given).
    pub accounts_ok: i64,
    pub accounts_rejects_left: i64,
    pub accounts_failed: i64,
    pub accounts_skipped: i64,
    /// Pending or interrupted: a resume picks them up.
    pub accounts_unfinished: i64,
    /// The run stopped before any request for them.
    pub accounts_not_attempted: i64,
    /// Cancel-all went through but no listing after it says the account is flat, although
    /// verification was asked for.
    pub accounts_unverified: i64,
    pub orders_cancelled: i64,
    pub orders_rejected: i64,
    /// Open in a verified listing after the sweep.
    pub orders_still_open: i64,
    /// Listed before, neither cancelled nor rejected, and not verified since: possibly open.
    pub orders_unverified: i64,
    pub attempts: i64,
    pub rate_limited: i64,
    pub nonce_refused: i64,
    pub abandoned: i64,
    /// From the run's start to the reply of its last accepted cancel-all; `None` while some
    /// account (not skipped) has no accepted cancel-all.
    pub time_to_flat_ms: Option<i64>,
    /// From the run's start to the reply of the listing that proved its last account flat;
    /// `None` while some account (not skipped) is not proven flat.
    pub time_to_proven_flat_ms: Option<i64>,
    /// A discovery run's listing: `complete` or `possibly_incomplete` (absent for a CSV run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
    /// Why the run cannot vouch for every account of the group, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing_note: Option<String>,
    /// With `--hold`: what holding the group flat after the sweep did (absent without a hold).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldTotals>,
    /// Cancelled orders the exchange's history lists that no reply reported, after replies were
    /// lost (the view `unreported_cancels`); absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub unreported_cancels: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What the hold after a run's sweep did, over every invocation of the run that held.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HoldTotals {
    pub hold_ms: i64,
    /// Full cycles: every held account listed once in each.
    pub hold_cycles: i64,
    /// Cancel-alls the hold sent for orders that appeared, and went through.
    pub hold_recancels: i64,
    /// The accounts those cancel-alls were for.
    pub hold_recancelled_accounts: Vec<String>,
    /// When the hold last sent a listing that found an order appeared, which it then cancelled
    /// (UTC), if it did.
    pub last_order_seen_at: Option<String>,
}

/// The hold's columns of [`run_totals`]'s row (24 on), if the run held.
fn hold_totals(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<HoldTotals>> {
    let Some(hold_ms) = row.get::<_, Option<i64>>(24)? else {
        return Ok(None);
    };
    let accounts: String = row.get(27)?;
    let accounts = serde_json::from_str(&accounts).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(27, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Some(HoldTotals {
        hold_ms,
        hold_cycles: row.get(25)?,
        hold_recancels: row.get(26)?,
        hold_recancelled_accounts: accounts,
        last_order_seen_at: row.get(28)?,
    }))
}

pub fn run_totals(conn: &Connection, run_id: i64) -> rusqlite::Result<RunTotals> {
    conn.query_row(
        "SELECT r.run_id, r.group_name, r.status, r.stop_reason,
                x.accounts, x.ok, x.rejects_left, x.failed, x.skipped, x.unfinished,
                x.not_attempted, x.unverified_accounts, x.cancelled, x.rejected, x.open_after,
                x.unverified_orders,
                (SELECT count(*) FROM attempts t WHERE t.run_id = r.run_id),
                (SELECT count(*) FROM attempts t WHERE t.run_id = r.run_id AND t.http_status = 429),
                (SELECT count(*) FROM attempts t WHERE t.run_id = r.run_id AND t.error_reason = 'InvalidNonce'),
                (SELECT count(*) FROM attempts t WHERE t.run_id = r.run_id AND t.outcome = 'abandoned'),
                r.listing, r.listing_note,
                CASE WHEN NOT EXISTS (
                         SELECT 1 FROM run_accounts a
                         WHERE a.run_id = r.run_id AND a.status <> 'skipped'
                           AND NOT EXISTS (SELECT 1 FROM attempts t
                                           WHERE t.run_id = a.run_id AND t.account = a.account
                                             AND t.phase = 'cancel' AND t.outcome = 'ok'))
                     THEN (SELECT CAST(round(max((julianday(t.sent_at) - julianday(r.started_at))
                                                 * 86400000.0 + coalesce(t.latency_ms, 0))) AS INTEGER)
                           FROM attempts t
                           WHERE t.run_id = r.run_id AND t.phase = 'cancel' AND t.outcome = 'ok')
                END,
                CASE WHEN NOT EXISTS (
                         SELECT 1 FROM account_reconciliation ar
                         WHERE ar.run_id = r.run_id AND ar.status <> 'skipped'
                           AND coalesce(ar.clean, 0) = 0)
                     THEN (SELECT CAST(round(max((julianday(t.sent_at) - julianday(r.started_at))
                                                 * 86400000.0 + coalesce(t.latency_ms, 0))) AS INTEGER)
                           FROM run_accounts a JOIN attempts t ON t.attempt_id =
                                -- The sweep's proof: a hold's later listings are not when it
                                -- became flat.
                                (SELECT max(v.attempt_id) FROM attempts v
                                 WHERE v.run_id = a.run_id AND v.account = a.account
                                   AND v.phase = 'verify' AND v.outcome = 'ok')
                           WHERE a.run_id = r.run_id AND a.status <> 'skipped')
                END,
                (SELECT sum(i.hold_ms) FROM invocations i WHERE i.run_id = r.run_id),
                (SELECT coalesce(sum(i.hold_cycles), 0) FROM invocations i WHERE i.run_id = r.run_id),
                (SELECT count(*) FROM attempts t
                 WHERE t.run_id = r.run_id AND t.phase = 'hold'
                   AND t.endpoint = '/v1/order/cancel/all' AND t.outcome = 'ok'),
                (SELECT json_group_array(account) FROM (
                     SELECT DISTINCT t.account FROM attempts t
                     WHERE t.run_id = r.run_id AND t.phase = 'hold'
                       AND t.endpoint = '/v1/order/cancel/all' AND t.outcome = 'ok'
                     ORDER BY t.account)),
                -- A listing the account's next attempt cancelled after: an order appeared (not one
                -- the sweep left rejected, which the hold lets stand).
                (SELECT max(t.sent_at) FROM attempts t
                 WHERE t.run_id = r.run_id AND t.phase = 'hold' AND t.endpoint = '/v1/orders'
                   AND t.outcome = 'ok' AND t.items > 0
                   AND EXISTS (SELECT 1 FROM attempts c
                               WHERE c.run_id = t.run_id AND c.account = t.account
                                 AND c.attempt_no = t.attempt_no + 1 AND c.phase = 'hold'
                                 AND c.endpoint = '/v1/order/cancel/all')),
                CASE WHEN EXISTS (SELECT 1 FROM history_cancelled h WHERE h.run_id = r.run_id)
                     THEN (SELECT count(*) FROM unreported_cancels u WHERE u.run_id = r.run_id)
                     ELSE 0
                END
         FROM runs r,
              -- Filtered inside, so only this run's accounts are read.
              (SELECT count(*) AS accounts,
                      coalesce(sum(status <> 'skipped' AND NOT dirty), 0) AS ok,
                      coalesce(sum(status = 'rejects_left'), 0) AS rejects_left,
                      coalesce(sum(status = 'failed'), 0) AS failed,
                      coalesce(sum(status = 'skipped'), 0) AS skipped,
                      coalesce(sum(status IN ('pending', 'interrupted')), 0) AS unfinished,
                      coalesce(sum(status = 'not_attempted'), 0) AS not_attempted,
                      coalesce(sum(status IN ('swept', 'rejects_left') AND verify_wanted AND NOT verified), 0)
                          AS unverified_accounts,
                      coalesce(sum(cancelled), 0) AS cancelled,
                      coalesce(sum(rejected), 0) AS rejected,
                      coalesce(sum(open_after), 0) AS open_after,
                      coalesce(sum(unverified), 0) AS unverified_orders
               FROM account_reconciliation WHERE run_id = ?1) x
         WHERE r.run_id = ?1",
        [run_id],
        |row| {
            Ok(RunTotals {
                run_id: row.get(0)?,
                group: row.get(1)?,
                status: row.get(2)?,
                stop_reason: row.get(3)?,
                accounts_total: row.get(4)?,
                accounts_ok: row.get(5)?,
                accounts_rejects_left: row.get(6)?,
                accounts_failed: row.get(7)?,
                accounts_skipped: row.get(8)?,
                accounts_unfinished: row.get(9)?,
                accounts_not_attempted: row.get(10)?,
                accounts_unverified: row.get(11)?,
                orders_cancelled: row.get(12)?,
                orders_rejected: row.get(13)?,
                orders_still_open: row.get(14)?,
                orders_unverified: row.get(15)?,
                attempts: row.get(16)?,
                rate_limited: row.get(17)?,
                nonce_refused: row.get(18)?,
                abandoned: row.get(19)?,
                listing: row.get(20)?,
                listing_note: row.get(21)?,
                time_to_flat_ms: row.get(22)?,
                time_to_proven_flat_ms: row.get(23)?,
                hold: hold_totals(row)?,
                unreported_cancels: row.get(29)?,
            })
        },
    )
}
