-- gemini-sweep audit trail, version 6: a run with no accounts has its reconciliation row.
--
-- A run can end before it has any account: `run --all-accounts` whose listing was refused, or
-- that a signal stopped before the listing came back. run_reconciliation joined each run to the
-- aggregate of its accounts, so such a run had no row, and `report` and `runs` failed on it. The
-- view now has a second arm for runs without accounts: every count 0 and `clean` unknown (NULL),
-- unless the run completed (an empty group is vacuously flat). Two disjoint arms (UNION ALL), so
-- that `WHERE run_id = ?` still reaches each table's key.

DROP VIEW run_reconciliation;

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
-- An inner join, so that `WHERE run_id = ?` reaches the aggregate (runs without accounts are the
-- second arm).
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
) t ON t.run_id = r.run_id

UNION ALL
SELECT r.run_id, r.group_name, r.started_at, r.ended_at, r.status, r.stop_reason, r.base_url,
       r.key_fingerprint,
       CAST(round((julianday(coalesce(r.ended_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
                   - julianday(r.started_at)) * 86400000) AS INTEGER) AS duration_ms,
       0 AS accounts, 0 AS accounts_skipped, 0 AS accounts_clean, 0 AS accounts_dirty,
       0 AS accounts_without_snapshot, 0 AS accounts_unverified, 0 AS open_before,
       0 AS cancelled, 0 AS rejected, 0 AS open_after, 0 AS unexplained, 0 AS unverified,
       0 AS late,
       CASE WHEN r.status = 'completed' THEN 1 END AS clean
FROM runs r
WHERE NOT EXISTS (SELECT 1 FROM run_accounts a WHERE a.run_id = r.run_id);
