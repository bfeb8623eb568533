//! Text from the exchange reaches the terminal, the logs and the reports only with its control
//! characters shown: a hostile exchange (a raw server on loopback) answers with ESC and OSC
//! sequences, NUL, BEL, a CR/LF followed by a forged log line, and bidi overrides, and every
//! output of the real binary is checked for raw control bytes and for the forged line.

use crate::common::*;
use crate::raw_exchange::*;

/// What the exchange writes: clears the screen, retitles the terminal, forges a log line,
/// turns the rest of the line backwards.
const HOSTILE: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{0}bad\r\nFAKE LOG LINE: all clean\r\n\u{202e}desrever\u{2066}x\u{9b}";
const FORGED: &str = "FAKE LOG LINE: all clean";

/// `HOSTILE` as a JSON string literal (the exchange sends valid JSON).
fn hostile_json() -> String {
    serde_json::to_string(HOSTILE).unwrap()
}

/// No byte or character that acts on a terminal or reorders the text, and no line that is the
/// forged one.
fn assert_inert(what: &str, text: &str) {
    let raw = text.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    });
    assert!(raw.is_none(), "{what}: raw {raw:?} in {text:?}");
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with(FORGED),
            "{what}: the forged line stands on its own: {text}"
        );
    }
}

fn refusing_exchange_body() -> String {
    format!(
        r#"{{"result":"error","reason":"InvalidSignature","message":{}}}"#,
        hostile_json()
    )
}

async fn swept_by_a_hostile_exchange(log_format: &str) -> (std::process::Output, Workspace) {
    let body = refusing_exchange_body();
    let exchange = RawExchange::start(move |_, _| Reply::json(400, body.clone())).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    let mut args = run_args(&exchange.url, &csv, &ws.db());
    args.extend(["--log-format".to_string(), log_format.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_binary(&args, &[]).await;
    assert!(!exchange.seen().is_empty(), "the exchange was asked");
    (output, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_message_cannot_forge_a_human_log_line_or_the_report() {
    let (output, ws) = swept_by_a_hostile_exchange("human").await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{err}");
    assert_inert("stderr", &err);
    assert!(
        err.contains("bad\\r\\nFAKE LOG LINE: all clean\\r\\n\\u{202e}desrever"),
        "the message is logged, visibly escaped: {err}"
    );
    assert!(err.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\0"), "{err}");
    let out = String::from_utf8(output.stdout.clone()).unwrap();
    assert_inert("stdout", &out);
    assert_eq!(stdout_json(&output)["exit_code"], 4);

    let db = ws.db().display().to_string();
    let table = run_binary(&["report", "--db", &db], &[]).await;
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let table = String::from_utf8(table.stdout).unwrap();
    assert_inert("report table", &table);
    let stopped = table
        .lines()
        .find(|l| l.starts_with("stopped: "))
        .unwrap_or_else(|| panic!("a stopped: line in {table}"));
    assert!(
        stopped.contains("\\u{1b}[2J\\0bad\\r\\nFAKE LOG LINE: all clean"),
        "{stopped}"
    );

    for format in ["csv", "json"] {
        let report = run_binary(&["report", "--db", &db, "--format", format], &[]).await;
        assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
        assert_inert(format, &String::from_utf8(report.stdout).unwrap());
    }

    let page = ws.path("report.html");
    let html = page.display().to_string();
    let report = run_binary(
        &["report", "--db", &db, "--format", "html", "--out", &html],
        &[],
    )
    .await;
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    let page = std::fs::read_to_string(&page).unwrap();
    assert_inert("html", &page);
    assert!(
        page.contains("\\u{202e}desrever"),
        "the override is shown, not obeyed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_keep_an_exchange_message_inside_one_json_line() {
    let (output, _ws) = swept_by_a_hostile_exchange("json").await;
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{err}");
    assert_inert("stderr", &err);
    let mut carried = false;
    for line in err.lines() {
        if line.starts_with("error: ") {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        // JSON's own escapes, undone by any JSON reader, give the message as the exchange sent it.
        carried |= record.to_string().contains("FAKE LOG LINE")
            && record["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(HOSTILE));
    }
    assert!(carried, "the message is in a JSON record: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_line_shows_an_exchange_message_visibly() {
    let body = refusing_exchange_body();
    let exchange = RawExchange::start(move |_, _| Reply::json(400, body.clone())).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let output = run_binary(&["accounts", "--base-url", &exchange.url, "--db", &db], &[]).await;
    let err = stderr(&output);
    assert_ne!(output.status.code(), Some(0), "{err}");
    assert_inert("stderr", &err);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert!(
        last.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\0bad\\r\\nFAKE LOG LINE"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_shows_what_the_exchange_named_them_visibly() {
    let listing = serde_json::json!([
        {"name": HOSTILE, "account": "desk-1", "type": "exchange", "status": "open", "created": 1_700_000_000_000u64},
        {"name": "Desk 2", "account": "desk-2", "type": format!("custody\r\n{FORGED}"), "status": "open", "created": 1_700_000_000_001u64},
        {"name": "Desk 3", "account": "desk-3", "type": "exchange", "status": "\u{1b}[31mclosed\u{202e}", "created": 1_700_000_000_002u64},
    ])
    .to_string();
    let exchange = RawExchange::start(move |_, _| Reply::json(200, listing.clone())).await;
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    for format in ["table", "csv", "json"] {
        let output = run_binary(
            &[
                "accounts",
                "--base-url",
                &exchange.url,
                "--db",
                &db,
                "--format",
                format,
            ],
            &[],
        )
        .await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let out = String::from_utf8(output.stdout.clone()).unwrap();
        assert_inert(format, &out);
        assert_inert("stderr", &stderr(&output));
        assert!(out.contains("desk-3"), "{out}");
        if format == "table" {
            assert!(out.contains("\\u{1b}]0;pwned"), "{out}");
            assert!(out.contains("custody\\r\\nFAKE"), "{out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_quoted_across_the_4_kib_cut_is_redacted_before_the_cut() {
    // The key starts 7 bytes before the cut: cut first, `master-` and no fingerprint were kept.
    let prefix = r#"{"result":"error","reason":"MissingRole","message":""#;
    let padding = "x".repeat(4096 - 7 - prefix.len());
    let body = format!(
        "{prefix}{padding}{KEY} lacks the Trader role{}\"}}",
        "y".repeat(200)
    );
    assert_eq!(body.find(KEY), Some(4096 - 7));
    let exchange = RawExchange::start(move |_, _| Reply::json(400, body.clone())).await;
    let ws = Workspace::new();
    let csv = ws.accounts_csv(&["acct-0001".to_string()]);
    let args = run_args(&exchange.url, &csv, &ws.db());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(!stderr(&output).contains("master-"), "{}", stderr(&output));
    let conn = db(&ws.db());
    let (body, truncated): (String, bool) = conn
        .query_row(
            "SELECT body, body_truncated FROM attempts WHERE body IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(body.len() <= 4096, "{}", body.len());
    assert!(truncated);
    assert!(!body.contains("master-"), "the key's start is kept: {body}");
    assert!(body.ends_with("master:"), "the fingerprint, cut: {body}");
}
