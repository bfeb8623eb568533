//! A configuration mistake stops the job (exit 2, nothing sent) instead of dropping a safeguard:
//! a `[defaults]` key that only a group can hold, flags the chosen account source would ignore,
//! a run with no account source, the reserved group name, a group's unusable accounts.

use std::path::Path;

use crate::common::*;

/// A `--config` file with one group sweeping every account of the simulator's group, with
/// `defaults` as its `[defaults]` table and `group_extra` added to the group.
fn config_file(ws: &Workspace, defaults: &str, name: &str, accounts: &str) -> std::path::PathBuf {
    let text = format!(
        "[defaults]\nrate = 1000\n{defaults}\n\n[[group]]\nname = \"{name}\"\nkey_env = \"GEMINI_API_KEY\"\nsecret_env = \"GEMINI_API_SECRET\"\naccounts = \"{accounts}\"\n"
    );
    ws.write("groups.toml", text.as_bytes())
}

async fn run_config(
    server_url: &str,
    ws: &Workspace,
    config: &Path,
    extra: &[&str],
) -> std::process::Output {
    let db = ws.db().display().to_string();
    let config = config.display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let mut args = vec![
        "run",
        "--config",
        &config,
        "--base-url",
        server_url,
        "--db",
        &db,
        "--lock-dir",
        &lock_dir,
        "--timeout",
        "2",
    ];
    args.extend(extra);
    run_binary(&args, &[]).await
}

/// Exit 2 with one line naming what to fix, nothing sent, no database written.
fn assert_refused(
    output: &std::process::Output,
    server: &gemini_sim::SimServer,
    ws: &Workspace,
    expected: &[&str],
) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for text in expected {
        assert!(err.contains(text), "expected {text:?} in:\n{err}");
    }
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line:\n{err}"
    );
    assert_eq!(server.ledger().counters.requests, 0, "nothing was sent");
    assert!(!ws.db().exists(), "no database was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_hold_only_settings_meant_for_every_group() {
    let server = start(sim_config(3)).await;
    for (line, key) in [
        ("exclude = [\"acct-0001\"]", "exclude"),
        ("exclude_file = \"keep.txt\"", "exclude_file"),
        ("accounts = \"all\"", "accounts"),
        ("key_env = \"OTHER_KEY\"", "key_env"),
        ("secret_env = \"OTHER_SECRET\"", "secret_env"),
        ("name = \"desk\"", "name"),
        ("excludes = [\"acct-0001\"]", "excludes"),
    ] {
        let ws = Workspace::new();
        let config = config_file(&ws, line, "desk-a", "all");
        for extra in [&[][..], &["--dry-run"][..]] {
            let output = run_config(&server.base_url(), &ws, &config, extra).await;
            assert_refused(
                &output,
                &server,
                &ws,
                &["groups.toml", "[defaults]", &format!("`{key}`")],
            );
        }
    }
    // The same exclusion where it belongs is applied, so the account keeps its orders.
    let ws = Workspace::new();
    let text = "[[group]]\nname = \"desk-a\"\nkey_env = \"GEMINI_API_KEY\"\nsecret_env = \"GEMINI_API_SECRET\"\naccounts = \"all\"\nexclude = [\"acct-0001\"]\nrate = 1000\n";
    let config = ws.write("groups.toml", text.as_bytes());
    let output = run_config(&server.base_url(), &ws, &config, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ledger = server.ledger();
    assert!(ledger.accounts["acct-0001"].cancelled.is_empty());
    assert!(!ledger.accounts["acct-0002"].cancelled.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_the_account_source_would_ignore_are_refused() {
    let server = start(sim_config(3)).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&account_names(&server));
    let exclude_file = ws.write("keep.txt", b"acct-0001\n");
    let exclude_file = exclude_file.display().to_string();
    let base = run_args(&server.base_url(), &csv, &ws.db());
    for (extra, expected) in [
        (
            vec!["--exclude", "acct-0001"],
            "--exclude goes with --all-accounts",
        ),
        (
            vec!["--exclude-file", exclude_file.as_str()],
            "--exclude-file goes with --all-accounts",
        ),
        (
            vec!["--group", "desk-a"],
            "--group picks groups of a --config file",
        ),
    ] {
        for dry_run in [false, true] {
            let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
            args.extend(&extra);
            if dry_run {
                args.push("--dry-run");
            }
            let output = run_binary(&args, &[]).await;
            assert_refused(&output, &server, &ws, &[expected]);
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains("dry_run"),
                "no plan is printed for a refused mix"
            );
        }
    }
    // Beside --config too: the group's own table is where an exclusion goes.
    let config = config_file(&ws, "", "desk-a", "all");
    let output = run_config(
        &server.base_url(),
        &ws,
        &config,
        &["--exclude", "acct-0001"],
    )
    .await;
    assert_refused(&output, &server, &ws, &["--exclude", "[[group]]"]);
}

#[tokio::test]
async fn a_run_without_an_account_source_names_the_flags_that_give_one() {
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let output = run_binary(&["run", "--db", &db], &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for flag in [
        "--accounts FILE",
        "--all-accounts",
        "--config FILE",
        "--resume RUN",
    ] {
        assert!(err.contains(flag), "expected {flag:?} in:\n{err}");
    }
    assert!(!ws.db().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_single_key_runs_are_stored_under_is_reserved() {
    let server = start(sim_config(2)).await;
    for name in ["default", "Default"] {
        let ws = Workspace::new();
        let config = config_file(&ws, "", name, "all");
        let output = run_config(&server.base_url(), &ws, &config, &[]).await;
        assert_refused(
            &output,
            &server,
            &ws,
            &["groups.toml", &format!("name {name:?} is reserved")],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_s_unusable_accounts_are_named_with_the_file_and_the_group() {
    let server = start(sim_config(2)).await;
    for (accounts, expected) in [
        ("", "`accounts` is empty"),
        ("   ", "`accounts` is empty"),
        ("missing.csv", "missing.csv"),
        (".", "accounts"),
    ] {
        let ws = Workspace::new();
        let config = config_file(&ws, "", "desk-a", accounts);
        for extra in [&[][..], &["--dry-run"][..]] {
            let output = run_config(&server.base_url(), &ws, &config, extra).await;
            assert_refused(
                &output,
                &server,
                &ws,
                &["groups.toml", "[[group]] \"desk-a\"", expected],
            );
        }
    }
}
