//! Schema migrations: `migrations/NNNN_name.sql`, embedded in the binary, applied in order in one
//! transaction, recorded in `schema_migrations` and in `PRAGMA user_version`.

use rusqlite::Connection;

/// (version, file name, SQL). Append only: a released migration is never edited.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init.sql",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_reconciliation.sql",
        include_str!("../../migrations/0002_reconciliation.sql"),
    ),
    (
        3,
        "0003_invocations.sql",
        include_str!("../../migrations/0003_invocations.sql"),
    ),
    (
        4,
        "0004_discovery.sql",
        include_str!("../../migrations/0004_discovery.sql"),
    ),
    (
        5,
        "0005_listing.sql",
        include_str!("../../migrations/0005_listing.sql"),
    ),
    (
        6,
        "0006_empty_runs.sql",
        include_str!("../../migrations/0006_empty_runs.sql"),
    ),
    (
        7,
        "0007_hold.sql",
        include_str!("../../migrations/0007_hold.sql"),
    ),
    (
        8,
        "0008_history.sql",
        include_str!("../../migrations/0008_history.sql"),
    ),
];

pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "its schema version is {found}, newer than this gemini-sweep knows ({known}); use a newer gemini-sweep"
    )]
    TooNew { found: i64, known: i64 },
    #[error(
        "not a gemini-sweep database ({0}); give --db a file gemini-sweep created, or a new path"
    )]
    Foreign(String),
    #[error("not a usable SQLite database ({0})")]
    NotSqlite(#[source] rusqlite::Error),
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
}

/// Reads the schema version, refusing files that are not gemini-sweep's: not SQLite at all, or
/// another program's database (its `user_version` would otherwise be misread as ours).
pub fn check_identity(conn: &Connection) -> Result<i64, MigrationError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(MigrationError::NotSqlite)?;
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )
        .map_err(MigrationError::NotSqlite)?;
    let tables = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let ours = tables.iter().any(|t| t == "schema_migrations");
    if version == 0 && !tables.is_empty() && !ours {
        let mut shown = tables
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if tables.len() > 5 {
            shown.push_str(", ...");
        }
        return Err(MigrationError::Foreign(format!(
            "it already holds tables gemini-sweep did not create: {shown}"
        )));
    }
    if version > 0 && !ours {
        return Err(MigrationError::Foreign(format!(
            "its user_version is {version}, but it has none of gemini-sweep's tables"
        )));
    }
    if version > latest_version() {
        return Err(MigrationError::TooNew {
            found: version,
            known: latest_version(),
        });
    }
    Ok(version)
}

/// Applies the missing migrations. Foreign keys are off while they run (rebuilding a table that
/// others reference needs it; the bundled SQLite turns them on by default) and are checked before
/// the transaction commits.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let current = check_identity(conn)?;
    if current == latest_version() {
        return Ok(());
    }
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
    let result = apply(conn, current);
    if enforced {
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
    }
    result
}

fn apply(conn: &mut Connection, current: i64) -> Result<(), MigrationError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         ) STRICT;",
    )?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (version, name),
        )?;
    }
    let dangling: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if dangling > 0 {
        return Err(MigrationError::Foreign(format!(
            "{dangling} rows reference missing rows after the upgrade; the file is damaged"
        )));
    }
    tx.pragma_update(None, "user_version", latest_version())?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_records_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let recorded: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(recorded, MIGRATIONS.len() as i64);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, latest_version());
    }

    /// The view attributes to a lost cancel-all only what it may have cancelled: orders placed
    /// after the account's earlier answered cancel-all (or known open after it) and before the
    /// lost one left, that no reply reported.
    #[test]
    fn unreported_cancels_keeps_only_what_the_lost_request_may_have_cancelled() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO attempts (attempt_id, run_id, account, attempt_no, phase, endpoint,
                 key_fingerprint, nonce, sent_at, outcome) VALUES
               (1, 1, 'a', 1, 'cancel', '/v1/order/cancel/all', 'k', '1',
                '2026-12-03T10:00:00.000Z', 'ok'),
               (2, 1, 'a', 2, 'cancel', '/v1/order/cancel/all', 'k', '2',
                '2026-12-03T10:01:00.000Z', 'abandoned'),
               (3, 1, 'a', 3, 'recover', '/v1/orders/history', 'k', '3',
                '2026-12-03T10:05:00.000Z', 'ok');
             INSERT INTO cancel_rejects (run_id, account, order_id, attempt_id)
               VALUES (1, 'a', 102, 1);
             INSERT INTO cancelled_orders (run_id, account, order_id, attempt_id)
               VALUES (1, 'a', 105, 1);
             INSERT INTO history_cancelled (run_id, account, order_id, symbol, side, price,
                 remaining_amount, placed_at, attempt_id) VALUES
               (1, 'a', 100, 'btcusd', 'buy', '1', '1', '2026-12-03T09:00:00.000Z', 3),
               (1, 'a', 101, 'btcusd', 'buy', '1', '1', '2026-12-03T09:59:58.000Z', 3),
               (1, 'a', 102, 'btcusd', 'buy', '1', '1', '2026-12-03T09:00:00.000Z', 3),
               (1, 'a', 103, 'btcusd', 'buy', '1', '1', '2026-12-03T10:00:30.000Z', 3),
               (1, 'a', 104, 'btcusd', 'buy', '1', '1', '2026-12-03T10:02:00.000Z', 3),
               (1, 'a', 105, 'btcusd', 'buy', '1', '1', '2026-12-03T10:00:40.000Z', 3);",
        )
        .unwrap();
        let mut stmt = conn
            .prepare("SELECT order_id, lost_attempt_id FROM unreported_cancels ORDER BY order_id")
            .unwrap();
        let rows: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // 100: placed before the answered cancel-all, which would have reported it; 104: placed
        // after the lost one left; 105: a reply reported it.
        assert_eq!(rows, [(101, 2), (102, 2), (103, 2)]);
    }

    #[test]
    fn refuses_a_schema_from_the_future() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(err.to_string().contains("newer than this gemini-sweep"));
    }

    #[test]
    fn refuses_another_programs_database_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER); PRAGMA user_version = 5;")
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("not a gemini-sweep database"), "{err}");
        assert!(!err.contains("newer"), "{err}");

        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER);")
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("invoices"), "{err}");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1, "nothing was added to it");
    }

    /// A database written by the previous release, with a finished run in it, upgrades with its
    /// history intact and reads the same through the new views.
    #[test]
    fn a_version_2_database_upgrades_with_its_history() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT;",
        )
        .unwrap();
        for (_, _, sql) in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            r#"PRAGMA user_version = 2;
            INSERT INTO runs VALUES (1, '2026-11-23T21:00:00.000Z', '2026-11-23T21:00:05.000Z', 'completed',
                'https://api.gemini.com/', 'master:00', '{"verify":true}', 42, '0.1.0');
            INSERT INTO run_accounts (run_id, account, csv_line, status, attempts, cancelled_count, snapshot_at, verified_at)
                VALUES (1, 'a', 2, 'swept', 3, 2, 't', 't');
            INSERT INTO attempts VALUES (1, 1, 'a', 1, 'snapshot', '/v1/orders', '1', 't', 1, 200, 'ok', NULL, NULL, '[]', 0);
            INSERT INTO attempts VALUES (2, 1, 'a', 2, 'cancel', '/v1/order/cancel/all', '2', 't', 1, 200, 'ok', NULL, NULL, '{}', 0);
            INSERT INTO attempts VALUES (3, 1, 'a', 3, 'verify', '/v1/orders', '3', 't', 1, 200, 'ok', NULL, NULL, '[]', 0);
            INSERT INTO open_orders_before VALUES (1, 'a', 10, 'btcusd', 'buy', '1', '1', NULL, NULL, 1);
            INSERT INTO open_orders_before VALUES (1, 'a', 11, 'btcusd', 'buy', '1', '1', NULL, NULL, 1);
            INSERT INTO cancelled_orders VALUES (1, 'a', 10, 2);
            INSERT INTO cancelled_orders VALUES (1, 'a', 11, 2);
            INSERT INTO nonce_high_water VALUES ('master:00', 1700000000000, 't');"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let row: (String, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT status, accounts_clean, cancelled, open_before, clean FROM run_reconciliation WHERE run_id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row, ("completed".into(), 1, 2, 2, 1));
        let mark: i64 = conn
            .query_row("SELECT high_water_us FROM nonce_high_water", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(mark, 1_700_000_000_000_000);
        let invocations: i64 = conn
            .query_row(
                "SELECT count(*) FROM invocations WHERE run_id = 1 AND exit_code = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(invocations, 1);
    }
}
