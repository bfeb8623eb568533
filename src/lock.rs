//! One run at a time per database and per API key.
//!
//! Two sweeps with one key would race each other's nonces; two sweeps into one database would
//! interleave their audit trails. Each is guarded by an OS file lock (released by the kernel when
//! the holder dies, so a crash never leaves a lock that blocks forever). The lock file also holds
//! the holder's pid and run id, so the refusal can name them.
//!
//! Both locks live beside the database by default (`<db>.lock` and
//! `<db's directory>/gemini-sweep-<key fingerprint>.lock`), never in a world-writable temp
//! directory where another user could pre-create them, or where systemd's `PrivateTmp` would give
//! each service its own copy and let two runs share a key. `--lock-dir` moves the key's lock to a
//! directory every job using the key shares.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::output_file::{OutputError, Refusal};

/// Why a job could not take its locks.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds one: `what` it guards, who holds it (as its file says), where.
    #[error(
        "another gemini-sweep is already running with {what} ({holder}; lock {}); wait for it to finish or stop it",
        path.display()
    )]
    Held {
        what: &'static str,
        holder: String,
        path: PathBuf,
    },
    /// What stands at a lock's path is no lock file: a device, a FIFO, a socket or a link.
    #[error(transparent)]
    Refused(#[from] OutputError),
    #[error(
        "--lock-dir {}: {problem}; name the directory every job using the key shares",
        dir.display()
    )]
    LockDir {
        dir: PathBuf,
        problem: LockDirProblem,
    },
    /// A lock file could not be created, looked at or locked. In `--lock-dir` it is the user's to
    /// fix (`lock_dir` is set); beside the database, the database's.
    #[error("{}: cannot {doing} {}: {source}", place(.db, .lock_dir), path.display())]
    Unusable {
        db: PathBuf,
        lock_dir: Option<PathBuf>,
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with `--lock-dir`.
#[derive(Debug, thiserror::Error)]
pub enum LockDirProblem {
    #[error("is not a directory")]
    NotADirectory,
    #[error("does not exist")]
    Missing,
    #[error("cannot be looked at ({0})")]
    Unreadable(#[source] std::io::Error),
}

/// Where an unusable lock file is: `--lock-dir DIR`, or the database it guards.
fn place(db: &Path, lock_dir: &Option<PathBuf>) -> String {
    match lock_dir {
        Some(dir) => format!("--lock-dir {}", dir.display()),
        None => format!("database {}", db.display()),
    }
}

pub struct RunLock {
    /// The database's lock first, then one per key, each with the key's fingerprint.
    files: Vec<(Option<String>, PathBuf, File)>,
}

impl RunLock {
    /// Takes the database's lock (`<db>.lock`) and each key's lock (see [`key_lock_path`]), or
    /// says who holds one. Several keys are one job sweeping several groups. Each lock file must
    /// be absent or a regular file ([`check_outputs`]); a refusal is bad input.
    pub fn acquire(
        db: &Path,
        lock_dir: Option<&Path>,
        key_fingerprints: &[String],
    ) -> Result<RunLock, LockError> {
        check_outputs(db, lock_dir, key_fingerprints)?;
        let mut files = Vec::new();
        for lock in lock_files(db, lock_dir, key_fingerprints) {
            let file = take(&lock).map_err(|e| e.into_error(db, lock_dir, &lock))?;
            files.push((lock.fingerprint, lock.path, file));
        }
        let lock = RunLock { files };
        lock.set_run(None, None);
        Ok(lock)
    }

    /// Records the run id beside our pid, for whoever is refused next: in the key's lock file
    /// (every key's when `key` is `None`) and in the database's.
    pub fn set_run(&self, key: Option<&str>, run_id: Option<i64>) {
        let text = match run_id {
            Some(id) => format!("pid={} run={id}\n", std::process::id()),
            None => format!("pid={} run=starting\n", std::process::id()),
        };
        for (fingerprint, path, file) in &self.files {
            if key.is_some() && fingerprint.is_some() && fingerprint.as_deref() != key {
                continue;
            }
            let mut file = file;
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
        for (_, _, file) in &self.files {
            let _ = file.set_len(0);
        }
    }
}

/// Where the key's lock lives: in `lock_dir` when given, else beside the database.
pub fn key_lock_path(db: &Path, lock_dir: Option<&Path>, key_fingerprint: &str) -> PathBuf {
    let name = format!("gemini-sweep-{}.lock", key_fingerprint.replace(':', "-"));
    match lock_dir {
        Some(dir) => dir.join(name),
        None => crate::output_file::directory_of(db).join(name),
    }
}

/// One lock file a job takes, and how a refusal names it: `--db a.db: its lock file a.db.lock`.
struct LockFile {
    flag: &'static str,
    given: PathBuf,
    what: &'static str,
    path: PathBuf,
    /// The key's fingerprint; `None` for the database's lock.
    fingerprint: Option<String>,
}

impl LockFile {
    fn refused(&self, refusal: Refusal) -> LockError {
        crate::output_file::derived_error(self.flag, &self.given, self.what, &self.path, refusal)
            .into()
    }
}

fn lock_files(db: &Path, lock_dir: Option<&Path>, key_fingerprints: &[String]) -> Vec<LockFile> {
    let mut db_lock = db.as_os_str().to_owned();
    db_lock.push(".lock");
    let mut files = vec![LockFile {
        flag: "--db",
        given: db.to_path_buf(),
        what: "lock file",
        path: PathBuf::from(db_lock),
        fingerprint: None,
    }];
    for fingerprint in key_fingerprints {
        let (flag, given) = match lock_dir {
            Some(dir) => ("--lock-dir", dir),
            None => ("--db", db),
        };
        files.push(LockFile {
            flag,
            given: given.to_path_buf(),
            what: "key's lock file",
            path: key_lock_path(db, lock_dir, fingerprint),
            fingerprint: Some(fingerprint.clone()),
        });
    }
    files
}

/// Refuses, before anything is sent, the lock files a job could not take: `--lock-dir` must be
/// a directory (a link to one is followed: Debian's /var/lock is one), and each lock file absent
/// or a regular file, never a device, a FIFO, a socket or a link.
pub fn check_outputs(
    db: &Path,
    lock_dir: Option<&Path>,
    key_fingerprints: &[String],
) -> Result<(), LockError> {
    if let Some(dir) = lock_dir {
        let problem = match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some(LockDirProblem::NotADirectory),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(LockDirProblem::Missing),
            Err(e) => Some(LockDirProblem::Unreadable(e)),
        };
        if let Some(problem) = problem {
            let dir = dir.to_path_buf();
            return Err(LockError::LockDir { dir, problem });
        }
    }
    for lock in lock_files(db, lock_dir, key_fingerprints) {
        crate::output_file::check(&lock.path).map_err(|r| lock.refused(r))?;
    }
    Ok(())
}

/// Why a lock was not taken: a refusal as it stands (someone holds the lock, or what stands at
/// the path is no lock file), or the file cannot be used: what was being done, and why not.
enum TakeError {
    Refused(LockError),
    Unusable(&'static str, std::io::Error),
}

impl TakeError {
    fn into_error(self, db: &Path, lock_dir: Option<&Path>, lock: &LockFile) -> LockError {
        match self {
            TakeError::Refused(e) => e,
            TakeError::Unusable(doing, source) => LockError::Unusable {
                db: db.to_path_buf(),
                // Only the key's lock lives in --lock-dir.
                lock_dir: lock_dir
                    .filter(|_| lock.fingerprint.is_some())
                    .map(Path::to_path_buf),
                doing,
                path: lock.path.clone(),
                source,
            },
        }
    }
}

fn take(lock: &LockFile) -> Result<File, TakeError> {
    let path = lock.path.as_path();
    let what = match lock.fingerprint {
        Some(_) => "this API key",
        None => "this database",
    };
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    // A link put there since the check is not followed, and a FIFO does not block the open; what
    // was opened is looked at before anything is written to it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(TakeError::Refused(lock.refused(Refusal::Symlink)));
        }
        Err(e) => return Err(TakeError::Unusable("create the lock file", e)),
    };
    let opened = file
        .metadata()
        .map_err(|e| TakeError::Unusable("look at the lock file", e))?;
    crate::output_file::acceptable(&opened).map_err(|r| TakeError::Refused(lock.refused(r)))?;
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
        Err(TryLockError::WouldBlock) => Err(TakeError::Refused(LockError::Held {
            what,
            holder: if previous.is_empty() {
                "holder unknown".to_owned()
            } else {
                previous
            },
            path: path.to_path_buf(),
        })),
        Err(TryLockError::Error(e)) => Err(TakeError::Unusable("lock", e)),
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
        let first = RunLock::acquire(&db, None, &["master:0011".into()]).unwrap();
        first.set_run(Some("master:0011"), Some(42));
        let err = RunLock::acquire(&db, None, &["master:0011".into()])
            .err()
            .expect("refused");
        assert!(matches!(err, LockError::Held { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid={} run=42", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("this database"), "{msg}");

        // Same key, other database: refused because of the key.
        let other = dir.path().join("b.db");
        let msg = RunLock::acquire(&other, None, &["master:0011".into()])
            .err()
            .expect("refused")
            .to_string();
        assert!(msg.contains("this API key"), "{msg}");

        drop(first);
        assert!(RunLock::acquire(&db, None, &["master:0011".into()]).is_ok());
    }

    #[test]
    fn a_job_of_several_groups_holds_every_key_and_names_each_key_s_run() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let keys = ["master:aa".to_string(), "master:bb".to_string()];
        let both = RunLock::acquire(&db, None, &keys).unwrap();
        both.set_run(Some("master:bb"), Some(8));
        both.set_run(Some("master:aa"), Some(7));
        let other_db = dir.path().join("b.db");
        let msg = RunLock::acquire(&other_db, None, &["master:bb".into()])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            msg.contains("this API key") && msg.contains("run=8"),
            "{msg}"
        );
        assert!(RunLock::acquire(&other_db, None, &["master:cc".into()]).is_ok());
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(dir.path().join("a.db.lock"), "pid=999999999 run=7\n").unwrap();
        assert!(RunLock::acquire(&db, None, &["master:22".into()]).is_ok());
    }

    #[test]
    fn lock_files_are_private_and_a_bad_lock_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let lock = RunLock::acquire(&db, None, &["master:33".into()]).unwrap();
        #[cfg(unix)]
        for (_, path, _) in &lock.files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
            assert_eq!(path.parent(), Some(dir.path()), "beside the database");
        }
        drop(lock);
        let missing = dir.path().join("no-such-dir");
        let err = RunLock::acquire(&db, Some(&missing), &["master:33".into()])
            .err()
            .expect("refused");
        assert!(matches!(err, LockError::LockDir { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("--lock-dir "), "{msg}");
        assert!(!msg.contains("database"), "{msg}");
    }

    /// Past the up-front check (something put there since), the open itself neither follows a
    /// link nor blocks on a FIFO, and refuses both as bad input.
    #[cfg(unix)]
    #[test]
    fn a_link_or_a_fifo_put_at_a_lock_path_after_the_check_is_refused_by_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let files = lock_files(&db, None, &[]);
        let lock = &files[0];
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &lock.path).unwrap();
        let refusal = |lock: &LockFile| match take(lock) {
            Err(TakeError::Refused(e)) => {
                assert!(matches!(e, LockError::Refused(_)), "{e}");
                e.to_string()
            }
            Err(TakeError::Unusable(doing, e)) => panic!("unusable, not refused: {doing}: {e}"),
            Ok(_) => panic!("taken"),
        };
        let msg = refusal(lock);
        assert!(msg.contains("symbolic link"), "{msg}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");

        std::fs::remove_file(&lock.path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&lock.path)
            .status()
            .unwrap();
        assert!(made.success());
        let msg = refusal(lock);
        assert!(msg.contains("FIFO"), "{msg}");
    }
}
