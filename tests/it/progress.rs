//! What the operator sees while a run goes: a progress bar in a real pseudo-terminal, progress
//! records (and no escape code) when stderr is a pipe, JSON logs that parse line by line.

use crate::common::*;
use gemini_sim::SimConfig;

/// Twelve accounts, swept at 24 requests/s (`with_rate`): the pace holds the run open for at
/// least 1.5 s, however fast the machine, long enough for the display to tick.
fn paced() -> SimConfig {
    let mut config = sim_config(12);
    config.orders_per_account = 2..=6;
    config
}

fn with_rate(mut args: Vec<String>) -> Vec<String> {
    args.extend(["--rate".into(), "24".into()]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_a_bar_with_the_counts() {
    let server = start(paced()).await;
    let (ws, args) = sweep_setup(&server);
    // util-linux `script` runs the command on a fresh pseudo-terminal and copies what it shows.
    let output = Bin::new()
        .in_terminal(&ws.path("typescript"))
        .args(with_rate(args))
        .output()
        .await;
    let screen = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{screen}");
    assert!(screen.contains("\u{1b}["), "a terminal gets escape codes");
    assert!(screen.contains("/12 accounts"), "{screen}");
    assert!(
        screen.contains("12/12 accounts"),
        "the final counts are shown: {screen}"
    );
    let (cancelled, _) = ledger_truth(&server);
    assert!(
        screen.contains(&format!("{} orders cancelled", cancelled.len())),
        "{screen}"
    );
    assert!(
        screen.contains("req/s") && screen.contains("ETA"),
        "{screen}"
    );
    assert!(
        screen.contains("\"exit_code\":0"),
        "the summary still comes out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_gets_progress_records_and_no_escape_code() {
    let server = start(paced()).await;
    let (_ws, args) = sweep_setup(&server);
    let mut args = with_rate(args);
    args.extend(["--progress-interval".into(), "0.3".into()]);
    let output = run_binary(&args, &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(!err.contains('\u{1b}'), "no escape code in a pipe: {err}");
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(!progress.is_empty(), "{err}");
    assert!(
        progress.iter().all(|l| l.contains("/12 accounts")),
        "{progress:?}"
    );
    assert!(
        !err.lines().any(|l| l.contains("cancel-all done")),
        "per-account success lines are debug only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_line_by_line() {
    let server = start(paced()).await;
    let (_ws, args) = sweep_setup(&server);
    let mut args = with_rate(args);
    args.extend([
        "--progress-interval".into(),
        "0.3".into(),
        "--log-format".into(),
        "json".into(),
    ]);
    let output = run_binary(&args, &[]).await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let mut progress_records = 0;
    for line in err.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            record["level"].is_string() && record["timestamp"].is_string(),
            "{line}"
        );
        if record["fields"]["accounts_total"] == 12 {
            progress_records += 1;
            assert!(record["fields"]["accounts_done"].as_u64().unwrap() <= 12);
            assert!(record["fields"]["orders_cancelled"].is_u64(), "{line}");
        }
    }
    assert!(progress_records > 0, "{err}");
    // stdout is the summary alone.
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
}
