//! An operator's mistakes (issue 27) are caught before anything is sent, and every message says
//! what is wrong and where the value came from: a flag, an environment variable, or a
//! configuration file and group. Everything here runs the real binary.

use std::path::Path;
use std::process::Output;

use crate::common::*;

/// The one line a refusal writes: exit 2, a single `error:` line, nothing on stdout.
fn refused(output: &Output) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Issue 27, item 1: a misspelled `enabled` column used to be ignored, and the account it was to
/// protect was swept (exit 0, nothing on stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_safety_column_stops_the_job_before_anything_is_sent() {
    let server = start(sim_config(2)).await;
    let ws = Workspace::new();
    let csv = ws.write(
        "accounts.csv",
        b"account,enabeld,note\nacct-0001,false,\nacct-0002,true,\n",
    );
    for dry_run in [true, false] {
        let mut args = run_args(&server.base_url(), &csv, &ws.db());
        if dry_run {
            args.push("--dry-run".into());
        }
        let err = refused(&run_binary(&args, &[]).await);
        assert!(
            err.contains("accounts.csv:1: unknown column `enabeld`"),
            "{err}"
        );
        assert!(err.contains("did you mean `enabled`?"), "{err}");
    }
    // A column that is no near miss is just as dangerous, and refused the same way.
    let csv = ws.write("other.csv", b"account,active\nacct-0001,no\n");
    let args = run_args(&server.base_url(), &csv, &ws.db());
    let err = refused(&run_binary(&args, &[]).await);
    assert!(
        err.contains("other.csv:1: unknown column `active`"),
        "{err}"
    );
    assert!(err.contains("`x-active`"), "{err}");
    assert_eq!(server.ledger().counters.requests, 0, "nothing was sent");
    assert!(!ws.db().exists(), "nothing was written");

    // The operator's own columns start with `x-`, and `accounts --csv` output reads back.
    let csv = ws.write(
        "own.csv",
        b"account,enabled,note,x-desk\nacct-0001,false,,fx\nacct-0002,true,,fx\n",
    );
    let mut args = run_args(&server.base_url(), &csv, &ws.db());
    args.push("--dry-run".into());
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = stdout_json(&output);
    assert_eq!(plan["accounts_enabled"], 1, "{plan}");

    let listed = ws.path("listed.csv");
    let output = run_binary(
        [
            "accounts",
            "--base-url",
            &server.base_url(),
            "--db",
            &text(&ws.db()),
            "--csv",
            &text(&listed),
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut args = run_args(&server.base_url(), &listed, &ws.db());
    args.push("--dry-run".into());
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// A config file's misspelled key is refused (as before) and now names the likely key.
#[tokio::test]
async fn a_misspelled_config_key_names_the_file_the_group_and_the_likely_key() {
    let ws = Workspace::new();
    ws.write("accounts.csv", b"account\nacct-0001\n");
    let config = ws.write(
        "groups.toml",
        b"[[group]]\nname = \"desk-a\"\nkey_env = \"GEMINI_API_KEY\"\nsecret_env = \"GEMINI_API_SECRET\"\naccounts = \"accounts.csv\"\nnonce_mod = \"time\"\n",
    );
    let output = run_binary(
        [
            "run",
            "--config",
            &text(&config),
            "--db",
            &text(&ws.db()),
            "--dry-run",
        ],
        &[],
    )
    .await;
    let err = refused(&output);
    assert!(
        err.contains("groups.toml: [[group]] \"desk-a\": unknown key `nonce_mod` (did you mean `nonce_mode`?)"),
        "{err}"
    );
}

/// Issue 27, item 3: a `GEMINI_BASE_URL` left over from the rehearsal made `run --sandbox` fail
/// about a `--base-url` the operator never typed.
#[tokio::test]
async fn a_leftover_base_url_variable_is_named_beside_sandbox() {
    let ws = Workspace::new();
    let csv = ws.write("accounts.csv", b"account\nacct-0001\n");
    let rehearsal = [("GEMINI_BASE_URL", "http://127.0.0.1:8555")];
    let output = run_binary(
        ["run", "--sandbox", "--accounts", &text(&csv), "--dry-run"],
        &rehearsal,
    )
    .await;
    let err = refused(&output);
    assert!(
        err.contains("--sandbox and --base-url http://127.0.0.1:8555 name two exchanges"),
        "{err}"
    );
    assert!(
        err.contains("--base-url comes from the environment variable GEMINI_BASE_URL"),
        "{err}"
    );
    let output = run_binary(["accounts", "--sandbox"], &rehearsal).await;
    assert!(
        refused(&output).contains("environment variable GEMINI_BASE_URL"),
        "{}",
        stderr(&output)
    );
    // Typed on the command line, both are the operator's own: nothing to attribute.
    let output = run_binary(
        [
            "run",
            "--sandbox",
            "--base-url",
            "https://api.gemini.com",
            "--accounts",
            &text(&csv),
            "--dry-run",
        ],
        &[],
    )
    .await;
    let err = refused(&output);
    assert!(err.contains("name two exchanges"), "{err}");
    assert!(!err.contains("environment"), "{err}");
}

/// Errors name where a value came from: the environment, the command line, or a config file and
/// its group.
#[tokio::test]
async fn errors_name_where_the_value_came_from() {
    let ws = Workspace::new();
    let csv = ws.write("accounts.csv", b"account\nacct-0001\n");
    let csv = text(&csv);

    // Read by clap: a value the environment gave is said to be the environment's...
    let output = run_binary(
        ["run", "--accounts", &csv, "--dry-run"],
        &[("GEMINI_SWEEP_RATE", "0")],
    )
    .await;
    let err = refused(&output);
    assert!(err.contains("'--rate <N>': must be from 0.1"), "{err}");
    assert!(
        err.contains("--rate comes from the environment variable GEMINI_SWEEP_RATE"),
        "{err}"
    );
    // ...and one the command line gave is not, though the variable is set too.
    let output = run_binary(
        ["run", "--accounts", &csv, "--dry-run", "--rate", "0"],
        &[("GEMINI_SWEEP_RATE", "5")],
    )
    .await;
    let err = refused(&output);
    assert!(err.contains("--rate"), "{err}");
    assert!(!err.contains("GEMINI_SWEEP_RATE"), "{err}");

    // Checked after parsing: the base URL, the accounts file, the lock directory.
    let output = run_binary(
        ["run", "--accounts", &csv, "--dry-run"],
        &[("GEMINI_BASE_URL", "http://exchange.example")],
    )
    .await;
    let err = refused(&output);
    assert!(
        err.contains("plain http:// is allowed only to loopback"),
        "{err}"
    );
    assert!(
        err.contains("--base-url comes from the environment variable GEMINI_BASE_URL"),
        "{err}"
    );
    let missing = text(&ws.path("missing.csv"));
    let output = run_binary(
        ["run", "--dry-run"],
        &[("GEMINI_SWEEP_ACCOUNTS", missing.as_str())],
    )
    .await;
    let err = refused(&output);
    assert!(
        err.contains(&format!(
            "{missing} is --accounts, from the environment variable GEMINI_SWEEP_ACCOUNTS"
        )),
        "{err}"
    );
    let output = run_binary(["run", "--dry-run", "--accounts", &missing], &[]).await;
    assert!(!refused(&output).contains("environment"));

    // A config file's value: the file, the group and the key.
    let config = ws.write(
        "groups.toml",
        b"[[group]]\nname = \"desk-a\"\nkey_env = \"GEMINI_API_KEY\"\nsecret_env = \"GEMINI_API_SECRET\"\naccounts = \"accounts.csv\"\nbase_url = \"http://exchange.example\"\n",
    );
    let output = run_binary(["run", "--config", &text(&config), "--dry-run"], &[]).await;
    let err = refused(&output);
    assert!(
        err.contains(
            "groups.toml: [[group]] \"desk-a\": base_url http://exchange.example: plain http://"
        ),
        "{err}"
    );
}

/// Issue 27, item 5: `--resume latest --accounts other.csv` silently ignored `--accounts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_refuses_an_account_source_of_its_own() {
    let server = start(sim_config(2)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let requests = server.ledger().counters.requests;

    let other = ws.write("other.csv", b"account\nacct-0002\n");
    let db = text(&ws.db());
    let lock_dir = text(ws.dir.path());
    let base = [
        "run",
        "--resume",
        "latest",
        "--db",
        &db,
        "--lock-dir",
        &lock_dir,
    ];
    let output = run_binary(
        base.iter().copied().chain(["--accounts", &text(&other)]),
        &[],
    )
    .await;
    let err = refused(&output);
    assert!(
        err.contains("--accounts would be ignored beside --resume"),
        "{err}"
    );
    let output = run_binary(base.iter().copied().chain(["--all-accounts"]), &[]).await;
    let err = refused(&output);
    assert!(err.contains("'--all-accounts'"), "{err}");
    assert_eq!(server.ledger().counters.requests, requests, "nothing sent");

    // A scheduler's environment may name the CSV for the daily run: a resume in the same
    // environment goes on, and says that it does not read it.
    let output = resume(&ws, "latest", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "GEMINI_SWEEP_ACCOUNTS is not read: --resume finishes the recorded run's own accounts"
        ),
        "{}",
        stderr(&output)
    );
}

/// Issue 27, item 6: clap's suggestions, the missing argument's name and the possible values
/// were cut from its messages.
#[tokio::test]
async fn argument_errors_keep_clap_s_help_on_one_escaped_line() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["completions"],
            &["required arguments were not provided: <SHELL>"],
        ),
        (
            &["run", "--dryrun"],
            &["'--dryrun'", "a similar argument exists: '--dry-run'"],
        ),
        (
            &["report", "--format", "xml"],
            &["[possible values: table, csv, json, html]"],
        ),
        (
            &["runs", "--format", "xml"],
            &["[possible values: table, csv, json]"],
        ),
        (
            &["completions", "tcsh"],
            &["[possible values: bash, elvish, fish, powershell, zsh]"],
        ),
        (
            &["run", "--exclude", "mm-1"],
            &["required arguments were not provided: --all-accounts"],
        ),
    ];
    for (args, expected) in cases {
        let output = run_binary(*args, &[]).await;
        let err = refused(&output);
        for e in *expected {
            assert!(err.contains(e), "{args:?}: {e:?} not in {err}");
        }
        assert!(err.trim_end().ends_with("(see --help)"), "{err}");
        assert!(!err.contains("Usage:"), "{err}");
    }
    // What the user typed is outside text: its control characters are shown, never sent.
    let output = run_binary(["report", "--format", "\u{1b}]0;pwned\u{7}\u{202e}x"], &[]).await;
    let err = refused(&output);
    assert!(err.contains("[possible values:"), "{err}");
    assert!(
        !err.trim_end()
            .chars()
            .any(|c| c.is_control() || c == '\u{202e}'),
        "{err:?}"
    );
}

/// Issue 27, item 7: the `-wal` and `-shm` files stayed beside the database after every command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wal_or_shm_file_is_left_after_any_command() {
    let server = start(sim_config(2)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let db = text(&ws.db());
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(ws.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("-wal") || n.ends_with("-shm"))
            .collect()
    };
    let metrics = text(&ws.path("sweep.prom"));
    let commands: Vec<(&str, Vec<String>)> = vec![
        ("run", args.clone()),
        (
            "run --metrics-file",
            args.iter()
                .cloned()
                .chain(["--metrics-file".into(), metrics])
                .collect(),
        ),
        ("runs", vec!["runs".into(), "--db".into(), db.clone()]),
        ("report", vec!["report".into(), "--db".into(), db.clone()]),
        (
            "accounts",
            vec![
                "accounts".into(),
                "--base-url".into(),
                server.base_url(),
                "--db".into(),
                db.clone(),
            ],
        ),
        (
            "demo",
            vec![
                "demo".into(),
                "--accounts".into(),
                "3".into(),
                "--db".into(),
                text(&ws.path("demo.db")),
            ],
        ),
    ];
    for (name, args) in commands {
        let output = run_binary(&args, &[]).await;
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
        assert_eq!(leftovers(), Vec::<String>::new(), "after {name}");
    }
    // A report while another connection holds the database open leaves that one's files be.
    let conn = crate::common::db(&ws.db());
    conn.execute_batch("BEGIN; SELECT count(*) FROM runs; COMMIT;")
        .unwrap();
    let output = run_binary(["runs", "--db", &db], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!leftovers().is_empty(), "the open connection's files stay");
    drop(conn);
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "the last one out cleans up"
    );
}

/// Issue 27, item 7: `accounts --help` printed `run`'s exit codes.
#[tokio::test]
async fn each_command_s_help_carries_its_own_exit_codes() {
    let help = |args: &'static [&'static str]| async move {
        let output = run_binary(args, &[]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    const RUN_LINE: &str = "every account swept and verified flat";
    let run = help(&["run", "--help"]).await;
    assert!(run.contains(RUN_LINE), "{run}");
    let cases: &[(&[&str], &str)] = &[
        (&["accounts", "--help"], "the group's accounts listed"),
        (&["report", "--help"], "the report was printed"),
        (&["runs", "--help"], "the runs were listed"),
        (&["demo", "--help"], "the demo ran"),
        (&["sim", "--help"], "stopped by SIGINT or SIGTERM"),
        (
            &["completions", "--help"],
            "bad arguments (an unknown shell",
        ),
        (&["man", "--help"], "bad arguments (an unknown shell"),
        (&["--help"], "each command's --help lists its own"),
    ];
    for (args, own) in cases {
        let page = help(args).await;
        assert!(page.contains("Exit codes"), "{args:?}: {page}");
        assert!(page.contains(own), "{args:?}: {own:?} not in {page}");
        assert!(
            !page.contains(RUN_LINE),
            "{args:?} carries run's codes: {page}"
        );
    }
}

/// With `--config`, a resume still needs the file for each group's key and settings; the
/// groups' `accounts` are not read, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_resume_says_it_does_not_read_the_groups_accounts() {
    let server = start(sim_config(2)).await;
    let ws = Workspace::new();
    ws.accounts_csv(&account_names(&server));
    let config = ws.write(
        "groups.toml",
        format!(
            "[defaults]\nbase_url = \"{}\"\nrate = 1000\n\n[[group]]\nname = \"desk-a\"\nkey_env = \"GEMINI_API_KEY\"\nsecret_env = \"GEMINI_API_SECRET\"\naccounts = \"accounts.csv\"\n",
            server.base_url()
        )
        .as_bytes(),
    );
    let args = ["run", "--config", &text(&config), "--db", &text(&ws.db())];
    let output = run_binary(args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // The file now names a CSV that is not there: a resume does not read it.
    std::fs::remove_file(ws.path("accounts.csv")).unwrap();
    let output = run_binary(args.iter().chain(&["--resume", "latest"]), &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "--resume: the groups' `accounts`, `exclude` and `exclude_file` are not read"
        ),
        "{}",
        stderr(&output)
    );
}
