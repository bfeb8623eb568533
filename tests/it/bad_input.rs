//! Bad input gets one precise message, exit code 2, and not a single request.

use crate::common::*;

enum Csv {
    Bytes(&'static [u8]),
    Missing,
    Directory,
    /// A path outside the workspace.
    Path(&'static str),
}

struct Case {
    name: &'static str,
    csv: Csv,
    extra_args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Every one of these must appear in stderr.
    expect: &'static [&'static str],
}

const GOOD_CSV: &[u8] = b"account\nacct-0001\nacct-0002\n";

const CASES: &[Case] = &[
    Case {
        name: "an endless file",
        csv: Csv::Path("/dev/zero"),
        extra_args: &[],
        env: &[],
        expect: &["/dev/zero: is a character device, not a regular file"],
    },
    Case {
        name: "a rate so low it would take forever",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--rate", "1e-9"],
        env: &[],
        expect: &["--rate", "must be from 0.1 to 100000"],
    },
    Case {
        name: "a rate that used to panic",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--rate", "1e-20"],
        env: &[],
        expect: &["--rate", "must be from 0.1 to 100000"],
    },
    Case {
        name: "a password in the base URL",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--base-url", "https://ops:hunter2@api.gemini.com"],
        env: &[],
        expect: &["remove the user:password part"],
    },
    Case {
        name: "a proxy that would see the key in clear",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--proxy", "http://proxy.corp.example:3128"],
        env: &[],
        expect: &["--proxy", "must be https://"],
    },
    Case {
        name: "a lock directory that does not exist",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--lock-dir", "/nonexistent/locks"],
        env: &[],
        expect: &["--lock-dir /nonexistent/locks: does not exist"],
    },
    Case {
        name: "duplicate account",
        csv: Csv::Bytes(b"account\nacct-0001\nacct-0002\nacct-0001\n"),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:4:", "listed twice (lines 2 and 4)"],
    },
    Case {
        name: "missing account column",
        csv: Csv::Bytes(b"nickname\nacct-0001\n"),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:1:", "no `account` column"],
    },
    Case {
        name: "semicolon delimiter",
        csv: Csv::Bytes(b"account;enabled\nacct-0001;true\n"),
        extra_args: &[],
        env: &[],
        expect: &["another delimiter"],
    },
    Case {
        name: "empty file",
        csv: Csv::Bytes(b""),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:", "empty"],
    },
    Case {
        name: "nickname with a space",
        csv: Csv::Bytes(b"account\nacct 1\n"),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:2:", "contains ' '"],
    },
    Case {
        name: "unreadable accounts file",
        csv: Csv::Missing,
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:", "cannot read the accounts file"],
    },
    Case {
        name: "quoted newline in a nickname",
        csv: Csv::Bytes(b"account\n\"acct\n0001\"\n"),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:2:", "contains '\\n'"],
    },
    Case {
        name: "non-UTF-8 bytes",
        csv: Csv::Bytes(b"account\nacct-0001\n\xff\xfeacct\n"),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:3:", "not valid UTF-8"],
    },
    Case {
        name: "control character",
        csv: Csv::Bytes(b"account\nacct\x01x\n"),
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv:2:", "contains '\\u{1}'"],
    },
    Case {
        name: "a directory instead of a file",
        csv: Csv::Directory,
        extra_args: &[],
        env: &[],
        expect: &["accounts.csv: is a directory"],
    },
    Case {
        name: "missing secret",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &[],
        env: &[("GEMINI_API_SECRET", "")],
        expect: &["GEMINI_API_SECRET is not set"],
    },
    Case {
        name: "missing key",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &[],
        env: &[("GEMINI_API_KEY", "")],
        expect: &["GEMINI_API_KEY is not set"],
    },
    Case {
        name: "account key with several accounts",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &[],
        env: &[("GEMINI_API_KEY", "account-abc")],
        expect: &["not a master key", "2 enabled accounts"],
    },
    Case {
        name: "plain http to a non-loopback host",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--base-url", "http://api.gemini.com"],
        env: &[],
        expect: &["plain http:// is allowed only to loopback"],
    },
    Case {
        name: "rate zero",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--rate", "0"],
        env: &[],
        expect: &["--rate", "must be from 0.1 to 100000"],
    },
    Case {
        name: "concurrency zero",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--concurrency", "0"],
        env: &[],
        expect: &["--concurrency"],
    },
    Case {
        name: "negative attempts",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--max-attempts", "-1"],
        env: &[],
        expect: &["--max-attempts"],
    },
    Case {
        name: "api key on the command line",
        csv: Csv::Bytes(GOOD_CSV),
        extra_args: &["--api-secret", "x"],
        env: &[],
        expect: &["unexpected argument '--api-secret'"],
    },
];

/// A megabyte on one line: refused by the nickname rule, without a panic or a huge message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_line_is_refused_briefly() {
    let ws = Workspace::new();
    let mut text = b"account\n".to_vec();
    text.extend(std::iter::repeat_n(b'a', 1 << 20));
    text.push(b'\n');
    let csv = ws.write("accounts.csv", &text).display().to_string();
    let db = ws.db().display().to_string();
    let output = run_binary(&["run", "--accounts", &csv, "--db", &db, "--sandbox"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("accounts.csv:2:") && err.contains("at most 128"),
        "{err}"
    );
    assert!(err.len() < 2000, "the message does not echo the line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_accounts_are_read_and_planned() {
    let ws = Workspace::new();
    let mut text = String::from("account\n");
    for i in 0..100_000 {
        text.push_str(&format!("acct-{i:06}\n"));
    }
    let csv = ws
        .write("accounts.csv", text.as_bytes())
        .display()
        .to_string();
    let db = ws.db().display().to_string();
    let output = run_binary(
        &[
            "run",
            "--accounts",
            &csv,
            "--db",
            &db,
            "--sandbox",
            "--dry-run",
            "--no-verify",
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout_json(&output)["accounts_enabled"], 100_000);
}

/// Environment problems (the database) exit 3 before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_database_exits_3_and_sends_nothing() {
    let server = start(sim_config(2)).await;
    let url = server.base_url();
    let ws = Workspace::new();
    let csv = ws.write("accounts.csv", GOOD_CSV);
    let not_sqlite = ws.write("garbage.db", &[0x42; 4096]);
    let newer = ws.path("newer.db");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    // Another program's database: its user_version must not be read as ours.
    let foreign = ws.path("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER)")
            .unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
    }
    let missing_dir = ws.path("no/such/dir/sweep.db");
    for (db, expect) in [
        (not_sqlite, "not a usable SQLite database"),
        (newer, "newer than this gemini-sweep knows"),
        (foreign.clone(), "not a gemini-sweep database"),
        (missing_dir, "sweep.db"),
        (
            "/proc/gemini-sweep-test.db".into(),
            "/proc/gemini-sweep-test.db",
        ),
    ] {
        let mut args = run_args(&url, &csv, &db);
        args.truncate(args.len() - 2);
        args.extend(["--lock-dir".into(), ws.dir.path().display().to_string()]);
        let output = run_binary(&args, &[]).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{}: {err}", db.display());
        assert!(err.contains(expect), "{expect:?} not in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(server.ledger().counters.requests, 0);
    let untouched = rusqlite::Connection::open(&foreign).unwrap();
    let tables: i64 = untouched
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "nothing was added to another program's database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_a_precise_message_and_sends_nothing() {
    let server = start(sim_config(2)).await;
    let url = server.base_url();
    for case in CASES {
        let ws = Workspace::new();
        let csv = match case.csv {
            Csv::Bytes(bytes) => ws.write("accounts.csv", bytes),
            Csv::Missing => ws.path("accounts.csv"),
            Csv::Directory => {
                let dir = ws.path("accounts.csv");
                std::fs::create_dir(&dir).unwrap();
                dir
            }
            Csv::Path(path) => path.into(),
        };
        let db = ws.db();
        let mut args: Vec<&str> = vec!["run", "--accounts"];
        let csv_text = csv.display().to_string();
        let db_text = db.display().to_string();
        args.push(&csv_text);
        args.extend(["--db", &db_text]);
        if !case.extra_args.contains(&"--base-url") {
            args.extend(["--base-url", &url]);
        }
        args.extend(case.extra_args);
        let output = run_binary(&args, case.env).await;
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{}: {err}", case.name);
        for needle in case.expect {
            assert!(
                err.contains(needle),
                "{}: {needle:?} not in {err}",
                case.name
            );
        }
        assert!(output.stdout.is_empty(), "{}: stdout not empty", case.name);
        assert!(!db.exists(), "{}: a database was created", case.name);
        assert!(!err.contains(SECRET), "{}: the secret leaked", case.name);
        assert!(
            !err.contains("hunter2"),
            "{}: the password leaked",
            case.name
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{}: one line on stderr, not {err:?}",
            case.name
        );
    }
    assert_eq!(
        server.ledger().counters.requests,
        0,
        "the exchange saw no request"
    );
}
