//! Properties of compiled plans: determinism and hashing, triggers, the router's helpers,
//! diagnostics as errors, and robustness on hostile input.

use std::collections::HashSet;

use quorum_pipeline::{
    Diagnostics, JobSpec, MAX_FILE_BYTES, MAX_JOBS, Mode, PIPELINE_PATH, Plan, TriggerEvent, parse,
};

const FULL: &str = include_str!("fixtures/good/full.yml");
const FULL_REORDERED: &str = include_str!("fixtures/good/full_reordered.yml");

fn plan(text: &str) -> Plan {
    parse(PIPELINE_PATH, text).unwrap_or_else(|e| panic!("{e}"))
}

fn ids<'a>(jobs: impl IntoIterator<Item = &'a quorum_pipeline::PlannedJob>) -> Vec<&'a str> {
    jobs.into_iter().map(|j| j.id.as_str()).collect()
}

#[test]
fn the_full_example_compiles() {
    let p = plan(FULL);
    assert_eq!(ids(&p.jobs), ["test", "build", "scan", "approve"]);
    let build = p.job("build").expect("build");
    assert_eq!(
        build.mode,
        Mode::Quorum {
            replicas: 3,
            threshold: 2
        }
    );
    assert!(build.release);
    let Some(JobSpec::Dvm { kind, inputs, .. }) = p.job("scan").map(|j| &j.spec) else {
        panic!("scan is a DVM job");
    };
    assert_eq!(*kind, 5500);
    assert_eq!(
        inputs[0].value,
        "${{ jobs.build.artifacts['out/app'].url }}"
    );
    let Some(JobSpec::Approval {
        required,
        from,
        show,
    }) = p.job("approve").map(|j| &j.spec)
    else {
        panic!("approve is an approval job");
    };
    assert_eq!((*required, from.len()), (2, 3));
    assert_eq!(show, &["build", "scan"]);
}

#[test]
fn the_documented_example_is_the_full_fixture() {
    // The schema in the crate docs is what users copy: it must compile, to the same plan as
    // the fixture.
    let lib = include_str!("../src/lib.rs");
    let start = lib
        .find("//! ```yaml\n")
        .expect("a yaml example in the docs")
        + 12;
    let end = start + lib[start..].find("//! ```\n").expect("end of the example");
    let example: String = lib[start..end]
        .lines()
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(plan(&example), plan(FULL));
}

#[test]
fn same_meaning_same_plan_and_hash() {
    let a = plan(FULL);
    let b = plan(FULL_REORDERED);
    assert_eq!(a, b);
    assert_eq!(a.plan_hash(), b.plan_hash());
    assert_eq!(a.plan_hash(), plan(FULL).plan_hash());
    assert_eq!(a.canonical_json(), b.canonical_json());
}

#[test]
fn the_hash_is_pinned() {
    // Runs are deduplicated on (repository, commit, plan hash): a change in the plan's JSON
    // shape changes every hash, so it has to be deliberate. Update this value when it is.
    assert_eq!(
        plan(FULL).plan_hash(),
        "b8e5eec3dcfcd685866438a5a13dfde290a22c4aac51a15fc723664a16498610"
    );
}

#[test]
fn a_different_meaning_changes_the_hash() {
    let base = plan(FULL).plan_hash();
    for (from, to) in [
        ("cargo test --locked", "cargo test --locked --all"),
        ("threshold: 2", "threshold: 3"),
        ("network: false", "network: true"),
        ("kind: 5500", "kind: 5501"),
        ("required: 2", "required: 1"),
        ("engine: clamav", "engine: yara"),
    ] {
        assert!(FULL.contains(from), "{from}");
        let changed = plan(&FULL.replacen(from, to, 1)).plan_hash();
        assert_ne!(changed, base, "{from} → {to}");
    }
}

#[test]
fn triggers_match_refs() {
    let push = |r: &str| TriggerEvent::Push {
        ref_name: r.to_owned(),
    };
    let full = plan(FULL);
    assert!(full.triggered_by(&push("refs/heads/main")));
    assert!(full.triggered_by(&push("refs/heads/release/1.2/hotfix")));
    assert!(!full.triggered_by(&push("refs/heads/mainline")));
    assert!(!full.triggered_by(&push("refs/heads/feature/x")));
    assert!(full.triggered_by(&push("refs/tags/v1.0.0")));
    assert!(!full.triggered_by(&push("refs/tags/1.0.0")));
    assert!(full.triggered_by(&TriggerEvent::Manual));

    let on_push = plan("on: push\njobs:\n  a:\n    run: make\n");
    assert!(on_push.triggered_by(&push("refs/heads/anything")));
    assert!(on_push.triggered_by(&push("refs/tags/anything")));
    assert!(!on_push.triggered_by(&TriggerEvent::Manual));

    let manual_only = plan("on: { manual: }\njobs:\n  a:\n    run: make\n");
    assert!(!manual_only.triggered_by(&push("refs/heads/main")));
    assert!(manual_only.triggered_by(&TriggerEvent::Manual));

    let tags_only = plan("on:\n  push:\n    tags: [v*]\njobs:\n  a:\n    run: make\n");
    assert!(!tags_only.triggered_by(&push("refs/heads/main")));
    assert!(tags_only.triggered_by(&push("refs/tags/v2")));
}

#[test]
fn ready_and_dependants_drive_the_router() {
    let p = plan(FULL);
    let mut done = HashSet::new();
    assert_eq!(ids(p.ready(&done)), ["test"]);
    done.insert("test");
    assert_eq!(ids(p.ready(&done)), ["build"]);
    done.insert("build");
    assert_eq!(ids(p.ready(&done)), ["scan"]);
    done.insert("scan");
    assert_eq!(ids(p.ready(&done)), ["approve"]);
    done.insert("approve");
    assert!(p.ready(&done).is_empty());

    assert_eq!(ids(p.dependants("test")), ["build", "scan", "approve"]);
    assert_eq!(ids(p.dependants("build")), ["scan", "approve"]);
    assert_eq!(ids(p.dependants("scan")), ["approve"]);
    assert!(p.dependants("approve").is_empty());
}

#[test]
fn topological_order_ignores_file_order() {
    let a = plan(
        "on: push\njobs:\n  z:\n    run: z\n  y:\n    needs: z\n    run: y\n  a:\n    run: a\n",
    );
    assert_eq!(ids(&a.jobs), ["a", "z", "y"]);
    let b = plan(
        "on: push\njobs:\n  a:\n    run: a\n  y:\n    needs: z\n    run: y\n  z:\n    run: z\n",
    );
    assert_eq!(a, b);
}

#[test]
fn every_error_is_reported_and_it_is_an_error() {
    let text = "on: push\njobs:\n  a:\n    needs: b\n    run: x\n  c:\n    timeout: soon\n    run: y\n    colour: red\n";
    let err = parse("p.yml", text).expect_err("broken");
    assert_eq!(err.len(), 3, "{err}");
    let as_error: &dyn std::error::Error = &err;
    assert!(
        as_error
            .to_string()
            .starts_with("p.yml:4:12: error: job \"a\" needs unknown job \"b\"")
    );
    let lines: Vec<(usize, usize)> = err.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(lines, [(4, 12), (7, 14), (9, 5)]);
    // Diagnostics serialise too, for the web dashboard.
    let json = serde_json::to_string(&err.diagnostics).expect("json");
    assert!(json.contains("\"severity\":\"error\""));
}

#[test]
fn oversized_and_deeply_nested_files_are_refused() {
    let big = format!(
        "on: push\n# {}\njobs:\n  a:\n    run: x\n",
        "x".repeat(MAX_FILE_BYTES)
    );
    let err: Diagnostics = parse("p.yml", &big).expect_err("too big");
    assert!(err.to_string().contains("too large"), "{err}");

    let deep = format!("on: push\njobs:\n  {}x\n", "- ".repeat(10_000));
    let err = parse("p.yml", &deep).expect_err("too deep");
    assert!(err.to_string().contains("nested more than"), "{err}");
    // Flow nesting is stopped even earlier, by the YAML scanner's own limit.
    let flow = format!(
        "on: push\njobs: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let err = parse("p.yml", &flow).expect_err("too deep");
    assert!(err.to_string().starts_with("p.yml:2:"), "{err}");
}

#[test]
fn job_count_is_capped() {
    let mut text = String::from("on: push\njobs:\n");
    for i in 0..=MAX_JOBS {
        text.push_str(&format!("  j{i}:\n    run: x\n"));
    }
    let err = parse("p.yml", &text).expect_err("too many");
    assert_eq!(err.len(), 1, "{err}");
    assert!(
        err.to_string()
            .contains("too many jobs (257; the limit is 256)"),
        "{err}"
    );

    // A chain of MAX_JOBS jobs, each using its predecessor's artifact, is fine (and quick).
    let mut chain = String::from("on: push\njobs:\n");
    for i in 0..MAX_JOBS {
        chain.push_str(&format!("  j{i}:\n    run: x\n    artifacts: [a]\n"));
        if i > 0 {
            chain.push_str(&format!(
                "    needs: j{}\n    env: {{ A: \"${{{{ jobs.j0.artifacts['a'].url }}}}\" }}\n",
                i - 1
            ));
        }
    }
    let plan = parse("p.yml", &chain).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.jobs.len(), MAX_JOBS);
    assert_eq!(plan.dependants("j0").len(), MAX_JOBS - 1);
}

#[test]
fn mangled_files_never_panic() {
    // Every one-character deletion, and a few insertions, of the full example: the parser may
    // accept or refuse each, but must answer.
    let chars: Vec<char> = FULL.chars().collect();
    for i in 0..chars.len() {
        let mut deleted = chars.clone();
        deleted.remove(i);
        let text: String = deleted.into_iter().collect();
        let _ = parse("p.yml", &text);
        for insert in ['\t', '[', '{', '&', '*', '!', '"', ':', '-', '\n'] {
            if i % 7 != 0 {
                continue;
            }
            let mut inserted = chars.clone();
            inserted.insert(i, insert);
            let text: String = inserted.into_iter().collect();
            let _ = parse("p.yml", &text);
        }
    }
}

#[test]
fn deep_block_nesting_does_not_overflow() {
    let dashes = format!("on: push\njobs: {}x\n", "- ".repeat(100_000));
    let _ = parse("p.yml", &dashes);
    let mut indented = String::from("on: push\njobs:\n");
    for depth in 0..700 {
        indented.push_str(&" ".repeat(depth + 1));
        indented.push_str(&format!("k{depth}:\n"));
    }
    let _ = parse("p.yml", &indented);
}

#[test]
fn a_mandate_allows_what_the_quorum_jobs_it_covers_sign() {
    let release = quorum_pipeline::parse(
        "p.yml",
        "on: push\njobs:\n  test:\n    run: make test\n  build:\n    needs: test\n    run: make\n    artifacts: [app]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n",
    )
    .unwrap();
    assert_eq!(
        release
            .quorum_signing_kinds(&[])
            .into_iter()
            .collect::<Vec<_>>(),
        vec![8700, 8708]
    );
    let chain = quorum_pipeline::parse(
        "p.yml",
        "on: push\njobs:\n  build:\n    run: make\n    artifacts: [app]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n  package:\n    needs: build\n    run: make dist\n    artifacts: [dist]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n",
    )
    .unwrap();
    assert_eq!(
        chain
            .quorum_signing_kinds(&[])
            .into_iter()
            .collect::<Vec<_>>(),
        vec![5702, 8708],
        "a quorum chain's quorum signs the next step's request"
    );
    assert_eq!(
        chain
            .quorum_signing_kinds(&["build".to_string()])
            .into_iter()
            .collect::<Vec<_>>(),
        vec![8708],
        "a mandate for the first job alone hands nothing on"
    );
    let plain =
        quorum_pipeline::parse("p.yml", "on: push\njobs:\n  build:\n    run: make\n").unwrap();
    assert!(plain.quorum_signing_kinds(&[]).is_empty());
}
