//! The simulator is for the edge only. Cargo lets any file of this crate name `gemini_sim` (it is a
//! dependency, for `demo` and `sim`), so this test holds the rule: only src/demo.rs and
//! src/cli/** may, and the simulator depends on nothing of ours.

use std::path::Path;

use crate::common::files_under;

/// Files under `src/` that may name the simulator's crate.
fn may_name_the_simulator(relative: &Path) -> bool {
    relative == Path::new("src/demo.rs") || relative.starts_with("src/cli")
}

/// True when `text` holds `word` not as part of a longer identifier.
fn names(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[test]
fn only_the_edge_names_the_simulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_under(&root.join("src"), "rs", &mut files);
    let mut edge = 0;
    let mut offenders = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root).unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        if !names(&text, "gemini_sim") {
            continue;
        }
        if may_name_the_simulator(relative) {
            edge += 1;
        } else {
            offenders.push(relative.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "only src/demo.rs and src/cli/** may use the simulator (gemini_sim); also named in: {}",
        offenders.join(", ")
    );
    // The scan found the files that do use it: it reads what it means to read.
    assert!(edge >= 2, "{edge} edge files name gemini_sim");
}

#[test]
fn the_word_match_is_not_fooled_by_longer_names() {
    assert!(names("use gemini_sim::SimConfig;", "gemini_sim"));
    assert!(names("x(gemini_sim)", "gemini_sim"));
    assert!(!names("use gemini_simulator;", "gemini_sim"));
    assert!(!names("my_gemini_sim_thing", "gemini_sim"));
}

#[test]
fn the_simulator_depends_on_nothing_of_ours() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("sim/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) {
            assert!(
                !deps.contains_key("gemini-sweep"),
                "sim/Cargo.toml [{section}] names gemini-sweep"
            );
        }
    }
    assert!(
        manifest["dependencies"]
            .as_table()
            .unwrap()
            .contains_key("axum")
    );
}
