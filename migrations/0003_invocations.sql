-- gemini-sweep audit trail, version 3: invocations, write-ahead attempts, evidence that knows its
-- age, refusals that stop a run, and views that read one run without scanning the others.
--
-- SQLite cannot change a CHECK constraint in place, so the tables whose vocabulary grows are
-- rebuilt (create, copy, drop, rename; foreign keys are off while migrations run). The views are
-- dropped first and recreated at the end, since they name the tables being rebuilt.

DROP VIEW run_reconciliation;
DROP VIEW account_reconciliation;
DROP VIEW order_reconciliation;

-- ---------------------------------------------------------------------------------------------
-- runs: one row per run. What the first invocation chose stays here; every later invocation
-- (a resume) has its own row in `invocations`, so nothing here is ever rewritten but the status.
CREATE TABLE runs_v3 (
    run_id          INTEGER PRIMARY KEY,
    started_at      TEXT    NOT NULL,
    -- When the last invocation that worked on the run ended.
    ended_at        TEXT,
    -- running: an invocation is working on it (or died: see `died`);
    -- completed: every enabled account swept and, where verification was asked, verified flat;
    -- incomplete: finished, but some account failed, kept rejected orders or is not verified flat;
    -- interrupted: stopped by SIGINT/SIGTERM before every account was done;
    -- refused: the exchange refused the key or the request as configured (bad signature, missing
    --   role, wrong nonce mode, a redirect...), so the run stopped sending at once;
    -- aborted: stopped by an internal or database error;
    -- died: its process vanished (kill -9, power cut); found and marked by the next invocation.
    status          TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'incomplete', 'interrupted', 'refused', 'aborted', 'died')),
    -- The first invocation's base URL, options (JSON) and process id.
    base_url        TEXT    NOT NULL,
    -- 'master:<16 hex>' = key kind + start of SHA-256 of the key. Never the key, never the secret.
    key_fingerprint TEXT    NOT NULL,
    options         TEXT    NOT NULL,
    pid             INTEGER NOT NULL,
    tool_version    TEXT    NOT NULL,
    -- The group (master key) the run swept; 'default' when no group configuration was used.
    group_name      TEXT    NOT NULL DEFAULT 'default',
    -- Why the run stopped before finishing every account (the refusal, the signal), if it did.
    stop_reason     TEXT
) STRICT;

INSERT INTO runs_v3 (run_id, started_at, ended_at, status, base_url, key_fingerprint, options, pid, tool_version)
SELECT run_id, started_at, ended_at, status, base_url, key_fingerprint, options, pid, tool_version FROM runs;

-- ---------------------------------------------------------------------------------------------
-- invocations: one row per process that worked on a run: the one that started it and each
-- `run --resume` that picked something up. Written when the process starts, completed when it
-- ends, never rewritten by a later one.
CREATE TABLE invocations (
    invocation_id   INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    kind            TEXT    NOT NULL CHECK (kind IN ('start', 'resume')),
    started_at      TEXT    NOT NULL,
    ended_at        TEXT,
    pid             INTEGER NOT NULL,
    base_url        TEXT    NOT NULL,
    options         TEXT    NOT NULL,
    tool_version    TEXT    NOT NULL,
    -- How many accounts this invocation set out to sweep.
    accounts        INTEGER NOT NULL,
    -- running while it works; then the run's status as this invocation left it, or died.
    status          TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'incomplete', 'interrupted', 'refused', 'aborted', 'died')),
    -- The process's exit code (NULL while running, or when it died).
    exit_code       INTEGER,
    stop_reason     TEXT
) STRICT;

CREATE INDEX invocations_by_run ON invocations (run_id);

-- Runs from before version 3 had one row; each becomes one invocation with the same id.
INSERT INTO invocations (invocation_id, run_id, kind, started_at, ended_at, pid, base_url, options,
                         tool_version, accounts, status, exit_code)
SELECT r.run_id, r.run_id, 'start', r.started_at, r.ended_at, r.pid, r.base_url, r.options,
       r.tool_version,
       (SELECT count(*) FROM run_accounts a WHERE a.run_id = r.run_id AND a.status <> 'skipped'),
       r.status,
       CASE r.status WHEN 'completed' THEN 0 WHEN 'incomplete' THEN 1 WHEN 'aborted' THEN 3 END
FROM runs r;

-- ---------------------------------------------------------------------------------------------
-- run_accounts: one row per account of a run.
CREATE TABLE run_accounts_v3 (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    -- Position in the accounts CSV (1-based line), so reports follow the file's order.
    csv_line        INTEGER NOT NULL,
    note            TEXT,
    -- pending: not finished yet;
    -- swept: cancel-all succeeded and nothing stayed rejected (flat only if `verified` and clean);
    -- rejects_left: cancel-all succeeded but some orders refused cancellation;
    -- failed: gave up (see `failure`); skipped: enabled=false in the CSV;
    -- interrupted: a signal stopped the run before this account finished;
    -- not_attempted: the run stopped (see runs.stop_reason) before any request for this account.
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'swept', 'rejects_left', 'failed', 'skipped', 'interrupted', 'not_attempted')),
    -- For failed accounts, why: account_refused (the exchange refused this account: unknown,
    -- closed, custody...; resumed only with --retry-permanent), out_of_attempts (transient
    -- failures used up --max-attempts), key_refused (this account's request was the one the
    -- exchange refused the key on), run_halted (the run stopped while this account was under way).
    failure         TEXT    CHECK (failure IN ('account_refused', 'out_of_attempts', 'key_refused', 'run_halted')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Distinct orders cancelled; distinct orders rejected and never cancelled later in the run.
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    rejected_count  INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    finished_at     TEXT,
    -- Whether the invocation that last worked on the account was asked to verify (not --no-verify).
    verify_wanted   INTEGER NOT NULL DEFAULT 1,
    -- The listing before the cancel-all (kept from the first one taken), the latest successful
    -- listing after it, and the latest cancel-all sent (in flight, answered or abandoned). An
    -- account is verified only when its verify listing was sent after its last cancel-all.
    snapshot_attempt_id    INTEGER,
    verify_attempt_id      INTEGER,
    last_cancel_attempt_id INTEGER,
    snapshot_at     TEXT,
    verified_at     TEXT,
    PRIMARY KEY (run_id, account)
) STRICT;

INSERT INTO run_accounts_v3 (run_id, account, csv_line, note, status, failure, attempts,
    cancelled_count, rejected_count, last_error, finished_at, verify_wanted,
    snapshot_attempt_id, verify_attempt_id, last_cancel_attempt_id, snapshot_at, verified_at)
SELECT a.run_id, a.account, a.csv_line, a.note, a.status,
       CASE WHEN a.status = 'failed' THEN
           CASE WHEN (SELECT t.outcome FROM attempts t WHERE t.run_id = a.run_id AND t.account = a.account
                      ORDER BY t.attempt_no DESC LIMIT 1) = 'permanent'
                THEN 'account_refused' ELSE 'out_of_attempts' END
       END,
       a.attempts, a.cancelled_count, a.rejected_count, a.last_error, a.finished_at,
       coalesce((SELECT json_extract(r.options, '$.verify') FROM runs r WHERE r.run_id = a.run_id), 1),
       (SELECT min(t.attempt_id) FROM attempts t WHERE t.run_id = a.run_id AND t.account = a.account
           AND t.phase = 'snapshot' AND t.outcome = 'ok'),
       (SELECT max(t.attempt_id) FROM attempts t WHERE t.run_id = a.run_id AND t.account = a.account
           AND t.phase = 'verify' AND t.outcome = 'ok'),
       (SELECT max(t.attempt_id) FROM attempts t WHERE t.run_id = a.run_id AND t.account = a.account
           AND t.phase = 'cancel'),
       a.snapshot_at, a.verified_at
FROM run_accounts a;

-- ---------------------------------------------------------------------------------------------
-- attempts: every HTTP request, written (with its nonce and send time) before it leaves and
-- completed when its reply has been read.
CREATE TABLE attempts_v3 (
    attempt_id      INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    invocation_id   INTEGER NOT NULL REFERENCES invocations (invocation_id),
    account         TEXT    NOT NULL,
    -- 1, 2, ... per account and run, across retries, reject re-tries and resumes.
    attempt_no      INTEGER NOT NULL,
    -- snapshot: listing open orders before; cancel: cancel-all; verify: listing open orders after.
    phase           TEXT    NOT NULL CHECK (phase IN ('snapshot', 'cancel', 'verify')),
    endpoint        TEXT    NOT NULL,
    -- As sent: integer milliseconds (increasing mode) or 'seconds.micros' (time mode).
    nonce           TEXT    NOT NULL,
    sent_at         TEXT    NOT NULL,
    -- NULL until the reply was read (and for abandoned attempts).
    latency_ms      INTEGER,
    -- NULL when no HTTP reply arrived (time-out, connection reset, abandoned).
    http_status     INTEGER,
    -- in_flight: sent, reply not yet read; ok: the call did what it should; transient: retried
    -- if attempts remained; permanent: not retried (the account or the key was refused);
    -- abandoned: sent, but the process stopped waiting (grace period over, second signal, crash)
    -- before the reply was read. What an abandoned cancel-all did shows in the next listing.
    outcome         TEXT    NOT NULL CHECK (outcome IN ('in_flight', 'ok', 'transient', 'permanent', 'abandoned')),
    -- The exchange's reason (InvalidNonce, RateLimit...) or ours (Timeout, ConnectionError,
    -- UnparseableBody, Redirect, HTTP502...). NULL when ok.
    error_reason    TEXT,
    error_message   TEXT,
    -- The reply's first 4 KiB as it came (body_truncated = 1 when cut); NULL before a reply.
    body            TEXT,
    body_truncated  INTEGER NOT NULL DEFAULT 0,
    -- Order ids the reply reported: cancelled + rejected (cancel-all), or orders listed.
    items           INTEGER,
    UNIQUE (run_id, account, attempt_no)
) STRICT;

INSERT INTO attempts_v3 (attempt_id, run_id, invocation_id, account, attempt_no, phase, endpoint,
    nonce, sent_at, latency_ms, http_status, outcome, error_reason, error_message, body,
    body_truncated)
SELECT attempt_id, run_id, run_id, account, attempt_no, phase, endpoint, nonce, sent_at,
       latency_ms, http_status, outcome, error_reason, error_message, body, body_truncated
FROM attempts;

CREATE INDEX attempts_in_flight ON attempts_v3 (invocation_id) WHERE outcome = 'in_flight';

-- ---------------------------------------------------------------------------------------------
-- Order tables, rebuilt WITHOUT ROWID: they are looked up by their key only, and a run can hold
-- millions of rows, so the key is the table.
CREATE TABLE cancelled_orders_v3 (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    order_id        INTEGER NOT NULL,
    -- The attempt whose reply first reported the cancellation.
    attempt_id      INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT, WITHOUT ROWID;
INSERT INTO cancelled_orders_v3 SELECT run_id, account, order_id, attempt_id FROM cancelled_orders;

CREATE TABLE cancel_rejects_v3 (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    order_id        INTEGER NOT NULL,
    -- The attempt whose reply first reported the reject.
    attempt_id      INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT, WITHOUT ROWID;
INSERT INTO cancel_rejects_v3 SELECT run_id, account, order_id, attempt_id FROM cancel_rejects;

-- Open orders as /v1/orders listed them: before the cancel-all (the first listing taken) and
-- after it (the latest listing; it counts only while it is newer than the last cancel-all).
CREATE TABLE open_orders_before_v3 (
    run_id           INTEGER NOT NULL REFERENCES runs (run_id),
    account          TEXT    NOT NULL,
    order_id         INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    side             TEXT    NOT NULL,
    -- Decimal strings exactly as the exchange sent them.
    price            TEXT    NOT NULL,
    remaining_amount TEXT    NOT NULL,
    client_order_id  TEXT,
    placed_at        TEXT,
    attempt_id       INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT, WITHOUT ROWID;
INSERT INTO open_orders_before_v3 SELECT run_id, account, order_id, symbol, side, price,
    remaining_amount, client_order_id, placed_at, attempt_id FROM open_orders_before;

CREATE TABLE open_orders_after_v3 (
    run_id           INTEGER NOT NULL REFERENCES runs (run_id),
    account          TEXT    NOT NULL,
    order_id         INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    side             TEXT    NOT NULL,
    price            TEXT    NOT NULL,
    remaining_amount TEXT    NOT NULL,
    client_order_id  TEXT,
    placed_at        TEXT,
    attempt_id       INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT, WITHOUT ROWID;
INSERT INTO open_orders_after_v3 SELECT run_id, account, order_id, symbol, side, price,
    remaining_amount, client_order_id, placed_at, attempt_id FROM open_orders_after;

-- ---------------------------------------------------------------------------------------------
-- The key's nonce high-water mark, now in microseconds: time-mode nonces carry microseconds so
-- that even 100,000 requests a second stay on the clock. Written in the same transaction as the
-- attempt that uses the nonce, so it is exactly the highest nonce that may have been sent.
CREATE TABLE nonce_high_water_v3 (
    key_fingerprint TEXT    PRIMARY KEY,
    high_water_us   INTEGER NOT NULL,
    updated_at      TEXT    NOT NULL
) STRICT;
INSERT INTO nonce_high_water_v3 SELECT key_fingerprint, high_water_ms * 1000, updated_at FROM nonce_high_water;


-- ---------------------------------------------------------------------------------------------
DROP TABLE open_orders_after;
DROP TABLE open_orders_before;
DROP TABLE cancel_rejects;
DROP TABLE cancelled_orders;
DROP TABLE attempts;
DROP TABLE run_accounts;
DROP TABLE runs;
DROP TABLE nonce_high_water;

ALTER TABLE runs_v3 RENAME TO runs;
ALTER TABLE run_accounts_v3 RENAME TO run_accounts;
ALTER TABLE attempts_v3 RENAME TO attempts;
ALTER TABLE cancelled_orders_v3 RENAME TO cancelled_orders;
ALTER TABLE cancel_rejects_v3 RENAME TO cancel_rejects;
ALTER TABLE open_orders_before_v3 RENAME TO open_orders_before;
ALTER TABLE open_orders_after_v3 RENAME TO open_orders_after;
ALTER TABLE nonce_high_water_v3 RENAME TO nonce_high_water;

-- ---------------------------------------------------------------------------------------------
-- Reconciliation views: the single source of every number `gemini-sweep report` prints, so an
-- auditor's sqlite3 and the tool always agree. Each reads one run through indexed lookups when
-- filtered by run_id, however many runs the database holds.
--
-- Evidence has an age. An account is `verified` only when its latest listing after the sweep was
-- sent after its latest cancel-all (an abandoned cancel-all counts: it may have cancelled). What
-- was not observed is unknown (NULL, or the outcome `unverified`), never zero.

-- One row per account of each run.
--   snapshot_taken: the "before" listing exists; open_before is NULL without it.
--   verified: a listing taken after the last cancel-all exists; open_after is NULL without it.
--   cancelled: distinct orders a cancel-all reply reported cancelled.
--   rejected: refused cancellation and never cancelled later in the run.
--   unexplained: listed before; neither cancelled, rejected nor open in a verified listing
--     (filled, cancelled elsewhere, or cancelled by a reply that never arrived).
--   unverified: listed before (or only in a stale listing), neither cancelled nor rejected, and
--     no verified listing says what became of it: possibly still open.
--   late: cancelled or open after, but not in the snapshot: placed during the sweep (only
--     counted when a snapshot was taken).
--   clean: verified with nothing open after; NULL when unknown (skipped, never verified,
--     --no-verify).
--   dirty: not swept, or swept but not verified flat although verification was asked for (what
--     `report --only dirty` lists and what makes a run incomplete).
CREATE VIEW account_reconciliation AS
SELECT x.*,
       (x.status <> 'skipped'
        AND (x.status <> 'swept' OR (x.verify_wanted AND coalesce(x.clean, 0) = 0))) AS dirty
FROM (
    SELECT a.run_id, a.account, a.csv_line, a.status, a.failure, a.attempts, a.last_error,
           a.verify_wanted, a.snapshot_taken, a.verified,
           CASE WHEN a.snapshot_taken THEN
               (SELECT count(*) FROM open_orders_before b
                WHERE b.run_id = a.run_id AND b.account = a.account)
           END AS open_before,
           (SELECT count(*) FROM cancelled_orders c
            WHERE c.run_id = a.run_id AND c.account = a.account) AS cancelled,
           (SELECT count(*) FROM cancel_rejects r
            WHERE r.run_id = a.run_id AND r.account = a.account
              AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                              WHERE c.run_id = r.run_id AND c.account = r.account AND c.order_id = r.order_id)) AS rejected,
           CASE WHEN a.verified THEN
               (SELECT count(*) FROM open_orders_after o
                WHERE o.run_id = a.run_id AND o.account = a.account)
           END AS open_after,
           CASE WHEN a.verified THEN
               (SELECT count(*) FROM open_orders_before b
                WHERE b.run_id = a.run_id AND b.account = a.account
                  AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                                  WHERE c.run_id = b.run_id AND c.account = b.account AND c.order_id = b.order_id)
                  AND NOT EXISTS (SELECT 1 FROM cancel_rejects r
                                  WHERE r.run_id = b.run_id AND r.account = b.account AND r.order_id = b.order_id)
                  AND NOT EXISTS (SELECT 1 FROM open_orders_after o
                                  WHERE o.run_id = b.run_id AND o.account = b.account AND o.order_id = b.order_id))
           ELSE 0 END AS unexplained,
           CASE WHEN a.verified THEN 0 ELSE
               (SELECT count(*) FROM open_orders_before b
                WHERE b.run_id = a.run_id AND b.account = a.account
                  AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                                  WHERE c.run_id = b.run_id AND c.account = b.account AND c.order_id = b.order_id)
                  AND NOT EXISTS (SELECT 1 FROM cancel_rejects r
                                  WHERE r.run_id = b.run_id AND r.account = b.account AND r.order_id = b.order_id))
               + (SELECT count(*) FROM open_orders_after o
                  WHERE o.run_id = a.run_id AND o.account = a.account
                    AND NOT EXISTS (SELECT 1 FROM open_orders_before b
                                    WHERE b.run_id = o.run_id AND b.account = o.account AND b.order_id = o.order_id)
                    AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                                    WHERE c.run_id = o.run_id AND c.account = o.account AND c.order_id = o.order_id)
                    AND NOT EXISTS (SELECT 1 FROM cancel_rejects r
                                    WHERE r.run_id = o.run_id AND r.account = o.account AND r.order_id = o.order_id))
           END AS unverified,
           CASE WHEN a.snapshot_taken THEN
               (SELECT count(*) FROM cancelled_orders c
                WHERE c.run_id = a.run_id AND c.account = a.account
                  AND NOT EXISTS (SELECT 1 FROM open_orders_before b
                                  WHERE b.run_id = c.run_id AND b.account = c.account AND b.order_id = c.order_id))
               + CASE WHEN a.verified THEN
                   (SELECT count(*) FROM open_orders_after o
                    WHERE o.run_id = a.run_id AND o.account = a.account
                      AND NOT EXISTS (SELECT 1 FROM open_orders_before b
                                      WHERE b.run_id = o.run_id AND b.account = o.account AND b.order_id = o.order_id)
                      AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                                      WHERE c.run_id = o.run_id AND c.account = o.account AND c.order_id = o.order_id))
                 ELSE 0 END
           ELSE 0 END AS late,
           CASE WHEN a.status = 'skipped' OR NOT a.verified THEN NULL
                ELSE NOT EXISTS (SELECT 1 FROM open_orders_after o
                                 WHERE o.run_id = a.run_id AND o.account = a.account)
           END AS clean
    FROM (SELECT r.*,
                 r.snapshot_attempt_id IS NOT NULL AS snapshot_taken,
                 coalesce(r.verify_attempt_id > r.last_cancel_attempt_id, 0) AS verified
          FROM run_accounts r) a
) x;

-- Every order a run knows of, per account, with what happened to it.
--   in_snapshot: listed open before the cancel-all; cancelled / rejected: reported by a cancel-all
--   reply; open_after: open in the account's verified listing after the sweep.
--   outcome: still_open  — open in the verified listing after the sweep;
--            cancelled   — cancelled, and in the snapshot (or there is no snapshot to compare);
--            late        — cancelled but not in the snapshot: placed during the sweep;
--            rejected    — refused cancellation, never cancelled, not open in a verified listing;
--            unexplained — listed before; neither cancelled, rejected nor open in the verified
--                          listing (filled, cancelled elsewhere, or by a reply never received);
--            unverified  — neither cancelled nor rejected, and no listing after the last
--                          cancel-all says what became of it: possibly still open.
CREATE VIEW order_reconciliation AS
SELECT i.run_id, i.account, i.order_id, i.in_snapshot, i.cancelled, i.rejected,
       (i.listed_after AND a.verified) AS open_after,
       CASE
           WHEN i.listed_after AND a.verified THEN 'still_open'
           WHEN i.cancelled AND (i.in_snapshot OR NOT a.snapshot_taken) THEN 'cancelled'
           WHEN i.cancelled THEN 'late'
           WHEN i.rejected THEN 'rejected'
           WHEN a.verified THEN 'unexplained'
           ELSE 'unverified'
       END AS outcome,
       (a.snapshot_taken AND NOT i.in_snapshot
        AND (i.cancelled OR (i.listed_after AND a.verified))) AS late_arrival
FROM (
    -- Four disjoint arms (each order once) rather than a GROUP BY over a union, so that a
    -- `WHERE run_id = ?` reaches every table's primary key.
    SELECT b.run_id, b.account, b.order_id, 1 AS in_snapshot,
           EXISTS (SELECT 1 FROM cancelled_orders c
                   WHERE c.run_id = b.run_id AND c.account = b.account AND c.order_id = b.order_id) AS cancelled,
           EXISTS (SELECT 1 FROM cancel_rejects r
                   WHERE r.run_id = b.run_id AND r.account = b.account AND r.order_id = b.order_id) AS rejected,
           EXISTS (SELECT 1 FROM open_orders_after o
                   WHERE o.run_id = b.run_id AND o.account = b.account AND o.order_id = b.order_id) AS listed_after
    FROM open_orders_before b
    UNION ALL
    SELECT c.run_id, c.account, c.order_id, 0, 1,
           EXISTS (SELECT 1 FROM cancel_rejects r
                   WHERE r.run_id = c.run_id AND r.account = c.account AND r.order_id = c.order_id),
           EXISTS (SELECT 1 FROM open_orders_after o
                   WHERE o.run_id = c.run_id AND o.account = c.account AND o.order_id = c.order_id)
    FROM cancelled_orders c
    WHERE NOT EXISTS (SELECT 1 FROM open_orders_before b
                      WHERE b.run_id = c.run_id AND b.account = c.account AND b.order_id = c.order_id)
    UNION ALL
    SELECT r.run_id, r.account, r.order_id, 0, 0, 1,
           EXISTS (SELECT 1 FROM open_orders_after o
                   WHERE o.run_id = r.run_id AND o.account = r.account AND o.order_id = r.order_id)
    FROM cancel_rejects r
    WHERE NOT EXISTS (SELECT 1 FROM open_orders_before b
                      WHERE b.run_id = r.run_id AND b.account = r.account AND b.order_id = r.order_id)
      AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                      WHERE c.run_id = r.run_id AND c.account = r.account AND c.order_id = r.order_id)
    UNION ALL
    SELECT o.run_id, o.account, o.order_id, 0, 0, 0, 1
    FROM open_orders_after o
    WHERE NOT EXISTS (SELECT 1 FROM open_orders_before b
                      WHERE b.run_id = o.run_id AND b.account = o.account AND b.order_id = o.order_id)
      AND NOT EXISTS (SELECT 1 FROM cancelled_orders c
                      WHERE c.run_id = o.run_id AND c.account = o.account AND c.order_id = o.order_id)
      AND NOT EXISTS (SELECT 1 FROM cancel_rejects r
                      WHERE r.run_id = o.run_id AND r.account = o.account AND r.order_id = o.order_id)
) i
JOIN (SELECT run_id, account,
             snapshot_attempt_id IS NOT NULL AS snapshot_taken,
             coalesce(verify_attempt_id > last_cancel_attempt_id, 0) AS verified
      FROM run_accounts) a ON a.run_id = i.run_id AND a.account = i.account;

-- One row per run.
--   accounts_without_snapshot / accounts_unverified: accounts whose "before" listing, or whose
--   listing after the last cancel-all, is missing; open_before / open_after then sum only the
--   accounts that have one (a lower bound, not a count).
--   clean: 1 when every enabled account is verified flat; 0 when some account is dirty; NULL
--   while the run is going, or when accounts were swept without verification (--no-verify).
CREATE VIEW run_reconciliation AS
SELECT r.run_id, r.group_name, r.started_at, r.ended_at, r.status, r.stop_reason, r.base_url,
       r.key_fingerprint,
       CAST(round((julianday(coalesce(r.ended_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
                   - julianday(r.started_at)) * 86400000) AS INTEGER) AS duration_ms,
       coalesce(t.accounts, 0) AS accounts,
       coalesce(t.accounts_skipped, 0) AS accounts_skipped,
       coalesce(t.accounts_clean, 0) AS accounts_clean,
       coalesce(t.accounts_dirty, 0) AS accounts_dirty,
       coalesce(t.accounts_without_snapshot, 0) AS accounts_without_snapshot,
       coalesce(t.accounts_unverified, 0) AS accounts_unverified,
       coalesce(t.open_before, 0) AS open_before,
       coalesce(t.cancelled, 0) AS cancelled,
       coalesce(t.rejected, 0) AS rejected,
       coalesce(t.open_after, 0) AS open_after,
       coalesce(t.unexplained, 0) AS unexplained,
       coalesce(t.unverified, 0) AS unverified,
       coalesce(t.late, 0) AS late,
       CASE
           WHEN r.status = 'running' THEN NULL
           WHEN coalesce(t.accounts_dirty, 0) > 0 THEN 0
           WHEN coalesce(t.accounts_unknown, 0) > 0 THEN NULL
           ELSE 1
       END AS clean
FROM runs r
-- An inner join (every run has its accounts) so that `WHERE run_id = ?` reaches the aggregate.
JOIN (
    SELECT run_id,
           count(*) AS accounts,
           sum(status = 'skipped') AS accounts_skipped,
           sum(clean IS 1) AS accounts_clean,
           sum(dirty) AS accounts_dirty,
           sum(status <> 'skipped' AND NOT snapshot_taken) AS accounts_without_snapshot,
           sum(status <> 'skipped' AND NOT verified) AS accounts_unverified,
           sum(status <> 'skipped' AND clean IS NULL) AS accounts_unknown,
           sum(open_before) AS open_before,
           sum(cancelled) AS cancelled,
           sum(rejected) AS rejected,
           sum(open_after) AS open_after,
           sum(unexplained) AS unexplained,
           sum(unverified) AS unverified,
           sum(late) AS late
    FROM account_reconciliation
    GROUP BY run_id
) t ON t.run_id = r.run_id;
