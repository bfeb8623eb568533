-- gemini-sweep audit trail, version 1.
-- Times are UTC text, ISO 8601 with milliseconds ('2026-11-23T21:30:00.123Z'), so they sort and
-- read well in sqlite3. Order ids are INTEGER (SQLite's 64-bit signed integer).

CREATE TABLE runs (
    run_id          INTEGER PRIMARY KEY,
    started_at      TEXT    NOT NULL,
    ended_at        TEXT,
    -- running: in progress (or its process died: see pid);
    -- completed: every account swept, nothing left rejected;
    -- incomplete: finished, but some account failed or some order stayed rejected;
    -- interrupted: stopped by a signal before every account was done;
    -- aborted: stopped by an internal or database error.
    status          TEXT    NOT NULL CHECK (status IN ('running', 'completed', 'incomplete', 'interrupted', 'aborted')),
    base_url        TEXT    NOT NULL,
    -- 'master:<16 hex>' = key kind + start of SHA-256 of the key. Never the key, never the secret.
    key_fingerprint TEXT    NOT NULL,
    -- The run's options as JSON (rate, burst, concurrency, timeout, attempts, nonce mode...).
    options         TEXT    NOT NULL,
    pid             INTEGER NOT NULL,
    tool_version    TEXT    NOT NULL
) STRICT;

CREATE TABLE run_accounts (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    -- Position in the accounts CSV (1-based line), so reports follow the file's order.
    csv_line        INTEGER NOT NULL,
    note            TEXT,
    -- pending: not finished yet; swept: cancel-all succeeded and nothing stayed rejected;
    -- rejects_left: cancel-all succeeded but some orders refused cancellation;
    -- failed: gave up (permanent error, or out of attempts); skipped: enabled=false in the CSV;
    -- interrupted: the run was stopped before this account finished.
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'swept', 'rejects_left', 'failed', 'skipped', 'interrupted')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Distinct orders cancelled; distinct orders rejected and never cancelled later in the run.
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    rejected_count  INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    finished_at     TEXT,
    -- When the open orders were listed before the cancel-all and after it (NULL: not listed,
    -- because --no-verify was given or the listing failed).
    snapshot_at     TEXT,
    verified_at     TEXT,
    PRIMARY KEY (run_id, account)
) STRICT;

-- Every HTTP attempt, successful or not, in the order it was sent.
CREATE TABLE attempts (
    attempt_id      INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    -- 1, 2, ... per account and run, across retries and reject re-tries.
    attempt_no      INTEGER NOT NULL,
    -- snapshot: listing open orders before; cancel: cancel-all; verify: listing open orders after.
    phase           TEXT    NOT NULL CHECK (phase IN ('snapshot', 'cancel', 'verify')),
    endpoint        TEXT    NOT NULL,
    -- As sent: integer milliseconds (increasing mode) or 'seconds.millis' (time mode).
    nonce           TEXT    NOT NULL,
    sent_at         TEXT    NOT NULL,
    latency_ms      INTEGER NOT NULL,
    -- NULL when no HTTP reply arrived (time-out, connection reset).
    http_status     INTEGER,
    -- ok: the call did what it should; transient: retried if attempts remained; permanent: not retried.
    outcome         TEXT    NOT NULL CHECK (outcome IN ('ok', 'transient', 'permanent')),
    -- The exchange's reason (InvalidNonce, RateLimit...) or ours (Timeout, ConnectionError,
    -- UnparseableBody, ResponseTooLarge, HTTP502...). NULL when ok.
    error_reason    TEXT,
    error_message   TEXT,
    -- The reply as it came, cut at 4 KiB (body_truncated = 1 when cut).
    body            TEXT    NOT NULL,
    body_truncated  INTEGER NOT NULL,
    UNIQUE (run_id, account, attempt_no)
) STRICT;

CREATE INDEX attempts_by_account ON attempts (run_id, account);

CREATE TABLE cancelled_orders (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    order_id        INTEGER NOT NULL,
    -- The attempt whose reply first reported the cancellation.
    attempt_id      INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT;

CREATE TABLE cancel_rejects (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    order_id        INTEGER NOT NULL,
    -- The attempt whose reply first reported the reject.
    attempt_id      INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id)
) STRICT;

-- Open orders as /v1/orders listed them before the cancel-all (snapshot) and after it (verify).
CREATE TABLE open_orders_before (
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
) STRICT;

CREATE TABLE open_orders_after (
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
) STRICT;

-- Order ids that do not fit SQLite's INTEGER (above 2^63 - 1; never seen on Gemini, but the
-- API says u64). Kept as text so that no reported id is ever dropped; normally empty.
CREATE TABLE unstorable_order_ids (
    run_id          INTEGER NOT NULL REFERENCES runs (run_id),
    account         TEXT    NOT NULL,
    order_id        TEXT    NOT NULL,
    -- cancelled, rejected, open_orders_before or open_orders_after
    listed_as       TEXT    NOT NULL,
    attempt_id      INTEGER NOT NULL REFERENCES attempts (attempt_id),
    PRIMARY KEY (run_id, account, order_id, listed_as)
) STRICT;

-- The highest nonce (milliseconds) that any run may have used with a key. Every new nonce is
-- above it, so nonces never go backwards, across runs and clock steps.
CREATE TABLE nonce_high_water (
    key_fingerprint TEXT    PRIMARY KEY,
    high_water_ms   INTEGER NOT NULL,
    updated_at      TEXT    NOT NULL
) STRICT;
