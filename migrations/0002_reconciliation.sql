-- Reconciliation views: the single source of every number `gemini-sweep report` prints.
-- An auditor running these views in sqlite3 gets the same answer as the tool.

-- Every order a run knows of, per account, with what happened to it.
--   in_snapshot: listed open before the cancel-all;  cancelled / rejected: reported by a cancel-all
--   reply;  open_after: listed open after the sweep;  snapshot_taken: the account's "before"
--   listing exists (not with --no-verify, or when it failed).
--   outcome: still_open   — open after the sweep (whatever else happened);
--            cancelled    — cancelled, and in the snapshot (or there is no snapshot to compare);
--            late         — cancelled but not in the snapshot: placed during the sweep;
--            rejected     — refused cancellation, never cancelled, and not open after;
--            unexplained  — in the snapshot, but neither cancelled, rejected nor open after
--                           (filled, or cancelled elsewhere, or by a reply we never received).
CREATE VIEW order_reconciliation AS
WITH ids AS (
    SELECT run_id, account, order_id FROM open_orders_before
    UNION SELECT run_id, account, order_id FROM cancelled_orders
    UNION SELECT run_id, account, order_id FROM cancel_rejects
    UNION SELECT run_id, account, order_id FROM open_orders_after
), flags AS (
    SELECT i.run_id, i.account, i.order_id,
           EXISTS (SELECT 1 FROM open_orders_before b
                   WHERE b.run_id = i.run_id AND b.account = i.account AND b.order_id = i.order_id) AS in_snapshot,
           EXISTS (SELECT 1 FROM cancelled_orders c
                   WHERE c.run_id = i.run_id AND c.account = i.account AND c.order_id = i.order_id) AS cancelled,
           EXISTS (SELECT 1 FROM cancel_rejects r
                   WHERE r.run_id = i.run_id AND r.account = i.account AND r.order_id = i.order_id) AS rejected,
           EXISTS (SELECT 1 FROM open_orders_after a
                   WHERE a.run_id = i.run_id AND a.account = i.account AND a.order_id = i.order_id) AS open_after,
           EXISTS (SELECT 1 FROM run_accounts s
                   WHERE s.run_id = i.run_id AND s.account = i.account AND s.snapshot_at IS NOT NULL) AS snapshot_taken
    FROM ids i
)
SELECT run_id, account, order_id, in_snapshot, cancelled, rejected, open_after,
       CASE
           WHEN open_after THEN 'still_open'
           WHEN cancelled AND (in_snapshot OR NOT snapshot_taken) THEN 'cancelled'
           WHEN cancelled THEN 'late'
           WHEN rejected THEN 'rejected'
           ELSE 'unexplained'
       END AS outcome,
       -- Placed during the sweep: not in the snapshot, yet cancelled or open after.
       (snapshot_taken AND NOT in_snapshot AND (cancelled OR open_after)) AS late_arrival
FROM flags;

-- One row per account of each run.
--   verified: the account was listed after the sweep;  clean: verified and nothing open after
--   (NULL for skipped accounts and for runs made with --no-verify, where it is unknown; 0 for an
--   account not yet verified).
--   dirty: not swept, or swept but not verified flat (what `report --only dirty` lists and what
--   makes a run incomplete).
CREATE VIEW account_reconciliation AS
SELECT *, (status <> 'skipped' AND (status <> 'swept' OR coalesce(clean, 1) = 0)) AS dirty
FROM (
SELECT a.run_id, a.account, a.csv_line, a.status, a.attempts, a.last_error,
       a.snapshot_at IS NOT NULL AS snapshot_taken,
       a.verified_at IS NOT NULL AS verified,
       (SELECT count(*) FROM open_orders_before b WHERE b.run_id = a.run_id AND b.account = a.account) AS open_before,
       (SELECT count(*) FROM cancelled_orders c WHERE c.run_id = a.run_id AND c.account = a.account) AS cancelled,
       -- Refused cancellation and never cancelled later in the run (a reject that a re-try
       -- cancelled counts as cancelled). The same count as run_accounts.rejected_count.
       (SELECT count(*) FROM order_reconciliation x
        WHERE x.run_id = a.run_id AND x.account = a.account AND x.rejected AND NOT x.cancelled) AS rejected,
       (SELECT count(*) FROM open_orders_after o WHERE o.run_id = a.run_id AND o.account = a.account) AS open_after,
       (SELECT count(*) FROM order_reconciliation x
        WHERE x.run_id = a.run_id AND x.account = a.account AND x.outcome = 'unexplained') AS unexplained,
       (SELECT count(*) FROM order_reconciliation x
        WHERE x.run_id = a.run_id AND x.account = a.account AND x.late_arrival) AS late,
       CASE
           WHEN a.status = 'skipped' THEN NULL
           WHEN NOT coalesce(json_extract(r.options, '$.verify'), 1) THEN NULL
           ELSE a.verified_at IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM open_orders_after o WHERE o.run_id = a.run_id AND o.account = a.account)
       END AS clean
FROM run_accounts a
JOIN runs r ON r.run_id = a.run_id
);

-- One row per run. clean: every swept account verified with nothing open after (skipped
-- accounts do not count); NULL while the run is still going or when it ran with --no-verify.
CREATE VIEW run_reconciliation AS
SELECT r.run_id, r.started_at, r.ended_at, r.status, r.base_url, r.key_fingerprint,
       CAST(round((julianday(coalesce(r.ended_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
                   - julianday(r.started_at)) * 86400000) AS INTEGER) AS duration_ms,
       count(x.account) AS accounts,
       coalesce(sum(x.status = 'skipped'), 0) AS accounts_skipped,
       coalesce(sum(x.clean = 1), 0) AS accounts_clean,
       coalesce(sum(x.open_before), 0) AS open_before,
       coalesce(sum(x.cancelled), 0) AS cancelled,
       coalesce(sum(x.rejected), 0) AS rejected,
       coalesce(sum(x.open_after), 0) AS open_after,
       coalesce(sum(x.unexplained), 0) AS unexplained,
       coalesce(sum(x.late), 0) AS late,
       CASE
           WHEN r.status = 'running' THEN NULL
           WHEN NOT coalesce(json_extract(r.options, '$.verify'), 1) THEN NULL
           ELSE coalesce(sum(x.clean = 0), 0) = 0
       END AS clean
FROM runs r
LEFT JOIN account_reconciliation x ON x.run_id = r.run_id
GROUP BY r.run_id;
