//! Shell integration: completion scripts and man pages, generated from the same definitions as
//! `--help`, so they cannot fall behind the flags.

use crate::common::*;

const COMMANDS: &[&str] = &["run", "accounts", "report", "runs", "demo", "sim"];

#[tokio::test]
async fn completions_cover_every_command_and_bash_can_load_them() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = run_binary(&["completions", shell], &[]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let script = String::from_utf8(output.stdout).unwrap();
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
        assert!(
            script.contains("metrics-file"),
            "{shell}: run's flags missing"
        );
    }
    let output = run_binary(&["completions", "bash"], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gemini-sweep.bash");
    std::fs::write(&file, &output.stdout).unwrap();
    // Sourcing it defines the completion function and registers it for the command.
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p gemini-sweep",
            file.display()
        ))
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("gemini-sweep"));

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

/// groff, where installed, renders the page without a single warning.
fn roff_is_clean(page: &str, command: &str) {
    let Ok(mut child) = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("groff is not installed: the roff of `{command}` is checked for structure only");
        return;
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
