//! The flow of the code is one way, so the safety logic can be audited:
//! trigger → function → domain → graph/store. These tests read the sources
//! and fail when a module reaches back up (STYLE: "The scan hands
//! candidates to the lifecycle, never the other way; report writers take
//! plain rows and counts; `policy` imports nothing that does I/O; config is
//! a leaf").

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::<module>` names used by the files of `module` (tests included:
/// a test that needs another part shows the part is not separate).
fn reaches(module: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let dir = root.join(module);
    if dir.is_dir() {
        sources(&dir, &mut files);
    } else {
        files.push(root.join(format!("{module}.rs")));
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != module {
                found.push((file.display().to_string(), name));
            }
        }
    }
    found
}

fn assert_reaches_only(module: &str, allowed: &[&str]) {
    let bad: Vec<_> = reaches(module)
        .into_iter()
        .filter(|(_, name)| !allowed.contains(&name.as_str()))
        .collect();
    assert!(bad.is_empty(), "`{module}` reaches {bad:?}");
}

#[test]
fn config_is_a_leaf() {
    assert_reaches_only("config", &[]);
}

#[test]
fn policy_reads_settings_and_does_no_io() {
    assert_reaches_only("policy", &["config"]);
}

#[test]
fn the_lifecycle_never_reaches_back_into_the_scan() {
    let bad: Vec<_> = reaches("lifecycle")
        .into_iter()
        .filter(|(_, name)| ["scan", "report", "functions", "host", "sim"].contains(&name.as_str()))
        .collect();
    assert!(bad.is_empty(), "`lifecycle` reaches {bad:?}");
}

#[test]
fn report_writers_take_plain_rows_and_counts() {
    assert_reaches_only("report", &["policy", "config"]);
}

#[test]
fn production_code_never_imports_the_simulator() {
    for module in [
        "host",
        "functions",
        "lifecycle",
        "graph",
        "store",
        "scan",
        "gdpr",
        "policy",
        "report",
    ] {
        let bad: Vec<_> = reaches(module)
            .into_iter()
            .filter(|(_, name)| name == "sim")
            .collect();
        assert!(bad.is_empty(), "`{module}` imports the simulator: {bad:?}");
    }
}
