//! One run at a time per database and per API key.
//!
//! Two sweeps with one key would race each other's nonces; two sweeps into one database would
//! interleave their audit trails. Each is guarded by an OS file lock (released by the kernel when
//! the holder dies, so a crash never leaves a lock that blocks forever). The lock file also holds
//! the holder's pid and run id, so the refusal can name them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

pub struct RunLock {
    files: Vec<(PathBuf, File)>,
}

impl RunLock {
    /// Takes the database's lock (`<db>.lock`) and the key's lock (`<lock_dir>/gemini-sweep-<key
    /// fingerprint>.lock`), or says who holds them.
    pub fn acquire(db: &Path, lock_dir: &Path, key_fingerprint: &str) -> Result<RunLock, Error> {
        let mut db_lock = db.as_os_str().to_owned();
        db_lock.push(".lock");
        let key_file = format!("gemini-sweep-{}.lock", key_fingerprint.replace(':', "-"));
        let mut files = Vec::new();
        for (path, what) in [
            (PathBuf::from(db_lock), "this database"),
            (lock_dir.join(key_file), "this API key"),
        ] {
            files.push((path.clone(), take(&path, what)?));
        }
        let mut lock = RunLock { files };
        lock.set_run(None);
        Ok(lock)
    }

    /// Records the run id beside our pid, for whoever is refused next.
    pub fn set_run(&mut self, run_id: Option<i64>) {
        let text = match run_id {
            Some(id) => format!("pid={} run={id}\n", std::process::id()),
            None => format!("pid={} run=starting\n", std::process::id()),
        };
        for (path, file) in &mut self.files {
            let written = file
                .set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(text.as_bytes()))
                .and_then(|()| file.flush());
            if let Err(e) = written {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the lock file");
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        for (_, file) in &mut self.files {
            let _ = file.set_len(0);
        }
    }
}

fn take(path: &Path, what: &str) -> Result<File, Error> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::Store {
            path: path.to_path_buf(),
            reason: format!("cannot create the lock file: {e}"),
        })?;
    let mut previous = String::new();
    let _ = file.read_to_string(&mut previous);
    let previous = previous.trim().to_string();
    match file.try_lock() {
        Ok(()) => {
            if let Some(pid) = holder_pid(&previous) {
                tracing::warn!(
                    lock = %path.display(),
                    "taking over a stale lock left by pid {pid} ({previous}), which is no longer running"
                );
            }
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => Err(Error::Config(format!(
            "another gemini-sweep is already running with {what} ({}; lock {}); wait for it to finish or stop it",
            if previous.is_empty() {
                "holder unknown"
            } else {
                &previous
            },
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(Error::Store {
            path: path.to_path_buf(),
            reason: format!("cannot lock: {e}"),
        }),
    }
}

fn holder_pid(content: &str) -> Option<u32> {
    content
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let mut first = RunLock::acquire(&db, dir.path(), "master:0011").unwrap();
        first.set_run(Some(42));
        let err = RunLock::acquire(&db, dir.path(), "master:0011")
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid={} run=42", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("this database"), "{msg}");
        assert_eq!(err.exit_code(), crate::error::exit_code::BAD_INPUT);

        // Same key, other database: refused because of the key.
        let other = dir.path().join("b.db");
        let msg = RunLock::acquire(&other, dir.path(), "master:0011")
            .err()
            .expect("refused")
            .to_string();
        assert!(msg.contains("this API key"), "{msg}");

        drop(first);
        assert!(RunLock::acquire(&db, dir.path(), "master:0011").is_ok());
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(dir.path().join("a.db.lock"), "pid=999999999 run=7\n").unwrap();
        assert!(RunLock::acquire(&db, dir.path(), "master:22").is_ok());
    }
}
