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
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
}

pub fn migrate(conn: &mut Connection) -> Result<(), MigrationError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest_version() {
        return Err(MigrationError::TooNew {
            found: current,
            known: latest_version(),
        });
    }
    if current == latest_version() {
        return Ok(());
    }
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

    #[test]
    fn refuses_a_schema_from_the_future() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(err.to_string().contains("newer than this gemini-sweep"));
    }
}
