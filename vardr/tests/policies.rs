//! Every policy shipped in policies/ parses, validates and compiles.
use std::path::Path;

use vardr::compile;

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
    let mut cedar = 0;
    for f in files {
        let b = compile::bundle::load(&f, &[], 1, &compile::Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!b.policy.rules.is_empty(), "{}", f.display());
        cedar += b.cedar.len();
    }
    assert!(cedar >= 4, "the shipped Cedar example is loaded");
}

#[test]
fn validate_command_checks_cedar_against_the_schema() {
    let dir = std::env::temp_dir().join(format!("vardr-validate-cedar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.cedar");
    std::fs::write(
        &bad,
        "forbid (principal, action == Vardr::Action::\"exec\", resource)\nwhen { principal.binray == \"/bin/sh\" };\n",
    )
    .unwrap();
    let good = dir.join("good.cedar");
    std::fs::write(
        &good,
        "@id(\"nc\") forbid (principal, action == Vardr::Action::\"exec\", resource == Vardr::Binary::\"/usr/bin/nc\");\n",
    )
    .unwrap();
    let run = |f: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vardr"))
            .args(["policy", "validate"])
            .arg(f)
            .output()
            .unwrap()
    };
    let (b, g) = (run(&bad), run(&good));
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success());
    assert!(err.contains("bad.cedar:2:8:"), "{err}");
    assert!(err.contains("binray"), "{err}");
    let out = String::from_utf8_lossy(&g.stdout);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    assert!(out.contains("enforced in the kernel: nc"), "{out}");
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

/// The shipped default starts without a warning on a stock machine: a
/// governed binary that is not installed is not a problem (the agent
/// matches it by path and watches for it).
#[test]
fn default_policy_loads_without_warnings() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
    let b = compile::bundle::load(&f, &[], 1, &compile::Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(b.rules.warnings.is_empty(), "{:?}", b.rules.warnings);
    assert!(b.cedar.warnings.is_empty(), "{:?}", b.cedar.warnings);
    for absent in &b.rules.absent_binaries {
        assert!(!Path::new(absent).exists(), "{absent}");
    }
}
