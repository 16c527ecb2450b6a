//! `image:`: pinned build images in the plan, its hash, the requests members check, and the
//! lint of unpinned ones (error in quorum mode, warning elsewhere).

use std::time::Duration;

use quorum_pipeline::dispatch::{Dispatch, PARAM_JOB, check_request, dispatch};
use quorum_pipeline::{JobSpec, PIPELINE_PATH, Plan, Severity, parse, parse_with_warnings};

const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn pipeline(default: Option<&str>, own: Option<&str>, quorum: bool) -> String {
    let mut text = String::from("on: push\n");
    if let Some(d) = default {
        text.push_str(&format!("image: {d}\n"));
    }
    text.push_str("jobs:\n  build:\n    run: make\n    artifacts: [out]\n");
    if let Some(i) = own {
        text.push_str(&format!("    image: {i}\n"));
    }
    if quorum {
        text.push_str("    mode: quorum\n    replicas: 3\n    threshold: 2\n");
    }
    text
}

fn image_of(plan: &Plan) -> Option<String> {
    match &plan.job("build").expect("build").spec {
        JobSpec::Run { image, .. } => image.clone(),
        _ => panic!("build is a script job"),
    }
}

#[test]
fn the_digest_is_in_the_plan_and_its_hash() {
    let a = parse(
        PIPELINE_PATH,
        &pipeline(None, Some(&format!("debian@{A}")), true),
    )
    .unwrap();
    let b = parse(
        PIPELINE_PATH,
        &pipeline(None, Some(&format!("debian@{B}")), true),
    )
    .unwrap();
    let none = parse(PIPELINE_PATH, &pipeline(None, None, true)).unwrap();
    assert_eq!(image_of(&a), Some(format!("docker.io/library/debian@{A}")));
    assert_ne!(
        a.plan_hash(),
        b.plan_hash(),
        "another image is another plan"
    );
    assert_ne!(a.plan_hash(), none.plan_hash());
    assert!(
        !none.canonical_json().contains("image"),
        "plans without images hash as they always did"
    );
    // A spelling of the same reference is the same plan.
    let long = parse(
        PIPELINE_PATH,
        &pipeline(None, Some(&format!("docker.io/library/debian@{A}")), true),
    )
    .unwrap();
    assert_eq!(a.plan_hash(), long.plan_hash());
}

#[test]
fn the_pipeline_default_applies_unless_a_job_names_its_own() {
    let inherited = parse(
        PIPELINE_PATH,
        &pipeline(Some(&format!("127.0.0.1:3000/cc@{A}")), None, true),
    )
    .unwrap();
    assert_eq!(image_of(&inherited), Some(format!("127.0.0.1:3000/cc@{A}")));
    let own = parse(
        PIPELINE_PATH,
        &pipeline(
            Some(&format!("cc@{A}")),
            Some(&format!("127.0.0.1:3000/cc@{B}")),
            true,
        ),
    )
    .unwrap();
    assert_eq!(image_of(&own), Some(format!("127.0.0.1:3000/cc@{B}")));
}

#[test]
fn a_tag_is_an_error_in_quorum_mode_and_a_warning_elsewhere() {
    let err = parse(
        PIPELINE_PATH,
        &pipeline(Some("debian:bookworm"), None, true),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(".quorum/pipeline.yml:2:8: error:"),
        "{text}"
    );
    assert!(
        text.contains("default image") && text.contains("hint: pin it by digest"),
        "{text}"
    );

    let (plan, warnings) = parse_with_warnings(
        PIPELINE_PATH,
        &pipeline(None, Some("debian:bookworm"), false),
    )
    .unwrap();
    assert_eq!(
        image_of(&plan).as_deref(),
        Some("docker.io/library/debian:bookworm")
    );
    assert_eq!(warnings.len(), 1);
    let w = &warnings.diagnostics[0];
    assert_eq!((w.severity, w.line, w.column), (Severity::Warning, 6, 12));

    let bad = parse(
        PIPELINE_PATH,
        &pipeline(None, Some("Debian@sha256:12"), false),
    )
    .unwrap_err();
    assert!(
        bad.to_string().contains("6:12: error: invalid image"),
        "{bad}"
    );
}

#[test]
fn members_refuse_a_request_for_another_image() {
    let plan = parse(
        PIPELINE_PATH,
        &pipeline(None, Some(&format!("debian@{A}")), true),
    )
    .unwrap();
    let build = plan.job("build").unwrap();
    let repo = "https://git.example/app.git";
    let Dispatch::Step(step) =
        dispatch(build, repo, COMMIT, Duration::from_secs(60), |_| None).unwrap()
    else {
        panic!("a step");
    };
    assert_eq!(step.image.as_ref().unwrap().digest().to_string(), A);
    let request = step.to_request().param(PARAM_JOB, "build");
    assert!(check_request(build, repo, COMMIT, &request).is_ok());

    let mut other = step.clone();
    other.image = Some(quorum_proto::image::ImageRef::parse(&format!("debian@{B}")).unwrap());
    let request = other.to_request().param(PARAM_JOB, "build");
    let err = check_request(build, repo, COMMIT, &request)
        .unwrap_err()
        .to_string();
    assert!(err.contains("it builds in") && err.contains(B), "{err}");

    let mut host = step;
    host.image = None;
    let request = host.to_request().param(PARAM_JOB, "build");
    let err = check_request(build, repo, COMMIT, &request)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the runner's own toolchain"), "{err}");
}
