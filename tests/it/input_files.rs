//! Every file a run reads besides the secret (`--accounts`, `--config`, `--exclude-file`) goes
//! through the secret file's check: a regular file of bounded size, or exit 2 at once with the
//! file named, before anything is sent. A FIFO is never opened (that would wait for a writer
//! forever) and a device such as /dev/zero is never read (it never ends).
//!
//! A binary that hung on a FIFO would run into run_binary's deadline (TEST_TIMEOUT) and fail the
//! test; nothing here measures how fast the refusal is.

use std::path::Path;
use std::process::Output;

use crate::common::*;
use crate::raw_exchange::*;

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Which flag names the file under test, and the rest of a `run` that would otherwise go on
/// to send requests.
#[derive(Clone, Copy, Debug)]
enum Flag {
    Accounts,
    Config,
    ExcludeFile,
}

/// Runs `gemini-sweep run` with `file` given to `flag`, against an exchange that records every
/// request; returns the output and how many requests reached the exchange.
async fn run_with(ws: &Workspace, flag: Flag, file: &Path) -> (Output, usize) {
    let exchange = RawExchange::start(|_, _| Reply::json(200, "[]")).await;
    let file = file.display().to_string();
    let db = ws.db().display().to_string();
    let mut args = vec![
        "run".to_string(),
        "--base-url".into(),
        exchange.url.clone(),
        "--db".into(),
        db,
    ];
    match flag {
        Flag::Accounts => args.extend(["--accounts".into(), file]),
        Flag::Config => args.extend(["--config".into(), file]),
        Flag::ExcludeFile => {
            args.extend(["--all-accounts".into(), "--exclude-file".into(), file]);
        }
    }
    let output = run_binary(&args, &[]).await;
    (output, exchange.seen().len())
}

fn assert_refused(flag: Flag, file: &Path, (output, sent): (Output, usize), kind: &str) {
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{flag:?}: {err}");
    assert_eq!(sent, 0, "{flag:?}: nothing may be sent: {err}");
    assert!(
        err.contains(&*file.display().to_string()),
        "{flag:?}: the file is named: {err}"
    );
    assert!(err.contains(kind), "{flag:?}: says what it is: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{flag:?}: one line: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_is_refused_without_waiting_for_a_writer() {
    for flag in [Flag::Accounts, Flag::Config, Flag::ExcludeFile] {
        let ws = Workspace::new();
        let fifo = ws.path("input.fifo");
        mkfifo(&fifo);
        let result = run_with(&ws, flag, &fifo).await;
        assert_refused(
            flag,
            &fifo,
            result,
            "a FIFO (named pipe), not a regular file",
        );
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_refused_without_being_read() {
    let zero = Path::new("/dev/zero");
    for flag in [Flag::Accounts, Flag::Config, Flag::ExcludeFile] {
        let ws = Workspace::new();
        let result = run_with(&ws, flag, zero).await;
        assert_refused(flag, zero, result, "a character device, not a regular file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_refused() {
    for flag in [Flag::Accounts, Flag::Config, Flag::ExcludeFile] {
        let ws = Workspace::new();
        let dir = ws.path("input.d");
        std::fs::create_dir(&dir).unwrap();
        let result = run_with(&ws, flag, &dir).await;
        assert_refused(flag, &dir, result, "a directory, not a regular file");
    }
}

/// A configuration file past its cap (1 MiB) is refused by its size before it is read; a sparse
/// file makes the size without writing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_past_its_cap_is_refused() {
    let ws = Workspace::new();
    let big = ws.path("groups.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(1024 * 1024 + 1).unwrap();
    drop(file);
    let result = run_with(&ws, Flag::Config, &big).await;
    assert_refused(
        Flag::Config,
        &big,
        result,
        "is 1048577 bytes (at most 1048576): too big for the configuration file",
    );
}

/// The check changes nothing for a file that passes it: a regular exclude file still excludes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_exclude_file_is_still_read() {
    let ws = Workspace::new();
    let excludes = ws.write("exclude.txt", b"# kept\nacct-0002\n");
    let db = ws.db().display().to_string();
    let file = excludes.display().to_string();
    let output = run_binary(
        [
            "run",
            "--base-url",
            "http://127.0.0.1:9",
            "--db",
            &db,
            "--all-accounts",
            "--exclude-file",
            &file,
            "--dry-run",
        ],
        &[],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let plan = stdout_json(&output);
    assert_eq!(plan["excluded"], serde_json::json!(["acct-0002"]), "{plan}");
}
