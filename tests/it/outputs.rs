//! No path the tool writes can replace a device, a FIFO or a symbolic link: `report --out`,
//! `accounts --csv`, `--metrics-file`, `--db` (with its `-wal`, `-shm`, `-journal` and lock
//! file) and the key's lock in `--lock-dir`. Each such case exits 2 with one error line naming
//! the path, sends nothing to the simulator, and leaves the node as it was (same inode, same
//! kind, same device number or link target, the link's target untouched). The nodes are made in
//! the test's own temporary directory; /dev is never touched. `-` is standard output for the
//! report and the CSV.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use gemini_sim::SimServer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A character device with /dev/null's numbers (1, 3): harmless even if written.
    Device,
    Fifo,
    /// A link to a regular file of the test's.
    Symlink,
}

const KINDS: [Kind; 3] = [Kind::Device, Kind::Fifo, Kind::Symlink];
const VICTIM_TEXT: &str = "the link's target, which must keep this text\n";

/// A node made for a case, as it was made.
struct Node {
    kind: Kind,
    path: PathBuf,
    inode: u64,
    rdev: u64,
    target: Option<PathBuf>,
}

/// Makes a node of `kind` at `path`, or says why the machine does not allow it (a device needs
/// root and the right to make devices: a container may lack it) and returns `None`.
fn make(kind: Kind, path: &Path) -> Option<Node> {
    use std::os::unix::fs::MetadataExt;
    let mut target = None;
    let tool = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"))
    };
    match kind {
        Kind::Device => {
            let uid = std::process::Command::new("id").arg("-u").output().unwrap();
            let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
            if uid != "0" {
                println!("device case skipped: mknod needs root, and this test runs as uid {uid}");
                return None;
            }
            // mknod wants its path before the kind and the numbers.
            let made = std::process::Command::new("mknod")
                .arg(path)
                .args(["c", "1", "3"])
                .output()
                .expect("mknod runs");
            if !made.status.success() {
                println!(
                    "device case skipped: mknod is not permitted here ({})",
                    String::from_utf8_lossy(&made.stderr).trim()
                );
                return None;
            }
        }
        Kind::Fifo => assert!(tool("mkfifo", &[]).status.success(), "mkfifo"),
        Kind::Symlink => {
            let victim = path.with_file_name(format!(
                "victim-of-{}",
                path.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&victim, VICTIM_TEXT).unwrap();
            std::os::unix::fs::symlink(&victim, path).unwrap();
            target = Some(victim);
        }
    }
    let meta = std::fs::symlink_metadata(path).unwrap();
    Some(Node {
        kind,
        path: path.to_path_buf(),
        inode: meta.ino(),
        rdev: meta.rdev(),
        target,
    })
}

impl Node {
    fn assert_unchanged(&self, case: &str) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::symlink_metadata(&self.path)
            .unwrap_or_else(|e| panic!("{case}: {} is gone: {e}", self.path.display()));
        assert_eq!(meta.ino(), self.inode, "{case}: replaced");
        let kind = meta.file_type();
        match self.kind {
            Kind::Device => {
                assert!(kind.is_char_device(), "{case}: {kind:?}");
                assert_eq!(meta.rdev(), self.rdev, "{case}");
            }
            Kind::Fifo => assert!(kind.is_fifo(), "{case}: {kind:?}"),
            Kind::Symlink => {
                assert!(kind.is_symlink(), "{case}: {kind:?}");
                let target = self.target.as_ref().unwrap();
                assert_eq!(&std::fs::read_link(&self.path).unwrap(), target, "{case}");
                assert_eq!(
                    std::fs::read_to_string(target).unwrap(),
                    VICTIM_TEXT,
                    "{case}: written through the link"
                );
            }
        }
    }
}

/// The refusal's shape: exit 2, one error line, naming `path`.
fn assert_refused(output: &Output, path: &Path, case: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{case}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{case}: one error line: {err}");
    assert!(
        errors[0].contains(&*path.display().to_string()),
        "{case}: the line names {}: {err}",
        path.display()
    );
    let what = ["symbolic link", "character device", "FIFO"];
    assert!(
        what.iter().any(|w| errors[0].contains(w)),
        "{case}: says what stands there: {err}"
    );
}

/// Runs `args` with a node of every kind at `node_path`, made fresh for each, and checks each
/// refusal: exit 2, nothing sent to `server`, the node unchanged. Returns how many cases ran.
async fn refuse_every_kind(
    server: &SimServer,
    node_path: &Path,
    args: &[String],
    what: &str,
) -> usize {
    let sent_before = server.ledger().counters.requests;
    let mut ran = 0;
    for kind in KINDS {
        let case = format!("{what} as a {kind:?}");
        let Some(node) = make(kind, node_path) else {
            continue;
        };
        let output = run_binary(args, &[]).await;
        assert_refused(&output, node_path, &case);
        node.assert_unchanged(&case);
        assert_eq!(
            server.ledger().counters.requests,
            sent_before,
            "{case}: nothing sent"
        );
        remove(node);
        ran += 1;
    }
    assert!(
        ran >= 2,
        "{what}: at least the FIFO and the link were tried"
    );
    ran
}

fn remove(node: Node) {
    std::fs::remove_file(&node.path).unwrap();
    if let Some(target) = node.target {
        std::fs::remove_file(target).unwrap();
    }
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// A database with one run of a two-account sweep in it.
async fn swept(server: &SimServer) -> Workspace {
    let (ws, args) = sweep_setup(server);
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_out_replaces_no_device_fifo_or_link_and_dash_is_stdout() {
    let server = start(sim_config(2)).await;
    let ws = swept(&server).await;
    let db = text(&ws.db());
    let node = ws.path("report.csv");
    let args: Vec<String> = [
        "report",
        "--db",
        &db,
        "--format",
        "csv",
        "--out",
        &text(&node),
    ]
    .map(String::from)
    .to_vec();
    refuse_every_kind(&server, &node, &args, "report --out").await;

    // `-` is standard output: the same report as without --out, and no file named `-`.
    let plain = run_binary(["report", "--db", &db, "--format", "csv"], &[]).await;
    let dashed = run_binary(
        ["report", "--db", &db, "--format", "csv", "--out", "-"],
        &[],
    )
    .await;
    assert_eq!(dashed.status.code(), Some(0), "{}", stderr(&dashed));
    assert_eq!(dashed.stdout, plain.stdout);
    let report = String::from_utf8(dashed.stdout).unwrap();
    assert!(
        report.starts_with("account,") && report.contains("acct-0002"),
        "{report}"
    );
    assert!(!Path::new("-").exists() && !ws.path("-").exists());

    // A missing directory is named as given, never as the temporary file beside it.
    let missing = ws.path("no-such-dir/report.csv");
    let output = run_binary(
        [
            "report",
            "--db",
            &db,
            "--format",
            "csv",
            "--out",
            &text(&missing),
        ],
        &[],
    )
    .await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&*text(&missing)) && err.contains("does not exist"),
        "{err}"
    );
    // The temporary file would be `.report.csv.XXXXXX.tmp`.
    assert!(!err.contains(".report.csv."), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_csv_replaces_no_device_fifo_or_link_and_dash_is_stdout() {
    let server = start(sim_config(2)).await;
    let ws = Workspace::new();
    let node = ws.path("group.csv");
    let base = server.base_url();
    let db = text(&ws.db());
    let args: Vec<String> = ["accounts", "--base-url", &base, "--db", &db]
        .into_iter()
        .chain(["--csv", &text(&node)])
        .map(String::from)
        .collect();
    refuse_every_kind(&server, &node, &args, "accounts --csv").await;

    // `-`: the CSV on stdout, and only the CSV, which a run reads back.
    let output = run_binary(
        ["accounts", "--base-url", &base, "--db", &db, "--csv", "-"],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let csv = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(
        csv.starts_with("account,enabled,note,name,type,status\n"),
        "{csv}"
    );
    let saved = ws.write("saved.csv", csv.as_bytes());
    let read = gemini_sweep::accounts::load(&saved).unwrap();
    let mut names: Vec<&str> = read.iter().map(|a| a.account.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["acct-0001", "acct-0002"]);
    assert!(stderr(&output).contains("wrote 2 accounts to standard output"));

    // A regular file is replaced as before, and stdout keeps the table.
    std::fs::write(&node, "old\n").unwrap();
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&node).unwrap(), csv);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        !table.starts_with("account,") && table.contains("acct-0001"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_file_replaces_no_device_fifo_or_link() {
    let server = start(sim_config(2)).await;
    let (ws, mut args) = sweep_setup(&server);
    let node = ws.path("sweep.prom");
    args.extend(["--metrics-file".to_string(), text(&node)]);
    refuse_every_kind(&server, &node, &args, "--metrics-file").await;

    // `-` would mix the metrics into the JSON summary's stdout: refused, nothing sent.
    let (_, mut args) = sweep_setup(&server);
    args.extend(["--metrics-file".to_string(), "-".to_string()]);
    let output = run_binary(&args, &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("--metrics-file -: standard output"), "{err}");
    assert_eq!(server.ledger().counters.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_every_file_beside_it_replace_no_device_fifo_or_link() {
    let server = start(sim_config(2)).await;
    let (ws, args) = sweep_setup(&server);
    let db = ws.db();
    refuse_every_kind(&server, &db, &args, "--db").await;
    for suffix in ["-wal", "-shm", "-journal", ".lock"] {
        let mut beside = db.clone().into_os_string();
        beside.push(suffix);
        let what = format!("--db's {suffix}");
        refuse_every_kind(&server, Path::new(&beside), &args, &what).await;
        assert!(!db.exists(), "{what}: the database was not created");
    }
    // `accounts` and `demo` write a database too, and refuse the same way.
    let node = make(Kind::Fifo, &db).unwrap();
    let base = server.base_url();
    let output = run_binary(["accounts", "--base-url", &base, "--db", &text(&db)], &[]).await;
    assert_refused(&output, &db, "accounts --db as a FIFO");
    let output = run_binary(["demo", "--db", &text(&db), "--accounts", "1"], &[]).await;
    assert_refused(&output, &db, "demo --db as a FIFO");
    node.assert_unchanged("accounts and demo --db");
    assert_eq!(server.ledger().counters.requests, 0);
}

/// The key's lock file in `dir` for the tests' key.
fn key_lock(db: &Path, dir: &Path) -> PathBuf {
    let credentials = gemini_sweep::client::Credentials {
        key: KEY.into(),
        secret: secrecy::SecretString::from(SECRET),
    };
    gemini_sweep::lock::key_lock_path(db, Some(dir), &credentials.fingerprint())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_lock_replaces_no_device_fifo_or_link_and_a_linked_lock_dir_works() {
    let server = start(sim_config(2)).await;
    let (ws, args) = sweep_setup(&server);
    // run_args puts --lock-dir at the database's directory.
    let lock = key_lock(&ws.db(), ws.dir.path());
    refuse_every_kind(&server, &lock, &args, "--lock-dir's key lock").await;

    // A --lock-dir that is a link to a directory (Debian's /var/lock is one) is followed.
    let real = ws.path("locks");
    std::fs::create_dir(&real).unwrap();
    let linked = ws.path("locks-link");
    std::os::unix::fs::symlink(&real, &linked).unwrap();
    let mut args = args.clone();
    let at = args.iter().position(|a| a == "--lock-dir").unwrap();
    args[at + 1] = text(&linked);
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lock = key_lock(&ws.db(), &real);
    assert!(std::fs::symlink_metadata(&lock).unwrap().is_file());
    assert!(std::fs::symlink_metadata(&linked).unwrap().is_symlink());

    // A --lock-dir that is not a directory is refused before anything is sent.
    let sent = server.ledger().counters.requests;
    args[at + 1] = text(&ws.path("accounts.csv"));
    let output = run_binary(&args, &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--lock-dir") && err.contains("is not a directory"),
        "{err}"
    );
    assert_eq!(server.ledger().counters.requests, sent);
}
