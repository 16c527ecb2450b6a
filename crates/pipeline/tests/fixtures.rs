//! Fixture tests: every `fixtures/good/*.yml` compiles to the plan in the `.json` beside it,
//! every `fixtures/bad/*.yml` fails with exactly the diagnostics in the `.expected` beside it.
//!
//! The comparison is exact on purpose: diagnostics are an interface people read, and a change
//! to their wording should be a visible diff. Run with `QUORUM_BLESS=1` to rewrite the expected
//! files after a deliberate change, then review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use quorum_pipeline::{PIPELINE_PATH, Plan, parse};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn bless() -> bool {
    std::env::var_os("QUORUM_BLESS").is_some()
}

fn check(expected_path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        fs::write(expected_path, actual).expect("write expected file");
        return;
    }
    let expected = fs::read_to_string(expected_path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
            expected_path.display()
        ));
    }
}

#[test]
fn good_pipelines_compile_to_their_plans() {
    let mut failures = Vec::new();
    for yml in fixtures("good") {
        let text = fs::read_to_string(&yml).expect("read fixture");
        let plan = match parse(PIPELINE_PATH, &text) {
            Ok(plan) => plan,
            Err(e) => {
                failures.push(format!("{}: unexpected errors:\n{e}", yml.display()));
                continue;
            }
        };
        let json = serde_json::to_string_pretty(&plan).expect("serialise") + "\n";
        // The JSON is the plan: it reads back to the same value and the same hash.
        let back: Plan = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, plan, "{}", yml.display());
        assert_eq!(back.plan_hash(), plan.plan_hash(), "{}", yml.display());
        check(&yml.with_extension("json"), &json, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn bad_pipelines_fail_with_their_diagnostics() {
    let mut failures = Vec::new();
    for yml in fixtures("bad") {
        let text = fs::read_to_string(&yml).expect("read fixture");
        let actual = match parse(PIPELINE_PATH, &text) {
            Ok(_) => {
                failures.push(format!("{}: compiled, but should not", yml.display()));
                continue;
            }
            Err(e) => e.to_string() + "\n",
        };
        check(&yml.with_extension("expected"), &actual, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
