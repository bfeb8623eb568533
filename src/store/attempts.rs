//! Every request, written before it leaves and completed when its reply is read, with the order
//! ids and listings the reply carried.
//!
//! The write-ahead row and the key's nonce high-water mark are committed in one transaction before
//! the request leaves, so a request never leaves without a durable row naming its nonce and send
//! time, and the mark is at least the highest nonce that may have been sent. An attempt whose
//! reply is never read (grace period over, second signal, `kill -9`) stays `in_flight` until the
//! run is settled or taken over, and then reads `abandoned`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};

use super::{Phase, Store, StoreError, epoch_ms, utc_text};
use crate::client::{Chunk, Collected, Nonce, OpenOrder};
use crate::client::{Endpoint, Exchanged, Reason, Verdict};

/// What a request does: its phase and its endpoint, which the attempt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Listing the group's accounts.
    Discover,
    /// Listing open orders before the cancel-all.
    Snapshot,
    Cancel,
    /// Listing open orders after the cancel-all.
    Verify,
    /// Listing open orders while the run holds the group flat after its sweep.
    HoldList,
    /// A cancel-all for orders a hold listing found.
    HoldCancel,
    /// Reading the account's order history for what a cancel-all whose reply was lost cancelled.
    Recover,
}

impl Action {
    pub fn phase(self) -> Phase {
        match self {
            Action::Discover => Phase::Discover,
            Action::Snapshot => Phase::Snapshot,
            Action::Cancel => Phase::Cancel,
            Action::Verify => Phase::Verify,
            Action::HoldList | Action::HoldCancel => Phase::Hold,
            Action::Recover => Phase::Recover,
        }
    }

    pub fn endpoint(self) -> Endpoint {
        match self {
            Action::Discover => Endpoint::AccountList,
            Action::Cancel | Action::HoldCancel => Endpoint::CancelAll,
            Action::Snapshot | Action::Verify | Action::HoldList => Endpoint::ListOrders,
            Action::Recover => Endpoint::OrderHistory,
        }
    }

    /// The stored phase's word, for messages.
    pub fn as_str(self) -> &'static str {
        self.phase().as_str()
    }

    /// A cancel-all, in the sweep or while holding: the account's latest, once sent.
    pub fn cancels(self) -> bool {
        self.endpoint() == Endpoint::CancelAll
    }

    /// A listing of open orders after the account's cancel-all: the proof it is flat.
    pub fn proves(self) -> bool {
        matches!(self, Action::Verify | Action::HoldList)
    }

    /// What an attempt recorded with `phase` at `endpoint` did.
    pub fn recorded(phase: Phase, endpoint: &str) -> Option<Action> {
        [
            Action::Discover,
            Action::Snapshot,
            Action::Cancel,
            Action::Verify,
            Action::HoldList,
            Action::HoldCancel,
            Action::Recover,
        ]
        .into_iter()
        .find(|a| a.phase() == phase && a.endpoint().path() == endpoint)
    }
}

/// What is known of a request before it leaves.
pub struct AttemptStart {
    /// `None` for a listing made outside a run (`gemini-sweep accounts`).
    pub run_id: Option<i64>,
    pub invocation_id: Option<i64>,
    pub account: Arc<str>,
    pub attempt_no: u32,
    pub action: Action,
    pub key_fingerprint: Arc<str>,
    /// Issued by the key's dispatcher, committed here with the key's high-water mark.
    pub nonce: Nonce,
}

/// A request recorded and ready to leave.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub attempt_id: i64,
    pub nonce: Nonce,
    pub sent_at: SystemTime,
}

/// How an attempt ended, as `attempts.outcome` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Transient { reason: Reason, message: String },
    Permanent { reason: Reason, message: String },
}

impl Outcome {
    /// How the audit trail reads a verdict: a nonce refusal is transient (the call retries it).
    pub fn of(verdict: &Verdict) -> Outcome {
        let (Some(reason), Some(message)) = (verdict.reason(), verdict.message()) else {
            return Outcome::Ok;
        };
        let (reason, message) = (reason.clone(), message.to_owned());
        match verdict {
            Verdict::Ok(_) => Outcome::Ok,
            Verdict::Transient { .. } | Verdict::NonceRefused { .. } => {
                Outcome::Transient { reason, message }
            }
            Verdict::AccountRefused { .. } | Verdict::KeyRefused { .. } => {
                Outcome::Permanent { reason, message }
            }
        }
    }
}

impl AttemptEnd {
    /// The record of `exchanged`, the reply to the attempt `sent` for `account`.
    pub fn of(
        run_id: Option<i64>,
        account: &str,
        action: Action,
        sent: Sent,
        exchanged: &Exchanged,
    ) -> AttemptEnd {
        AttemptEnd {
            run_id,
            account: account.to_owned(),
            action,
            sent,
            latency: exchanged.latency,
            http_status: exchanged.http_status,
            outcome: Outcome::of(&exchanged.verdict),
            body: exchanged.body.clone(),
            body_truncated: exchanged.body_truncated,
            collected: match &exchanged.verdict {
                Verdict::Ok(collected) => Some(collected.clone()),
                _ => None,
            },
        }
    }
}

/// What an attempt's reply said, recorded when it was read.
pub struct AttemptEnd {
    pub run_id: Option<i64>,
    pub account: String,
    pub action: Action,
    pub sent: Sent,
    pub latency: Duration,
    pub http_status: Option<u16>,
    pub outcome: Outcome,
    pub body: Option<String>,
    pub body_truncated: bool,
    /// The ids or orders of a successful reply (for a streamed reply, only the counts: its ids
    /// were written chunk by chunk as they were read).
    pub collected: Option<Collected>,
}

impl Store {
    /// The key's high-water mark in microseconds (0 for a key never used with this database).
    pub async fn nonce_high_water(&self, key_fingerprint: &str) -> Result<u64, StoreError> {
        let fp = key_fingerprint.to_owned();
        let mark = self
            .exec(move |c| {
                c.query_row(
                    "SELECT coalesce(max(high_water_us), 0) FROM nonce_high_water WHERE key_fingerprint = ?1",
                    [&fp],
                    |r| r.get::<_, i64>(0),
                )
            })
            .await?;
        Ok(mark.max(0) as u64)
    }

    /// Commits the attempts (`in_flight`, with nonce and send time) together with the key's raised
    /// nonce mark, in one transaction. Once this returns, the requests may leave.
    pub async fn begin_attempts(&self, starts: Vec<AttemptStart>) -> Result<Vec<Sent>, StoreError> {
        self.exec(move |c| starts.iter().map(|start| begin(c, start)).collect())
            .await
    }

    /// Writes ids or orders of a reply that is still being read.
    pub async fn spill(
        &self,
        run_id: Option<i64>,
        account: Arc<str>,
        action: Action,
        attempt_id: i64,
        chunk: Chunk,
    ) -> Result<(), StoreError> {
        let Some(run_id) = run_id else {
            return Ok(());
        };
        self.exec(move |c| record_chunk(c, run_id, &account, action, attempt_id, &chunk))
            .await
    }

    /// Completes an attempt with what its reply said, and the ids it carried, in one commit.
    /// Queued, not awaited (see `writer`): what the reply means is known already, and everything
    /// written after it (the next request's row, the run's end) is committed after it.
    pub fn finish_attempt(&self, end: AttemptEnd) -> Result<(), StoreError> {
        self.queue(move |c| finish(c, &end))
    }
}

fn begin(c: &Connection, start: &AttemptStart) -> rusqlite::Result<Sent> {
    let nonce = start.nonce;
    let sent_at = SystemTime::now();
    let sent_ms = epoch_ms(sent_at);
    c.prepare_cached(concat!(
        "INSERT INTO attempts (run_id, invocation_id, account, attempt_no, phase, endpoint,
            key_fingerprint, nonce, sent_at, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ",
        utc_text!("?9"),
        ", 'in_flight')"
    ))?
    .execute(params![
        start.run_id,
        start.invocation_id,
        &*start.account,
        start.attempt_no,
        start.action.phase(),
        start.action.endpoint().path(),
        &*start.key_fingerprint,
        nonce.to_string(),
        sent_ms
    ])?;
    let attempt_id = c.last_insert_rowid();
    c.prepare_cached(concat!(
        "INSERT INTO nonce_high_water (key_fingerprint, high_water_us, updated_at) VALUES (?1, ?2, ",
        utc_text!("?3"),
        ") ON CONFLICT (key_fingerprint) DO UPDATE SET
           high_water_us = max(high_water_us, excluded.high_water_us),
           updated_at = excluded.updated_at"
    ))?
    .execute(params![
        &*start.key_fingerprint,
        i64::try_from(nonce.value_us).unwrap_or(i64::MAX),
        sent_ms
    ])?;
    let counted =
        "UPDATE run_accounts SET attempts = attempts + 1 WHERE run_id = ?1 AND account = ?2";
    let (run_id, account) = (start.run_id, &*start.account);
    match start.action {
        // Anything listed after an earlier cancel-all is stale from now on: this one may cancel
        // more (even if its reply never arrives).
        action if action.cancels() => c
            .prepare_cached(
                "UPDATE run_accounts SET attempts = attempts + 1, last_cancel_attempt_id = ?3,
                    verified_at = NULL
                 WHERE run_id = ?1 AND account = ?2",
            )?
            .execute(params![run_id, account, attempt_id])?,
        // A new listing replaces the previous one, which is stale by construction: a listing
        // always follows a cancel-all.
        action if action.proves() => {
            c.prepare_cached("DELETE FROM open_orders_after WHERE run_id = ?1 AND account = ?2")?
                .execute(params![run_id, account])?;
            c.prepare_cached(counted)?
                .execute(params![run_id, account])?
        }
        Action::Discover => 0,
        _ => c
            .prepare_cached(counted)?
            .execute(params![run_id, account])?,
    };
    Ok(Sent {
        attempt_id,
        nonce,
        sent_at,
    })
}

fn finish(c: &Connection, end: &AttemptEnd) -> rusqlite::Result<()> {
    let (outcome, reason, message) = match &end.outcome {
        Outcome::Ok => ("ok", None, None),
        Outcome::Transient { reason, message } => {
            ("transient", Some(reason.as_str()), Some(message))
        }
        Outcome::Permanent { reason, message } => {
            ("permanent", Some(reason.as_str()), Some(message))
        }
    };
    let attempt_id = end.sent.attempt_id;
    c.prepare_cached(
        "UPDATE attempts SET latency_ms = ?2, http_status = ?3, outcome = ?4, error_reason = ?5,
            error_message = ?6, body = ?7, body_truncated = ?8, items = ?9
         WHERE attempt_id = ?1",
    )?
    .execute(params![
        attempt_id,
        end.latency.as_millis() as i64,
        end.http_status,
        outcome,
        reason,
        message,
        end.body,
        end.body_truncated,
        end.collected
            .as_ref()
            .map(|d| i64::try_from(d.items()).unwrap_or(i64::MAX)),
    ])?;
    let Some(run_id) = end.run_id else {
        return Ok(());
    };
    if end.outcome != Outcome::Ok {
        // Ids already written from a reply that turned out invalid (or was cut off) are not
        // evidence of anything.
        return discard_rows(c, run_id, &end.account, end.action, attempt_id);
    }
    let Some(collected) = &end.collected else {
        return Ok(());
    };
    record_ids(
        c,
        run_id,
        &end.account,
        true,
        &collected.cancelled,
        attempt_id,
    )?;
    record_ids(
        c,
        run_id,
        &end.account,
        false,
        &collected.rejected,
        attempt_id,
    )?;
    if !collected.orders.is_empty() {
        record_orders(
            c,
            run_id,
            &end.account,
            end.action,
            &collected.orders,
            attempt_id,
        )?;
    }
    let sent_ms = epoch_ms(end.sent.sent_at);
    match end.action {
        // The first listing taken is the run's "before": a resumed run keeps it, or orders placed
        // meanwhile would stop counting as late.
        Action::Snapshot => c
            .prepare_cached(concat!(
                "UPDATE run_accounts SET snapshot_attempt_id = coalesce(snapshot_attempt_id, ?3),
                    snapshot_at = coalesce(snapshot_at, ",
                utc_text!("?4"),
                ") WHERE run_id = ?1 AND account = ?2"
            ))?
            .execute(params![run_id, end.account, attempt_id, sent_ms])?,
        action if action.proves() => c
            .prepare_cached(concat!(
                "UPDATE run_accounts SET verify_attempt_id = ?3, verified_at = ",
                utc_text!("?4"),
                " WHERE run_id = ?1 AND account = ?2"
            ))?
            .execute(params![run_id, end.account, attempt_id, sent_ms])?,
        _ => 0,
    };
    Ok(())
}

/// Removes what an attempt wrote before it failed: the part of a listing read before the reply
/// broke off, or ids of a cancel-all reply that turned out not to be valid JSON.
pub(super) fn discard_rows(
    c: &Connection,
    run_id: i64,
    account: &str,
    action: Action,
    attempt_id: i64,
) -> rusqlite::Result<()> {
    let tables: &[&str] = match action {
        Action::Discover => &[],
        Action::Snapshot => &["open_orders_before"],
        Action::Verify | Action::HoldList => &["open_orders_after"],
        Action::Cancel | Action::HoldCancel => &["cancelled_orders", "cancel_rejects"],
        Action::Recover => &["history_cancelled"],
    };
    for table in tables {
        c.prepare_cached(&format!(
            "DELETE FROM {table} WHERE run_id = ?1 AND account = ?2 AND attempt_id = ?3"
        ))?
        .execute(params![run_id, account, attempt_id])?;
    }
    c.prepare_cached(
        "DELETE FROM unstorable_order_ids WHERE run_id = ?1 AND account = ?2 AND attempt_id = ?3",
    )?
    .execute(params![run_id, account, attempt_id])?;
    Ok(())
}

fn record_chunk(
    c: &Connection,
    run_id: i64,
    account: &str,
    action: Action,
    attempt_id: i64,
    chunk: &Chunk,
) -> rusqlite::Result<()> {
    match chunk {
        Chunk::Orders(orders) => record_orders(c, run_id, account, action, orders, attempt_id),
        Chunk::Cancelled(ids) => record_ids(c, run_id, account, true, ids, attempt_id),
        Chunk::Rejected(ids) => record_ids(c, run_id, account, false, ids, attempt_id),
    }
}

/// Ids a cancel-all reply reported `cancelled` (or else rejected).
fn record_ids(
    c: &Connection,
    run_id: i64,
    account: &str,
    cancelled: bool,
    ids: &[u64],
    attempt_id: i64,
) -> rusqlite::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let (table, listed_as) = if cancelled {
        ("cancelled_orders", "cancelled")
    } else {
        ("cancel_rejects", "rejected")
    };
    // OR IGNORE: an order reported twice (a reject re-tried, a resumed run) keeps the row of the
    // attempt that first reported it, so nothing is counted twice.
    let mut insert = c.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {table} (run_id, account, order_id, attempt_id) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    for &id in ids {
        if let Some(id) = storable_id(c, run_id, account, id, listed_as, attempt_id)? {
            insert.execute(params![run_id, account, id, attempt_id])?;
        }
    }
    Ok(())
}

fn record_orders(
    c: &Connection,
    run_id: i64,
    account: &str,
    action: Action,
    orders: &[OpenOrder],
    attempt_id: i64,
) -> rusqlite::Result<()> {
    let table = match action {
        Action::Snapshot => "open_orders_before",
        Action::Verify | Action::HoldList => "open_orders_after",
        Action::Recover => "history_cancelled",
        Action::Cancel | Action::HoldCancel | Action::Discover => return Ok(()),
    };
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
    // The history also lists filled orders: only cancelled ones are evidence of a cancel.
    let kept = orders
        .iter()
        .filter(|o| action != Action::Recover || o.is_cancelled);
    for o in kept {
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
    Ok(())
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
