//! Every policy shipped in policies/ parses, validates and compiles.
use std::path::Path;

use vardr::{compile, policy};

fn shipped() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("examples")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn shipped_policies_are_valid() {
    let files = shipped();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let p = policy::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.rules.is_empty(), "{}", f.display());
        compile::compile(&p, 1, &compile::Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn validate_command_reports_positions() {
    let dir = std::env::temp_dir().join(format!("vardr-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: vardr.dev/v1\nkind: Policy\nmetadata: {name: x}\nspec:\n  rules:\n    - name: r\n      hook: exec\n      action: deny\n      match: {binaries: [nc]}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vardr"))
        .args(["policy", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.yaml:9:"), "{err}");
    assert!(err.contains("must be absolute"), "{err}");
}
