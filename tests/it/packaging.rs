//! `scripts/package.sh` builds the archive the Functions host expects.

use std::collections::BTreeMap;
use std::process::Command;

use crate::harness::repo_root;

#[test]
fn the_package_has_host_json_function_folders_and_an_executable_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("dormant.zip");
    let status = Command::new(repo_root().join("scripts/package.sh"))
        .arg(&out)
        .env("DORMANT_PACKAGE_BINARY", env!("CARGO_BIN_EXE_dormant"))
        .status()
        .expect("run package.sh");
    assert!(status.success());

    let file = std::fs::File::open(&out).expect("zip written");
    let mut zip = zip::ZipArchive::new(file).expect("a zip archive");
    let mut entries = BTreeMap::new();
    for i in 0..zip.len() {
        let entry = zip.by_index(i).expect("entry");
        entries.insert(entry.name().to_owned(), entry.unix_mode());
    }
    assert!(entries.contains_key("host.json"), "{entries:?}");
    let mode = entries
        .get("dormant")
        .copied()
        .flatten()
        .expect("binary with a unix mode");
    assert_eq!(mode & 0o111, 0o111, "the binary keeps its run bit");

    // Every function folder sits beside host.json, nothing else is inside.
    for entry in std::fs::read_dir(repo_root().join("functions")).expect("functions/") {
        let entry = entry.expect("entry");
        if entry.path().join("function.json").is_file() {
            let name = format!("{}/function.json", entry.file_name().to_string_lossy());
            assert!(
                entries.contains_key(&name),
                "{name} missing from {entries:?}"
            );
        }
    }
    for name in entries.keys() {
        assert!(
            name == "host.json" || name == "dormant" || name.ends_with("/function.json"),
            "unexpected {name}"
        );
    }
    let mut binary = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("dormant").expect("binary"), &mut binary)
        .expect("read binary");
    assert_eq!(&binary[..4], b"\x7fELF", "a Linux executable");
}
