-- gemini-sweep audit trail, version 4: the requests that discover a group's accounts.
--
-- `run --all-accounts` lists the group's accounts (`/v1/account/list`) before sweeping them, and
-- `gemini-sweep accounts` lists them without sweeping anything. Those requests are signed with
-- the key's nonces like any other, so they are recorded the same way, before they leave: phase
-- `discover`, account '' (the group), and no run at all for a listing made outside a run.
-- `run_accounts.source` says where an account of a run came from.

CREATE TABLE attempts_v4 (
    attempt_id      INTEGER PRIMARY KEY,
    -- NULL for a listing made by `gemini-sweep accounts`, outside any run.
    run_id          INTEGER REFERENCES runs (run_id),
    invocation_id   INTEGER REFERENCES invocations (invocation_id),
    -- The account the request named; '' for the group (discover).
    account         TEXT    NOT NULL,
    -- 1, 2, ... per account and run, across retries, reject re-tries and resumes.
    attempt_no      INTEGER NOT NULL,
    -- discover: listing the group's accounts; snapshot: listing open orders before;
    -- cancel: cancel-all; verify: listing open orders after.
    phase           TEXT    NOT NULL CHECK (phase IN ('discover', 'snapshot', 'cancel', 'verify')),
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

INSERT INTO attempts_v4 (attempt_id, run_id, invocation_id, account, attempt_no, phase, endpoint,
    key_fingerprint, nonce, sent_at, latency_ms, http_status, outcome, error_reason,
    error_message, body, body_truncated, items)
SELECT t.attempt_id, t.run_id, t.invocation_id, t.account, t.attempt_no, t.phase, t.endpoint,
       (SELECT r.key_fingerprint FROM runs r WHERE r.run_id = t.run_id), t.nonce, t.sent_at,
       t.latency_ms, t.http_status, t.outcome, t.error_reason, t.error_message, t.body,
       t.body_truncated, t.items
FROM attempts t;

DROP INDEX attempts_in_flight;
DROP TABLE attempts;
ALTER TABLE attempts_v4 RENAME TO attempts;
CREATE INDEX attempts_in_flight ON attempts (invocation_id) WHERE outcome = 'in_flight';

-- Where an account of a run came from: `csv` (the accounts file) or `discovery`
-- (`/v1/account/list`, with --all-accounts). Accounts a discovery found but the run did not sweep
-- (custody, closed, excluded) are rows with status `skipped` and the reason in `note`.
ALTER TABLE run_accounts ADD COLUMN source TEXT NOT NULL DEFAULT 'csv'
    CHECK (source IN ('csv', 'discovery'));
