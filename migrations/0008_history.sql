-- gemini-sweep audit trail, version 8: what a lost reply cancelled, read from the history.
--
-- A cancel-all whose reply never arrived (the process was killed, the connection broke, a 500,
-- 502 or 504 came back) may have cancelled orders that no reply reported. A 503 or a 429 says the
-- request was turned away before it acted. After such an account is proven flat, the run reads
-- its closed orders from `/v1/orders/history` (phase `recover`) and keeps the cancelled ones in
-- `history_cancelled`: what the exchange says, nothing inferred.
-- The view `unreported_cancels` then names the orders the lost request may have cancelled.

CREATE TABLE attempts_v8 (
    attempt_id      INTEGER PRIMARY KEY,
    -- NULL for a listing made by `gemini-sweep accounts`, outside any run.
    run_id          INTEGER REFERENCES runs (run_id),
    invocation_id   INTEGER REFERENCES invocations (invocation_id),
    -- The account the request named; '' for the group (discover).
    account         TEXT    NOT NULL,
    -- 1, 2, ... per account and run, across retries, reject re-tries, holds and resumes.
    attempt_no      INTEGER NOT NULL,
    -- discover: listing the group's accounts; snapshot: listing open orders before;
    -- cancel: cancel-all; verify: listing open orders after; hold: a listing or a cancel-all
    -- while the run holds the group flat after its sweep (the endpoint says which); recover:
    -- reading the order history after a cancel-all whose reply was lost.
    phase           TEXT    NOT NULL CHECK (phase IN ('discover', 'snapshot', 'cancel', 'verify', 'hold', 'recover')),
    endpoint        TEXT    NOT NULL,
    -- The key (fingerprint) that signed it: a listing outside a run has no run to say so.
    key_fingerprint TEXT,
    nonce           TEXT    NOT NULL,
    sent_at         TEXT    NOT NULL,
    latency_ms      INTEGER,
    http_status     INTEGER,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('in_flight', 'ok', 'transient', 'permanent', 'abandoned')),
    error_reason    TEXT,
    error_message   TEXT,
    body            TEXT,
    body_truncated  INTEGER NOT NULL DEFAULT 0,
    items           INTEGER,
    UNIQUE (run_id, account, attempt_no)
) STRICT;

INSERT INTO attempts_v8 (attempt_id, run_id, invocation_id, account, attempt_no, phase, endpoint,
    key_fingerprint, nonce, sent_at, latency_ms, http_status, outcome, error_reason,
    error_message, body, body_truncated, items)
SELECT attempt_id, run_id, invocation_id, account, attempt_no, phase, endpoint,
       key_fingerprint, nonce, sent_at, latency_ms, http_status, outcome, error_reason,
       error_message, body, body_truncated, items
FROM attempts;

DROP INDEX attempts_in_flight;
DROP TABLE attempts;
ALTER TABLE attempts_v8 RENAME TO attempts;
CREATE INDEX attempts_in_flight ON attempts (invocation_id) WHERE outcome = 'in_flight';

-- Orders `/v1/orders/history` listed as cancelled (`is_cancelled: true`) for an account of the
-- run, as the exchange listed them. Filled orders are not kept.
CREATE TABLE history_cancelled (
    run_id           INTEGER NOT NULL REFERENCES runs (run_id),
    account          TEXT    NOT NULL,
    order_id         INTEGER NOT NULL,
    symbol           TEXT    NOT NULL,
    side             TEXT    NOT NULL,
    price            TEXT    NOT NULL,
    remaining_amount TEXT    NOT NULL,
    client_order_id  TEXT,
    placed_at        TEXT,
    -- The history listing (phase `recover`) that listed it first.
    attempt_id       INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT, WITHOUT ROWID;

-- The cancelled orders of the history that no reply of the run reported, each with the request
-- that may have cancelled it (lost_attempt_id): the account's first cancel-all of the run whose
-- reply never arrived (abandoned, a transport failure, a 500, 502 or 504) and that left
-- after the order was placed (5 s allowed for the two clocks). An order placed before an earlier
-- answered cancel-all of the account with the same key (any run) is left out, unless a run saw
-- it still open after that (rejected, or listed open): that cancel-all would have reported it.
-- The history does not say who cancelled an order: the lost request, or anyone else in between.
CREATE VIEW unreported_cancels AS
WITH lost AS (
    SELECT x.attempt_id, x.run_id, x.account, x.sent_at,
           (SELECT max(y.sent_at) FROM attempts y
            WHERE y.account = x.account AND y.key_fingerprint = x.key_fingerprint
              AND y.endpoint = '/v1/order/cancel/all' AND y.outcome = 'ok'
              AND y.attempt_id < x.attempt_id) AS answered_before
    FROM attempts x
    WHERE x.endpoint = '/v1/order/cancel/all'
      AND (x.outcome = 'abandoned'
           OR (x.outcome = 'transient'
                AND coalesce(x.http_status, 500) IN (500, 502, 504)))
), matched AS (
    SELECT h.run_id, h.account, h.order_id, h.placed_at, h.attempt_id AS history_attempt_id,
           (SELECT l.attempt_id FROM lost l
            WHERE l.run_id = h.run_id AND l.account = h.account
              AND (h.placed_at IS NULL
                   OR julianday(h.placed_at) <= julianday(l.sent_at) + 5.0 / 86400)
            ORDER BY l.attempt_id LIMIT 1) AS lost_attempt_id
    FROM history_cancelled h
    WHERE NOT EXISTS (SELECT 1 FROM cancelled_orders c
                      WHERE c.run_id = h.run_id AND c.account = h.account
                        AND c.order_id = h.order_id)
)
SELECT m.run_id, m.account, m.order_id, m.placed_at, m.lost_attempt_id, m.history_attempt_id
FROM matched m
JOIN lost l ON l.attempt_id = m.lost_attempt_id
WHERE l.answered_before IS NULL
   OR m.placed_at IS NULL
   OR julianday(m.placed_at) >= julianday(l.answered_before) - 5.0 / 86400
   OR EXISTS (SELECT 1 FROM cancel_rejects r
              WHERE r.account = m.account AND r.order_id = m.order_id)
   OR EXISTS (SELECT 1 FROM open_orders_after o
              WHERE o.account = m.account AND o.order_id = m.order_id);
