-- gemini-sweep audit trail, version 7: the hold.
--
-- `run --hold DURATION` keeps listing the swept accounts after the sweep, and cancels again
-- whatever appears, until the duration ends. Those requests are recorded like any other, with
-- phase `hold`; the endpoint says whether one listed (`/v1/orders`) or cancelled
-- (`/v1/order/cancel/all`). A hold listing proves an account flat as a verify listing does, and
-- a hold cancel-all counts as the account's latest cancel-all. Each invocation records how long
-- it held and how many full cycles (every held account listed once) it completed.

CREATE TABLE attempts_v7 (
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
    -- while the run holds the group flat after its sweep (the endpoint says which).
    phase           TEXT    NOT NULL CHECK (phase IN ('discover', 'snapshot', 'cancel', 'verify', 'hold')),
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

INSERT INTO attempts_v7 (attempt_id, run_id, invocation_id, account, attempt_no, phase, endpoint,
    key_fingerprint, nonce, sent_at, latency_ms, http_status, outcome, error_reason,
    error_message, body, body_truncated, items)
SELECT attempt_id, run_id, invocation_id, account, attempt_no, phase, endpoint,
       key_fingerprint, nonce, sent_at, latency_ms, http_status, outcome, error_reason,
       error_message, body, body_truncated, items
FROM attempts;

DROP INDEX attempts_in_flight;
DROP TABLE attempts;
ALTER TABLE attempts_v7 RENAME TO attempts;
CREATE INDEX attempts_in_flight ON attempts (invocation_id) WHERE outcome = 'in_flight';

-- How long this invocation held the group after its sweep (NULL: no hold), and how many full
-- cycles of listings it completed meanwhile.
ALTER TABLE invocations ADD COLUMN hold_ms INTEGER;
ALTER TABLE invocations ADD COLUMN hold_cycles INTEGER;
