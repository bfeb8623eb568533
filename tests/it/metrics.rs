//! `--metrics-file`: Prometheus text that a real parser accepts, with figures equal to the
//! database's, and a last-clean-sweep timestamp that only a clean run moves.

use std::collections::HashMap;

use crate::common::*;
use openmetrics_parser::{PrometheusValue, prometheus::parse_prometheus};

/// Every sample of the file as "name{label=value,...}" (labels sorted) -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    let exposition = parse_prometheus(text)
        .unwrap_or_else(|e| panic!("not Prometheus text format ({e}):\n{text}"));
    let mut out = HashMap::new();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let labelset = sample.get_labelset().unwrap();
            let mut labels: Vec<String> =
                labelset.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match &sample.value {
                PrometheusValue::Gauge(n) => n.as_f64(),
                other => panic!("{name} is not a gauge: {other:?}"),
            };
            out.insert(format!("{name}{{{}}}", labels.join(",")), value);
        }
    }
    out
}

fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from {:?}", samples.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_file_parses_and_matches_the_database() {
    let server = start(sim_config(6)).await;
    let (ws, mut args) = sweep_setup(&server);
    let metrics = ws.path("textfile/gemini-sweep.prom");
    std::fs::create_dir(ws.path("textfile")).unwrap();
    args.extend(["--metrics-file".into(), metrics.display().to_string()]);

    // A clean run: exit 0, and the clean-sweep timestamp is the run's end.
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let first = samples(&std::fs::read_to_string(&metrics).unwrap());
    let conn = db(&ws.db());
    let ended: f64 = conn
        .query_row(
            "SELECT (julianday(ended_at) - 2440587.5) * 86400.0 FROM runs WHERE run_id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let clean_at = get(
        &first,
        "gemini_sweep_last_clean_sweep_timestamp_seconds{group=default}",
    );
    assert!((clean_at - ended).abs() < 0.01, "{clean_at} vs {ended}");
    assert_eq!(get(&first, "gemini_sweep_exit_code{group=default}"), 0.0);
    // The times to flat are the summary's, in seconds.
    let summary = stdout_json(&output);
    for (metric, field) in [
        ("gemini_sweep_time_to_flat_seconds", "time_to_flat_ms"),
        (
            "gemini_sweep_time_to_proven_flat_seconds",
            "time_to_proven_flat_ms",
        ),
    ] {
        let ms = summary[field].as_f64().expect("a clean run has both");
        assert_eq!(
            get(&first, &format!("{metric}{{group=default}}")),
            ms / 1000.0
        );
    }
    assert_eq!(
        get(
            &first,
            "gemini_sweep_run_status{group=default,status=completed}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &first,
            "gemini_sweep_run_status{group=default,status=incomplete}"
        ),
        0.0
    );

    // A run with an account the exchange does not know: exit 1, the timestamp stays.
    let mut names = account_names(&server);
    names.push("closed-last-week".into());
    ws.accounts_csv(&names);
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = std::fs::read_to_string(&metrics).unwrap();
    let second = samples(&text);
    assert_eq!(get(&second, "gemini_sweep_exit_code{group=default}"), 1.0);
    assert_eq!(get(&second, "gemini_sweep_run_id{group=default}"), 2.0);
    assert_eq!(
        get(
            &second,
            "gemini_sweep_run_status{group=default,status=incomplete}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &second,
            "gemini_sweep_last_clean_sweep_timestamp_seconds{group=default}"
        ),
        clean_at,
        "only a clean run moves it"
    );
    // Never cancelled, so never flat: unknown is absent, not 0.
    for metric in [
        "gemini_sweep_time_to_flat_seconds",
        "gemini_sweep_time_to_proven_flat_seconds",
    ] {
        assert!(!text.contains(metric), "{metric} in {text}");
    }

    // Every figure equals the database's for run 2.
    let q = |sql: &str| count(&conn, sql) as f64;
    let accounts = |outcome: &str| {
        get(
            &second,
            &format!("gemini_sweep_accounts{{group=default,outcome={outcome}}}"),
        )
    };
    assert_eq!(accounts("ok"), 6.0);
    assert_eq!(accounts("failed"), 1.0);
    assert_eq!(
        accounts("ok") + accounts("failed"),
        q("SELECT count(*) FROM run_accounts WHERE run_id = 2")
    );
    assert_eq!(
        get(
            &second,
            "gemini_sweep_orders{group=default,outcome=cancelled}"
        ),
        q("SELECT count(DISTINCT order_id) FROM cancelled_orders WHERE run_id = 2")
    );
    let attempts: f64 = second
        .iter()
        .filter(|(k, _)| k.starts_with("gemini_sweep_attempts{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        attempts,
        q("SELECT count(*) FROM attempts WHERE run_id = 2")
    );
    let refused = second
        .iter()
        .find(|(k, _)| k.starts_with("gemini_sweep_attempts{") && k.contains("outcome=permanent"))
        .map(|(k, v)| (k.clone(), *v));
    let (key, n) = refused.expect("the unknown account's refusal is counted");
    assert!(key.contains("reason="), "{key}");
    assert_eq!(
        n,
        q("SELECT count(*) FROM attempts WHERE run_id = 2 AND outcome = 'permanent'")
    );
    assert_eq!(
        get(&second, "gemini_sweep_rate_limited{group=default}"),
        q("SELECT count(*) FROM attempts WHERE run_id = 2 AND http_status = 429")
    );

    // Written whole: no temporary file left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(ws.path("textfile"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_file_in_a_missing_directory_is_refused_before_sending() {
    let server = start(sim_config(2)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend([
        "--metrics-file".into(),
        ws.path("no-such-dir/x.prom").display().to_string(),
    ]);
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not exist"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.ledger().counters.requests, 0);
}
