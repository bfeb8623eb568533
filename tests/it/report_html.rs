//! `report --format html --out FILE`: a page an auditor reads without SQL, built from real runs
//! of the binary against the simulator on loopback, checked against the database it came from.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use crate::common::*;
use gemini_sim::RateLimitConfig;
use scraper::{ElementRef, Html, Selector};

/// Runs `report --format html` under umask 000, so the file's mode is the program's doing.
async fn html_report(db: &Path, out: &Path, extra: &[&str]) -> Output {
    Bin::new()
        .umask_000()
        .args(["report", "--format", "html", "--db"])
        .arg(db)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .await
}

/// Writes the page for `run` and reads it back: it must parse without a single HTML error.
async fn page(db: &Path, run: &str) -> (String, Html) {
    let out = db.with_file_name(format!("report-{run}.html"));
    let output = html_report(db, &out, &["--run", run]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "the page goes to the file only");
    let text = std::fs::read_to_string(&out).expect("the report file");
    let doc = Html::parse_document(&text);
    assert!(
        doc.errors.is_empty(),
        "the page is not well-formed HTML: {:?}",
        doc.errors
    );
    (text, doc)
}

fn sel(css: &str) -> Selector {
    Selector::parse(css).unwrap()
}

fn one<'a>(doc: &'a Html, css: &str) -> ElementRef<'a> {
    doc.select(&sel(css))
        .next()
        .unwrap_or_else(|| panic!("no {css} in the page"))
}

fn text_of(e: ElementRef<'_>) -> String {
    e.text().collect()
}

/// A total's machine-readable value: `None` when the page shows it as unknown or a lower bound.
fn total(doc: &Html, id: &str) -> Option<i64> {
    let cell = one(doc, &format!("#{id} td"));
    cell.value().attr("data-value").and_then(|v| v.parse().ok())
}

/// Nothing in the page makes a browser fetch or run anything.
fn assert_self_contained(text: &str, doc: &Html, base_url: &str) {
    let lower = text.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script element");
    for scheme in ["http://", "https://"] {
        // The base URL appears as text; no other address does.
        let rest = text.replace(base_url, "");
        assert!(
            !rest.contains(scheme),
            "an address other than the base URL: {}",
            &rest[rest.find(scheme).unwrap().saturating_sub(80)..][..160.min(rest.len())]
        );
    }
    for css in [
        "script", "link", "img", "iframe", "object", "embed", "image", "use",
    ] {
        assert_eq!(doc.select(&sel(css)).count(), 0, "a <{css}> element");
    }
    for e in doc
        .root_element()
        .descendants()
        .filter_map(ElementRef::wrap)
    {
        for (name, _) in e.value().attrs() {
            let name = name.to_ascii_lowercase();
            assert!(
                !matches!(
                    name.as_str(),
                    "src" | "href" | "xlink:href" | "srcset" | "action"
                ) && !name.starts_with("on"),
                "<{} {name}=...>",
                e.value().name()
            );
        }
    }
    assert!(!lower.contains("url("), "a CSS url()");
    assert!(!lower.contains("@import"), "a CSS @import");
    let csp = one(doc, "meta[http-equiv=Content-Security-Policy]");
    assert!(
        csp.value()
            .attr("content")
            .unwrap()
            .contains("default-src 'none'"),
        "the browser is told to load nothing"
    );
}

/// run_reconciliation's totals, by column.
fn run_totals(
    conn: &rusqlite::Connection,
    run_id: i64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut stmt = conn
        .prepare("SELECT * FROM run_reconciliation WHERE run_id = ?1")
        .unwrap();
    let names: Vec<String> = stmt.column_names().map(String::from).collect();
    stmt.query_row([run_id], |r| {
        let mut map = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v: rusqlite::types::Value = r.get(i)?;
            map.insert(
                n.clone(),
                match v {
                    rusqlite::types::Value::Integer(i) => i.into(),
                    rusqlite::types::Value::Text(t) => t.into(),
                    rusqlite::types::Value::Real(f) => f.into(),
                    _ => serde_json::Value::Null,
                },
            );
        }
        Ok(map)
    })
    .unwrap()
}

fn may_be_open(conn: &rusqlite::Connection, run_id: i64) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM order_reconciliation WHERE run_id = ?1 AND outcome IN ('still_open', 'unverified', 'rejected')",
        [run_id],
        |r| r.get(0),
    )
    .unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A run with rejects and 429s: the page is self-contained, private, well-formed, and says
/// what the database says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_what_the_database_says() {
    let mut config = sim_config(30);
    config.orders_per_account = 0..=25;
    config.reject_fraction = 0.05;
    config.rate_limit = Some(RateLimitConfig {
        per_second: 150.0,
        burst_queue: 1,
        send_retry_after: false,
    });
    let server = start(config).await;
    let (ws, mut args) = sweep_setup(&server);
    // Every total compared with the view, the listing before the cancel-all included.
    args.extend(["--rate", "600", "--max-attempts", "20", "--snapshot"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        stderr(&output)
    );
    let conn = db(&ws.db());
    let totals = run_totals(&conn, 1);

    // An older report at the same path, readable by all, is replaced whole by a private one.
    let out = ws.path("report-1.html");
    std::fs::write(&out, "stale").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (text, doc) = page(&ws.db(), "1").await;
    #[cfg(unix)]
    assert_eq!(mode(&out), 0o600, "the report is part of the audit trail");
    let leftovers: Vec<String> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    assert_self_contained(&text, &doc, &server.base_url());
    assert!(text.contains(&server.base_url()), "the base URL is shown");

    // The header.
    assert_eq!(
        text_of(one(&doc, "#run-status td")),
        totals["status"].as_str().unwrap()
    );
    assert_eq!(
        text_of(one(&doc, "#run-key td")),
        totals["key_fingerprint"].as_str().unwrap()
    );
    assert!(!text.contains(KEY), "never the key");
    assert!(!text.contains(SECRET), "never the secret");
    assert_eq!(
        doc.select(&sel("#invocations tbody tr")).count(),
        1,
        "one row per invocation"
    );
    let invocation = text_of(one(&doc, "#invocations tbody tr"));
    assert!(invocation.contains("start"), "{invocation}");
    assert!(invocation.contains("600/s"), "{invocation}");

    // The totals are the view's.
    for (id, column) in [
        ("total-accounts", "accounts"),
        ("total-accounts-clean", "accounts_clean"),
        ("total-accounts-dirty", "accounts_dirty"),
        ("total-cancelled", "cancelled"),
        ("total-rejected", "rejected"),
        ("total-open-before", "open_before"),
        ("total-open-after", "open_after"),
        ("total-unverified", "unverified"),
        ("total-unexplained", "unexplained"),
        ("total-late", "late"),
    ] {
        assert_eq!(
            total(&doc, id),
            totals[column].as_i64(),
            "{id} against run_reconciliation.{column}"
        );
    }
    // The times to flat are the summary's, and the chart draws one step per account.
    let summary = stdout_json(&output);
    for (id, field) in [
        ("run-time-to-flat", "time_to_flat_ms"),
        ("run-time-to-proven-flat", "time_to_proven_flat_ms"),
    ] {
        assert_eq!(total(&doc, id), summary[field].as_i64(), "{id}");
    }
    let drawn = |class: &str| {
        one(&doc, &format!("#flat-chart polyline.{class}"))
            .value()
            .attr("data-accounts")
            .and_then(|v| v.parse::<i64>().ok())
    };
    assert_eq!(
        drawn("cancelled"),
        Some(count(
            &conn,
            "SELECT count(DISTINCT account) FROM attempts WHERE run_id = 1 AND phase = 'cancel' AND outcome = 'ok'"
        ))
    );
    assert_eq!(
        drawn("proven"),
        Some(count(
            &conn,
            "SELECT count(*) FROM account_reconciliation WHERE run_id = 1 AND clean = 1"
        ))
    );
    let bound: f64 = one(&doc, "#flat-chart line.bound")
        .value()
        .attr("data-seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (bound - 30.0 / 600.0).abs() < 1e-3,
        "30 accounts at 600/s: {bound}"
    );
    let attempts = count(&conn, "SELECT count(*) FROM attempts WHERE run_id = 1");
    assert_eq!(total(&doc, "total-requests"), Some(attempts));

    // The verdict follows the run's status and `clean`.
    let verdict = one(&doc, "#verdict");
    let verdict_text = text_of(verdict);
    if totals["clean"] == 1 {
        assert!(
            verdict
                .value()
                .has_class("good", scraper::CaseSensitivity::CaseSensitive)
        );
        assert_eq!(verdict_text, "Every account verified flat.");
    } else {
        assert!(
            verdict
                .value()
                .has_class("bad", scraper::CaseSensitivity::CaseSensitive)
        );
        assert!(
            verdict_text.starts_with("Orders may still be open"),
            "{verdict_text}"
        );
    }

    // Every account, once, with its row highlighted exactly when the view calls it dirty.
    let rows: Vec<ElementRef> = doc.select(&sel("#accounts tbody tr")).collect();
    let on_page: BTreeSet<String> = rows
        .iter()
        .map(|r| r.value().attr("data-account").unwrap().to_string())
        .collect();
    assert_eq!(rows.len(), on_page.len());
    let names: BTreeSet<String> = account_names(&server).into_iter().collect();
    assert_eq!(on_page, names);
    let dirty: BTreeSet<String> = conn
        .prepare("SELECT account FROM account_reconciliation WHERE run_id = 1 AND dirty")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let highlighted: BTreeSet<String> = rows
        .iter()
        .filter(|r| {
            r.value()
                .has_class("dirty", scraper::CaseSensitivity::CaseSensitive)
        })
        .map(|r| r.value().attr("data-account").unwrap().to_string())
        .collect();
    assert_eq!(highlighted, dirty);
    assert!(
        !dirty.is_empty(),
        "5% of orders refuse cancellation: some account kept one"
    );

    // The orders that may still be open: all of them (fewer than the cap).
    let open = may_be_open(&conn, 1);
    assert!(open > 0);
    assert_eq!(doc.select(&sel("#orders tbody tr")).count() as i64, open);
    assert_eq!(
        one(&doc, "#orders-count").value().attr("data-value"),
        Some(open.to_string().as_str())
    );
    assert_eq!(doc.select(&sel("#orders-more")).count(), 0);
    let first = one(&doc, "#orders tbody tr");
    let cells: Vec<String> = first.select(&sel("td")).map(text_of).collect();
    let (symbol, side): (String, String) = conn
        .query_row(
            "SELECT symbol, side FROM open_orders_before WHERE run_id = 1 AND account = ?1 AND order_id = ?2",
            rusqlite::params![cells[0], cells[1].parse::<i64>().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (cells[4].as_str(), cells[5].as_str()),
        (symbol.as_str(), side.as_str())
    );

    // The chart: bars, the configured rate, and every 429 the database recorded.
    let svg = one(&doc, "svg#rate-chart");
    let line = svg
        .select(&sel("line.rate-limit"))
        .next()
        .expect("the rate line");
    assert_eq!(line.value().attr("data-rate"), Some("600"));
    assert!(svg.select(&sel("rect.ok")).count() > 0);
    let limited = count(
        &conn,
        "SELECT count(*) FROM attempts WHERE run_id = 1 AND http_status = 429",
    );
    let charted: i64 = svg
        .select(&sel("g.bucket > title"))
        .map(|t| {
            let t = text_of(t);
            let n = t
                .split(", ")
                .find(|p| p.ends_with("refused with 429"))
                .unwrap();
            n.split_whitespace()
                .next()
                .unwrap()
                .replace(',', "")
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(charted, limited, "every 429 is on the chart");
    assert!(limited > 0, "the exchange's limit is a quarter of --rate");
    assert!(svg.select(&sel("rect.limited")).count() > 0);
    assert!(text_of(one(&doc, "#chart-note")).contains(&format!("{attempts} requests")));
}

/// Names and messages come from outside: a name or an error holding markup is shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_outside_is_shown_not_run() {
    let server = start(sim_config(3)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    const NAME: &str = "<script>alert('name')</script>&\"";
    const ERROR: &str = "</td></tr></table><script>alert(1)</script><img src=x onerror=alert(2)>";
    const REASON: &str = "<script src=\"https://evil.example/x.js\"></script>";
    let conn = db(&ws.db());
    for table in [
        "run_accounts",
        "attempts",
        "cancelled_orders",
        "cancel_rejects",
        "open_orders_before",
        "open_orders_after",
        "unstorable_order_ids",
    ] {
        conn.execute(
            &format!("UPDATE {table} SET account = ?1 WHERE account = 'acct-0001'"),
            [NAME],
        )
        .unwrap();
    }
    conn.execute(
        "UPDATE run_accounts SET last_error = ?1 WHERE account = ?2",
        [ERROR, NAME],
    )
    .unwrap();
    conn.execute(
        "UPDATE runs SET stop_reason = ?1, group_name = ?1",
        [REASON],
    )
    .unwrap();
    conn.execute("UPDATE invocations SET stop_reason = ?1", [REASON])
        .unwrap();
    // An order of the account is still open, so its name is in the order list too.
    conn.execute(
        "INSERT INTO open_orders_after (run_id, account, order_id, symbol, side, price, remaining_amount, attempt_id)
         SELECT 1, ?1, 42, '<b>btcusd</b>', 'buy', '1', '1', verify_attempt_id FROM run_accounts WHERE account = ?1",
        [NAME],
    )
    .unwrap();
    drop(conn);

    let (text, doc) = page(&ws.db(), "latest").await;
    assert!(!text.to_ascii_lowercase().contains("<script"), "escaped");
    assert!(!text.contains("<img"), "escaped");
    assert!(!text.contains("<b>btcusd"), "escaped");
    assert!(text.contains("&lt;script&gt;"), "shown as text");
    assert_self_contained(
        &text.replace("https://evil.example/x.js", ""),
        &doc,
        &server.base_url(),
    );
    // The parser reads the text back exactly as stored.
    let row = one(&doc, "#accounts tbody tr");
    assert_eq!(row.value().attr("data-account"), Some(NAME));
    let cells: Vec<String> = row.select(&sel("td")).map(text_of).collect();
    assert_eq!(cells[0], NAME);
    assert_eq!(cells.last().unwrap(), ERROR);
    assert_eq!(text_of(one(&doc, "#run-stop-reason td")), REASON);
    assert_eq!(text_of(one(&doc, "#run-group td")), REASON);
    assert!(text_of(one(&doc, "title")).contains(REASON));
    let order = one(&doc, "#orders tbody tr");
    let cells: Vec<String> = order.select(&sel("td")).map(text_of).collect();
    assert_eq!((cells[0].as_str(), cells[1].as_str()), (NAME, "42"));
    assert_eq!(cells[4], "<b>btcusd</b>");
    // The table structure survived the error text: one row per account, 15 cells each.
    assert_eq!(doc.select(&sel("#accounts tbody tr")).count(), 3);
    for row in doc.select(&sel("#accounts tbody tr")) {
        assert_eq!(row.select(&sel("td")).count(), 15);
    }
}

/// What was never observed reads unknown: an account never listed leaves the totals a lower
/// bound, its own counts `—`; a run without verification is not called flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_reads_unknown() {
    let server = start(sim_config(4)).await;
    let ws = Workspace::new();
    let mut names = account_names(&server);
    names.push("acct-gone".into()); // not on the exchange: refused, never listed
    let csv = ws.accounts_csv(&names);
    let mut args = run_args(&server.base_url(), &csv, &ws.db());
    // Every account but the refused one listed before its cancel-all.
    args.extend(["--rate", "1000", "--snapshot"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    let (text, doc) = page(&ws.db(), "1").await;
    assert_self_contained(&text, &doc, &server.base_url());
    let conn = db(&ws.db());
    let totals = run_totals(&conn, 1);
    assert_eq!(totals["accounts_without_snapshot"], 1);
    let before = text_of(one(&doc, "#total-open-before td"));
    assert_eq!(
        before,
        format!(
            "{}+ (1 account never listed before the cancel-all)",
            totals["open_before"]
        ),
        "a lower bound, said so"
    );
    assert_eq!(total(&doc, "total-open-before"), None);
    assert!(
        one(&doc, "#orders-never-listed")
            .text()
            .any(|t| t.contains("1 account was never listed"))
    );
    let verdict = text_of(one(&doc, "#verdict"));
    assert!(verdict.starts_with("Orders may still be open"), "{verdict}");
    let row = one(&doc, "#accounts tbody tr[data-account=acct-gone]");
    assert!(
        row.value()
            .has_class("dirty", scraper::CaseSensitivity::CaseSensitive)
    );
    let cells: Vec<ElementRef> = row.select(&sel("td")).collect();
    // before, open after and clean: unknown, not zero.
    for i in [5, 8, 13] {
        assert_eq!(text_of(cells[i]), "—", "cell {i}");
        assert!(
            cells[i]
                .value()
                .has_class("unknown", scraper::CaseSensitivity::CaseSensitive)
        );
    }
    assert!(
        text_of(cells[14]).contains("InvalidAccountName"),
        "{}",
        text_of(cells[14])
    );

    // A second run without verification: nothing says flat, the open-after total is unknown.
    let csv = ws.accounts_csv(&account_names(&server));
    let mut args = run_args(&server.base_url(), &csv, &ws.db());
    args.extend(["--rate", "1000", "--no-verify"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let (_, doc) = page(&ws.db(), "latest").await;
    let verdict = one(&doc, "#verdict");
    assert!(
        verdict
            .value()
            .has_class("warn", scraper::CaseSensitivity::CaseSensitive)
    );
    assert!(
        text_of(verdict).starts_with("Not verified"),
        "{}",
        text_of(verdict)
    );
    assert_eq!(
        text_of(one(&doc, "#total-open-after td")),
        "unknown (no account was listed after its last cancel-all)"
    );
    assert!(text_of(one(&doc, "#total-clean td")).starts_with("unknown"));
    for row in doc.select(&sel("#accounts tbody tr")) {
        let cells: Vec<String> = row.select(&sel("td")).map(text_of).collect();
        assert_eq!(cells[1], "not verified");
        assert_eq!((cells[5].as_str(), cells[8].as_str()), ("—", "—"));
    }
}

/// A refused key: one request, the verdict names the refusal, and the chart still renders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_the_verdict_and_one_request_is_a_chart() {
    let server = start(sim_config(5)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "5"].map(String::from));
    let output = run_binary(&args, &[("GEMINI_API_SECRET", "not-the-secret")]).await;
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let (text, doc) = page(&ws.db(), "latest").await;
    assert_self_contained(&text, &doc, &server.base_url());
    let verdict = one(&doc, "#verdict");
    assert!(
        verdict
            .value()
            .has_class("bad", scraper::CaseSensitivity::CaseSensitive)
    );
    let verdict = text_of(verdict);
    assert!(
        verdict.starts_with("The exchange refused the key: "),
        "{verdict}"
    );
    assert!(verdict.contains("InvalidSignature"), "{verdict}");
    let svg = one(&doc, "svg#rate-chart");
    assert_eq!(
        svg.select(&sel("g.bucket")).count(),
        1,
        "one request, one bar"
    );
    assert_eq!(svg.select(&sel("rect.failed")).count(), 1);
    assert_eq!(
        svg.select(&sel("line.rate-limit"))
            .next()
            .unwrap()
            .value()
            .attr("data-rate"),
        Some("5")
    );
    let invocation: Vec<String> = one(&doc, "#invocations tbody tr")
        .select(&sel("td"))
        .map(text_of)
        .collect();
    assert_eq!(invocation[6], "4", "the exit code");
}

/// A run can hold millions of orders and requests: the page lists the first 10,000 orders and
/// says how many more, and the chart keeps to a bounded number of bars over hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_run_is_capped_and_bucketed() {
    let server = start(sim_config(2)).await;
    let (ws, mut args) = sweep_setup(&server);
    args.extend(["--rate", "1000", "--snapshot"].map(String::from));
    let output = run_binary(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut conn = db(&ws.db());
    let tx = conn.transaction().unwrap();
    // 12,345 orders open before and still open in the verified listing after.
    for (table, attempt) in [
        ("open_orders_before", "snapshot_attempt_id"),
        ("open_orders_after", "verify_attempt_id"),
    ] {
        tx.execute(
            &format!(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 12345)
                 INSERT INTO {table} (run_id, account, order_id, symbol, side, price, remaining_amount, attempt_id)
                 SELECT 1, 'acct-0001', 9000000000 + i, 'ethusd', 'sell', '2500.5', '0.1',
                        (SELECT {attempt} FROM run_accounts WHERE run_id = 1 AND account = 'acct-0001')
                 FROM k"
            ),
            [],
        )
        .unwrap();
    }
    // 50,000 requests spread over ten hours, every tenth refused with 429.
    tx.execute(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 50000)
         INSERT INTO attempts (run_id, invocation_id, account, attempt_no, phase, endpoint, nonce, sent_at, outcome, http_status)
         SELECT 1, 1, 'acct-0002', 1000 + i, 'verify', '/v1/orders', i,
                strftime('%Y-%m-%dT%H:%M:%fZ', (SELECT started_at FROM runs WHERE run_id = 1), '+' || (i * 0.72) || ' seconds'),
                CASE WHEN i % 10 = 0 THEN 'transient' ELSE 'ok' END,
                CASE WHEN i % 10 = 0 THEN 429 ELSE 200 END
         FROM k",
        [],
    )
    .unwrap();
    tx.commit().unwrap();
    let open = may_be_open(&conn, 1);
    assert_eq!(open, 12345);
    let totals = run_totals(&conn, 1);

    let (text, doc) = page(&ws.db(), "1").await;
    assert_eq!(doc.select(&sel("#orders tbody tr")).count(), 10_000);
    let more = one(&doc, "#orders-more");
    assert_eq!(more.value().attr("data-value"), Some("2345"));
    assert!(text_of(more).contains("2,345 more"), "{}", text_of(more));
    assert_eq!(
        total(&doc, "total-open-after"),
        totals["open_after"].as_i64()
    );
    assert_eq!(totals["open_after"], 12345);
    let svg = one(&doc, "svg#rate-chart");
    let bars = svg.select(&sel("g.bucket")).count();
    assert!((100..=240).contains(&bars), "{bars} bars over ten hours");
    assert!(svg.select(&sel("rect.limited")).count() > 100);
    assert!(svg.select(&sel("line.rate-limit")).count() == 1);
    assert!(text.len() < 4 << 20, "{} bytes", text.len());
}

/// `--format html` needs a file; `runs` has no html.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_is_a_file_and_only_a_report() {
    let ws = Workspace::new();
    let db = ws.db().display().to_string();
    let out = run_binary(&["report", "--db", &db, "--format", "html"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--out FILE"), "{}", stderr(&out));
    let out = run_binary(&["runs", "--db", &db, "--format", "html"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("html"), "{}", stderr(&out));
}
