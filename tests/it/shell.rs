//! Shell integration: completion scripts and man pages, generated from the same definitions as
//! `--help`, so they cannot fall behind the flags.

use crate::common::*;

const COMMANDS: &[&str] = &["run", "accounts", "report", "runs", "demo", "sim"];

/// What each shell's script must say: that it completes `gemini-sweep`, each command as a
/// candidate, and `run`'s `--metrics-file`, in that shell's own syntax (a bare `contains("run")`
/// is true of almost any script).
struct Expect {
    shell: &'static str,
    registers: &'static str,
    command: fn(&str) -> String,
    metrics_file: &'static str,
}

const SHELLS: &[Expect] = &[
    Expect {
        shell: "bash",
        registers: "complete -F _gemini__sweep -o nosort -o bashdefault -o default gemini-sweep",
        command: |c| format!("gemini__sweep,{c})"),
        metrics_file: " --metrics-file ",
    },
    Expect {
        shell: "zsh",
        registers: "#compdef gemini-sweep",
        command: |c| format!("\n'{c}:"),
        metrics_file: "'--metrics-file=[",
    },
    Expect {
        shell: "fish",
        registers: "complete -c gemini-sweep ",
        command: |c| format!(r#"-n "__fish_gemini_sweep_needs_command" -f -a "{c}""#),
        metrics_file: r#"-n "__fish_gemini_sweep_using_subcommand run" -l metrics-file"#,
    },
    Expect {
        shell: "elvish",
        registers: "set edit:completion:arg-completer[gemini-sweep]",
        command: |c| format!("cand {c} '"),
        metrics_file: "cand --metrics-file '",
    },
    Expect {
        shell: "powershell",
        registers: "Register-ArgumentCompleter -Native -CommandName 'gemini-sweep'",
        command: |c| {
            format!("[CompletionResult]::new('{c}', '{c}', [CompletionResultType]::ParameterValue")
        },
        metrics_file: "[CompletionResult]::new('--metrics-file', '--metrics-file'",
    },
];

#[tokio::test]
async fn completions_cover_every_command_and_bash_can_load_them() {
    for expect in SHELLS {
        let shell = expect.shell;
        let output = run_binary(&["completions", shell], &[]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(
            script.contains(expect.registers),
            "{shell}: does not register for gemini-sweep: {script}"
        );
        for command in COMMANDS {
            let candidate = (expect.command)(command);
            assert!(
                script.contains(&candidate),
                "{shell}: {command} is not offered ({candidate:?} missing)"
            );
        }
        assert!(
            script.contains(expect.metrics_file),
            "{shell}: run's --metrics-file missing"
        );
    }

    // Bash itself: the script loads, registers, and completes what a user types.
    let output = run_binary(&["completions", "bash"], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gemini-sweep.bash");
    std::fs::write(&file, &output.stdout).unwrap();
    let complete = |words: &[&str]| -> String {
        // As bash calls a completion function: the words so far, the one being completed last.
        let (cur, prev) = (words[words.len() - 1], words[words.len() - 2]);
        let script = format!(
            "source '{}' && complete -p gemini-sweep >/dev/null && COMP_WORDS=({}) && COMP_CWORD={} && _gemini__sweep gemini-sweep '{cur}' '{prev}' && echo \"${{COMPREPLY[*]}}\"",
            file.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
        );
        let check = std::process::Command::new("bash")
            .args(["--norc", "-c", &script])
            .output()
            .expect("bash runs");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        String::from_utf8_lossy(&check.stdout).trim().to_owned()
    };
    let commands = complete(&["gemini-sweep", ""]);
    for command in COMMANDS {
        assert!(
            commands.split(' ').any(|w| w == *command),
            "bash does not offer {command}: {commands:?}"
        );
    }
    assert_eq!(
        complete(&["gemini-sweep", "run", "--metr"]),
        "--metrics-file"
    );
    assert_eq!(complete(&["gemini-sweep", "rep"]), "report");

    let output = run_binary(&["completions", "tcsh"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn a_man_page_for_the_tool_and_each_command() {
    let output = run_binary(&["man"], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH gemini-sweep 1"), "{page}");
    for command in COMMANDS {
        assert!(
            page.contains(command),
            "{command} missing from the main page"
        );
        let output = run_binary(&["man", command], &[]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let page = String::from_utf8(output.stdout).unwrap();
        assert!(
            page.contains(&format!(".TH gemini-sweep-{command} 1")),
            "{page}"
        );
        assert!(page.contains(".SH OPTIONS"), "{command}: {page}");
        roff_is_clean(&page, command);
    }
    let run = String::from_utf8(run_binary(&["man", "run"], &[]).await.stdout).unwrap();
    for flag in ["all\\-accounts", "config", "metrics\\-file", "nonce\\-mode"] {
        assert!(run.contains(flag), "--{flag} missing from the run page");
    }
    assert!(
        run.contains("Exit codes"),
        "the exit codes are on the run page"
    );

    let output = run_binary(&["man", "nope"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("give one of run"),
        "{}",
        stderr(&output)
    );
}

/// groff renders the page without a single warning. Where groff is missing (a machine with only
/// the Rust toolchain) the page is still checked: every line is roff the man macros know, so the
/// test cannot pass without checking anything, and the README's test command needs no package.
fn roff_is_clean(page: &str, command: &str) {
    for line in page.lines() {
        if let Some(request) = line.strip_prefix('.') {
            let name = request.split_whitespace().next().unwrap_or("");
            assert!(
                [
                    "TH", "SH", "SS", "PP", "TP", "IP", "LP", "P", "B", "I", "BR", "IR", "RS",
                    "RE", "br", "sp", "nf", "fi", "in", "ie", "el", "ds", "nr", "if", "ne", "\\\"",
                    "HP", "EX", "EE", "UR", "UE", "na", "ad", "hy", "nh", "ft", "ti"
                ]
                .contains(&name)
                    || name.starts_with('\\'),
                "{command}: not a man-page request: {line:?}"
            );
        }
    }
    let mut child = match std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "groff is not installed ({e}): {command}'s page was checked without rendering it \
                 (Debian, Ubuntu: `apt-get install groff-base` renders it too)"
            );
            return;
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(
        output.stderr.is_empty(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
