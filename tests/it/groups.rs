//! Several groups in one job (`run --config FILE`): each master key under its own pace, nonces
//! and lock, in parallel; one group's refused key stops that group only.

use std::time::SystemTime;

use crate::common::*;
use gemini_sim::{KeySpec, Role, SimConfig, SimServer};

const DESK_A_KEY: &str = "master-desk-a";
const DESK_B_KEY: &str = "master-desk-b";
const DESK_A_SECRET: &str = "desk-a-secret-Hq2";
const DESK_B_SECRET: &str = "desk-b-secret-Pw9";

fn group_key(k: &str, secret: &str, group: &str) -> KeySpec {
    KeySpec {
        group: Some(group.into()),
        ..key(k, secret, &[Role::Trader, Role::Auditor], None)
    }
}

/// Two groups of `per_group` accounts each. The exchange does not limit them: the pace under
/// test is the engine's own, read from the send times it recorded (a limited simulator's 429s
/// depend on how requests bunch on a loaded machine, not on the engine).
fn two_groups(per_group: u32) -> SimConfig {
    let mut config = sim_config(0);
    for (g, prefix) in [("desk-a", "a"), ("desk-b", "b")] {
        for mut account in SimConfig::numbered_accounts(per_group) {
            account.name = format!("{prefix}-{}", account.name);
            account.group = Some(g.into());
            config.accounts.push(account);
        }
    }
    config.keys = vec![
        group_key(DESK_A_KEY, DESK_A_SECRET, "desk-a"),
        group_key(DESK_B_KEY, DESK_B_SECRET, "desk-b"),
    ];
    config.orders_per_account = 1..=5;
    config
}

/// A config file: desk-a sweeps every account it lists, desk-b its CSV; both at 6/s.
fn write_config(ws: &Workspace, server: &SimServer) -> String {
    let b_accounts: Vec<String> = account_names(server)
        .into_iter()
        .filter(|n| n.starts_with("b-"))
        .collect();
    ws.accounts_csv(&b_accounts);
    let text = format!(
        r#"
[defaults]
base_url = "{url}"
rate = 6
timeout = 2

[[group]]
name = "desk-a"
key_env = "DESK_A_KEY"
secret_env = "DESK_A_SECRET"
accounts = "all"

[[group]]
name = "desk-b"
key_env = "DESK_B_KEY"
secret_file = "desk-b.secret"
accounts = "accounts.csv"
"#,
        url = server.base_url()
    );
    ws.write("desk-b.secret", format!("{DESK_B_SECRET}\n").as_bytes());
    ws.write("groups.toml", text.as_bytes())
        .display()
        .to_string()
}

async fn run_config(ws: &Workspace, extra: &[&str], b_secret: &str) -> std::process::Output {
    let secret = ws.write("desk-b.secret", format!("{b_secret}\n").as_bytes());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = ws.path("groups.toml").display().to_string();
    let db = ws.db().display().to_string();
    let lock_dir = ws.dir.path().display().to_string();
    let mut args = vec![
        "run",
        "--config",
        &config,
        "--db",
        &db,
        "--lock-dir",
        &lock_dir,
    ];
    args.extend_from_slice(extra);
    run_binary(
        &args,
        &[
            ("DESK_A_KEY", DESK_A_KEY),
            ("DESK_A_SECRET", DESK_A_SECRET),
            ("DESK_B_KEY", DESK_B_KEY),
        ],
    )
    .await
}

/// Send times (seconds) of each group's requests, from the audit trail.
fn group_send_times(conn: &rusqlite::Connection, group: &str) -> Vec<f64> {
    send_times(conn, &format!("r.group_name = '{group}'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_sweep_in_parallel_each_at_its_own_rate() {
    let server = start(two_groups(10)).await;
    let ws = Workspace::new();
    write_config(&ws, &server);

    let started = SystemTime::now();
    let output = run_config(&ws, &[], DESK_B_SECRET).await;
    let summary = stdout_json(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(summary["exit_code"], 0);
    let groups = summary["groups"].as_array().expect("one entry per group");
    assert_eq!(groups.len(), 2, "{summary}");
    for (entry, name) in groups.iter().zip(["desk-a", "desk-b"]) {
        assert_eq!(entry["group"], name, "{entry}");
        assert_eq!(entry["status"], "completed", "{entry}");
        assert_eq!(entry["accounts_ok"], 10, "{entry}");
    }

    // Every order of both groups cancelled, and recorded under the run of its group.
    let conn = db(&ws.db());
    let (cancelled, _) = ledger_truth(&server);
    let recorded = count(&conn, "SELECT count(*) FROM cancelled_orders");
    assert_eq!(recorded as usize, cancelled.len());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM run_accounts ra JOIN runs r ON r.run_id = ra.run_id
             WHERE (r.group_name = 'desk-a') != (ra.account LIKE 'a-%')"
        ),
        0,
        "each account is recorded under its own group's run"
    );

    // Every request the exchange saw is an attempt of one group or the other.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempts") as u64,
        server.ledger().counters.requests
    );
    // Each group keeps to its own 6/s from the start, request by request: each span takes at
    // least its 5 s, however fast or slow the machine.
    let (a, b) = (
        group_send_times(&conn, "desk-a"),
        group_send_times(&conn, "desk-b"),
    );
    // Each call answered once; anything more is a retry of a transient failure (a nonce race
    // between two requests in flight, more likely on a loaded machine), paced like the rest.
    let answered = |group: &str, outcome: &str| {
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM attempts a JOIN runs r ON r.run_id = a.run_id
                 WHERE r.group_name = '{group}' AND a.outcome = '{outcome}'"
            ),
        )
    };
    assert_eq!(
        answered("desk-a", "ok"),
        21,
        "a listing and 10 × (cancel-all, listing)"
    );
    assert_eq!(answered("desk-b", "ok"), 20, "10 × (cancel-all, listing)");
    assert_eq!(
        a.len() + b.len(),
        41 + answered("desk-a", "transient") as usize + answered("desk-b", "transient") as usize,
        "and retries of transient failures only"
    );
    assert_paced(&a, started, 6.0, 1, "desk-a");
    assert_paced(&b, started, 6.0, 1, "desk-b");
    // In parallel: each group's requests began before the other's ended (one after the other,
    // the second would begin after the first's 5 s were over).
    assert!(
        a[0] < *b.last().unwrap() && b[0] < *a.last().unwrap(),
        "desk-a {:.3}..{:.3}, desk-b {:.3}..{:.3}",
        a[0],
        a.last().unwrap(),
        b[0],
        b.last().unwrap()
    );
    // Each under its own key session: every request of a group was signed with its own key.
    for group in ["desk-a", "desk-b"] {
        let keys = count(
            &conn,
            &format!(
                "SELECT count(DISTINCT a.key_fingerprint) FROM attempts a
                 JOIN runs r ON r.run_id = a.run_id WHERE r.group_name = '{group}'"
            ),
        );
        assert_eq!(keys, 1, "{group} used one key");
    }
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT key_fingerprint) FROM attempts"
        ),
        2,
        "the groups used different keys"
    );

    // `runs --group` shows that group's runs only.
    let db_path = ws.db().display().to_string();
    let runs = run_binary(
        &[
            "runs", "--db", &db_path, "--format", "json", "--group", "desk-b",
        ],
        &[],
    )
    .await;
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["group_name"], "desk-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_its_own_group_and_a_resume_finishes_it() {
    let server = start(two_groups(8)).await;
    let ws = Workspace::new();
    write_config(&ws, &server);

    let output = run_config(&ws, &[], "rotated-yesterday").await;
    let summary = stdout_json(&output);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert_eq!(summary["exit_code"], 4);
    let groups = summary["groups"].as_array().unwrap();
    assert_eq!(groups[0]["group"], "desk-a");
    assert_eq!(groups[0]["status"], "completed", "{summary}");
    assert_eq!(groups[0]["accounts_ok"], 8);
    assert_eq!(groups[1]["group"], "desk-b");
    assert_eq!(groups[1]["status"], "refused", "{summary}");
    assert_eq!(groups[1]["exit_code"], 4);
    let ledger = server.ledger();
    let b_requests: u64 = ledger
        .accounts
        .iter()
        .filter(|(n, _)| n.starts_with("b-"))
        .map(|(_, l)| l.requests)
        .sum();
    assert_eq!(b_requests, 0, "nothing the bad key sent was accepted");
    let conn = db(&ws.db());
    let b_sent = count(
        &conn,
        "SELECT count(*) FROM attempts a JOIN runs r ON r.run_id = a.run_id
         WHERE r.group_name = 'desk-b'",
    );
    assert!(
        (1..=2).contains(&b_sent),
        "{b_sent} requests with a refused key"
    );
    assert!(
        !stderr(&output).contains("rotated-yesterday"),
        "the secret stays secret"
    );

    // The secret fixed, `--resume latest` finishes desk-b's run and leaves desk-a's alone.
    let output = run_config(&ws, &["--resume", "latest"], DESK_B_SECRET).await;
    let summary = stdout_json(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let groups = summary["groups"].as_array().unwrap();
    let by_name = |name: &str| {
        groups
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("{name} in {summary}"))
    };
    assert_eq!(by_name("desk-a")["nothing_to_resume"], true);
    assert_eq!(by_name("desk-b")["status"], "completed");
    assert_eq!(by_name("desk-b")["accounts_ok"], 8);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs"),
        2,
        "resumed, not restarted"
    );
    let (cancelled, _) = ledger_truth(&server);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM cancelled_orders") as usize,
        cancelled.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_file_sends_nothing() {
    let server = start(two_groups(2)).await;
    let ws = Workspace::new();
    let good = std::fs::read_to_string(write_config(&ws, &server)).unwrap();
    for (broken, expected) in [
        (
            good.replace("DESK_B_KEY", "DESK_A_KEY"),
            "use the same API key",
        ),
        (
            good.replace("rate = 6", "rate = 6\nburts = 2"),
            "unknown setting `burts`",
        ),
        (good.replace("accounts.csv", "missing.csv"), "missing.csv"),
    ] {
        ws.write("groups.toml", broken.as_bytes());
        let output = run_config(&ws, &[], DESK_B_SECRET).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // The good file, dry: every group planned, every key loaded, nothing sent.
    ws.write("groups.toml", good.as_bytes());
    let output = run_config(&ws, &["--dry-run"], DESK_B_SECRET).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = stdout_json(&output);
    let groups = plan["groups"].as_array().expect("a plan per group");
    assert_eq!(groups[0]["group"], "desk-a");
    assert_eq!(
        groups[0]["accounts"],
        "discovered at run time (--all-accounts)"
    );
    assert_eq!(groups[1]["group"], "desk-b");
    assert_eq!(groups[1]["accounts_enabled"], 2);
    assert!(!ws.db().exists(), "a dry run writes nothing");
    assert_eq!(server.ledger().counters.requests, 0, "nothing was sent");
}
