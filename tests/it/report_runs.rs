//! Which runs `report` and `runs` show, read through the real binary: after a job of several
//! groups (`run --config`), every group of the latest job, each table naming its group; and a
//! stored word the program does not know is an error that names it, not a panic or a guess.

use crate::common::*;
use gemini_sim::{Role, SimConfig, SimServer};

const GROUPS: [(&str, &str, &str); 2] = [
    ("desk-a", "master-desk-a", "desk-a-secret-Hq2"),
    ("desk-b", "master-desk-b", "desk-b-secret-Pw9"),
];

/// Two groups of three accounts, `a-acct-000N` and `b-acct-000N`, each under its own key.
async fn two_groups() -> SimServer {
    let mut config = sim_config(0);
    config.keys.clear();
    for (group, k, secret) in GROUPS {
        let prefix = &group[5..];
        for mut account in SimConfig::numbered_accounts(3) {
            account.name = format!("{prefix}-{}", account.name);
            account.group = Some(group.into());
            config.accounts.push(account);
        }
        let mut spec = key(k, secret, &[Role::Trader, Role::Auditor], None);
        spec.group = Some(group.into());
        config.keys.push(spec);
    }
    start(config).await
}

/// A config file naming both groups, each with its accounts CSV.
fn write_config(ws: &Workspace, server: &SimServer) {
    let mut text = format!(
        "[defaults]\nbase_url = \"{}\"\ntimeout = 2\n",
        server.base_url()
    );
    for (group, _, _) in GROUPS {
        let prefix = &group[5..];
        let csv: String = account_names(server)
            .iter()
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .map(|n| format!("{n},true,\n"))
            .collect();
        let file = ws.write(
            &format!("{group}.csv"),
            format!("account,enabled,note\n{csv}").as_bytes(),
        );
        let env = group.to_uppercase().replace('-', "_");
        text.push_str(&format!(
            "\n[[group]]\nname = \"{group}\"\nkey_env = \"{env}_KEY\"\n\
             secret_env = \"{env}_SECRET\"\naccounts = \"{}\"\n",
            file.display()
        ));
    }
    ws.write("groups.toml", text.as_bytes());
}

/// `run --config`, with `extra` flags; every group's key in the environment.
async fn run_job(ws: &Workspace, extra: &[&str]) {
    let (config, db, dir) = (ws.path("groups.toml"), ws.db(), ws.dir.path());
    let mut args = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend(["--lock-dir", dir.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let env = [
        ("DESK_A_KEY", GROUPS[0].1),
        ("DESK_A_SECRET", GROUPS[0].2),
        ("DESK_B_KEY", GROUPS[1].1),
        ("DESK_B_SECRET", GROUPS[1].2),
    ];
    let output = run_binary(&args, &env).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

async fn report(ws: &Workspace, extra: &[&str]) -> std::process::Output {
    let db = ws.db().display().to_string();
    let mut args = vec!["report", "--db", db.as_str()];
    args.extend_from_slice(extra);
    run_binary(&args, &[]).await
}

/// The run ids of `group`, oldest first.
fn runs_of(ws: &Workspace, group: &str) -> Vec<i64> {
    let conn = db(&ws.db());
    let mut stmt = conn
        .prepare("SELECT run_id FROM runs WHERE group_name = ?1 ORDER BY run_id")
        .unwrap();
    stmt.query_map([group], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_job_of_two_groups_report_and_runs_show_both_and_name_them() {
    let server = two_groups().await;
    let ws = Workspace::new();
    write_config(&ws, &server);
    run_job(&ws, &[]).await;
    let (a, b) = (runs_of(&ws, "desk-a")[0], runs_of(&ws, "desk-b")[0]);

    // The table: one per group, each titled with its run and group, each with its accounts.
    let out = report(&ws, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    for (run, group, prefix) in [(a, "desk-a", "a-"), (b, "desk-b", "b-")] {
        let title = format!("run {run} of group {group}, started ");
        assert!(
            table.lines().any(|l| l.starts_with(&title)),
            "{title:?} in\n{table}"
        );
        let total = format!("run {run} total");
        assert!(
            table.lines().any(|l| l.starts_with(&total)),
            "{total:?} in\n{table}"
        );
        let rows = table.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(rows, 3, "{group}'s accounts in\n{table}");
    }
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");

    // A JSON document is of one run: the other is named on stderr, with how to see it.
    let (newer, older, older_group) = if a < b {
        (b, a, "desk-a")
    } else {
        (a, b, "desk-b")
    };
    let out = report(&ws, &["--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["run"]["run_id"], newer);
    let note = stderr(&out);
    assert!(note.contains("the latest job swept 2 groups"), "{note}");
    assert!(
        note.contains(&format!("--run {older} (group {older_group})")),
        "{note}"
    );

    // `runs`, even limited to one line, lists every run of the latest job with its group.
    let db_path = ws.db().display().to_string();
    let out = run_binary(&["runs", "--db", &db_path, "--limit", "1"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = String::from_utf8(out.stdout).unwrap();
    for (run, group) in [(a, "desk-a"), (b, "desk-b")] {
        let named = listed.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.first() == Some(&run.to_string().as_str()) && cells.get(1) == Some(&group)
        });
        assert!(named, "run {run} of {group} in\n{listed}");
    }

    // A later job of one group is the latest job: its table alone, no note.
    run_job(&ws, &["--group", "desk-a"]).await;
    let latest = *runs_of(&ws, "desk-a").last().unwrap();
    let out = report(&ws, &[]).await;
    let table = String::from_utf8(out.stdout).unwrap();
    let titles: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("run ") && l.contains(" of group "))
        .collect();
    assert_eq!(titles.len(), 1, "{table}");
    assert!(
        titles[0].starts_with(&format!("run {latest} of group desk-a")),
        "{table}"
    );
    let out = report(&ws, &["--format", "csv"]).await;
    assert!(!stderr(&out).contains("note:"), "{}", stderr(&out));
    // --group still picks that group's latest run.
    let out = report(&ws, &["--group", "desk-b"]).await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with(&format!("run {b} of group desk-b")),
        "{table}"
    );
}

/// A status no version of the program writes (the schema's CHECK bypassed): `report` and `runs`
/// fail with one line naming the column and the value, never a panic, never a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_word_the_program_does_not_know_is_named_not_guessed() {
    let server = start(sim_config(2)).await;
    let (ws, args) = sweep_setup(&server);
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let conn = db(&ws.db());
    conn.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE run_accounts SET status = 'vanished' WHERE account = 'acct-0002';
         UPDATE runs SET status = 'finished';",
    )
    .unwrap();
    drop(conn);
    let db_path = ws.db().display().to_string();
    for (args, column, value) in [
        (
            vec!["report", "--db", &db_path],
            "column status",
            "\"finished\" is no run status",
        ),
        (
            vec!["runs", "--db", &db_path],
            "column status",
            "\"finished\" is no run status",
        ),
    ] {
        let out = run_binary(&args, &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains(column) && err.contains(value),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let conn = db(&ws.db());
    conn.execute("UPDATE runs SET status = 'completed'", [])
        .unwrap();
    drop(conn);
    for format in ["table", "csv", "json"] {
        let out = run_binary(&["report", "--db", &db_path, "--format", format], &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{format}: {err}");
        assert!(
            err.contains("\"vanished\" is no account status"),
            "{format}: {err}"
        );
    }
}
