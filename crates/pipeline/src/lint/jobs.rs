//! The checks of one job: its sort (script, DVM call or approval gate), its keys, its mode.

use std::collections::{BTreeMap, HashMap};

use quorum_proto::kinds::{JOB_REQUEST_RANGE, JobKind, OUR_BLOCK};
use quorum_proto::step::{ArtifactSpec, OCI_ARTIFACT_PREFIX};

use super::{Fields, Linter, RawJob, is_env_name, is_hex_id};
use crate::diag::{Pos, did_you_mean};
use crate::expr::{self, Reference};
use crate::plan::{DvmInput, InputType, JobSpec, Mode};
use crate::yaml::{Node, Scalar};

pub(super) const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "run",
    "steps",
    "uses",
    "kind",
    "inputs",
    "params",
    "provider",
    "env",
    "secrets",
    "artifacts",
    "network",
    "image",
    "timeout",
    "mode",
    "replicas",
    "threshold",
    "approval",
    "release",
    "select",
];
/// The most jobs a pipeline may have.
pub const MAX_JOBS: usize = 256;
pub(super) const STEP_KEYS: &[&str] = &["name", "run"];
pub(super) const DVM_INPUT_KEYS: &[&str] = &["type", "value", "marker"];
pub(super) const APPROVAL_KEYS: &[&str] = &["required", "from", "show"];
/// The keys of an artifact written as a mapping (`{ oci: out/image }`).
pub(super) const OCI_ARTIFACT_KEYS: &[&str] = &["oci"];
pub(super) const MODES: &[&str] = &["naive", "router", "quorum"];

/// What sort of job a job is, decided by which of `run`/`steps`, `uses`, `approval` it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Run,
    Dvm,
    Approval,
}

/// Keys that only some shapes take, and a phrase for where they belong.
fn only_for(key: &str) -> Option<(&'static [Shape], &'static str)> {
    const RUN: &[Shape] = &[Shape::Run];
    const DVM: &[Shape] = &[Shape::Dvm];
    const WORK: &[Shape] = &[Shape::Run, Shape::Dvm];
    match key {
        "env" | "secrets" | "artifacts" | "network" | "image" | "release" => {
            Some((RUN, "jobs with `run` or `steps`"))
        }
        "kind" | "inputs" | "params" | "provider" => Some((DVM, "`uses: dvm` jobs")),
        "timeout" | "select" => Some((WORK, "jobs with `run`, `steps` or `uses`")),
        _ => None,
    }
}

fn shape_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Run => "a job with `run` or `steps`",
        Shape::Dvm => "a `uses: dvm` job",
        Shape::Approval => "an approval job",
    }
}

impl Linter {
    pub(super) fn jobs(&mut self, node: &Node) -> Vec<RawJob> {
        let Some(entries) = self.mapping(node, "`jobs`", true) else {
            return Vec::new();
        };
        if entries.is_empty() {
            self.error(
                node.pos(),
                "`jobs` is empty",
                Some("add at least one job".into()),
            );
        }
        if entries.len() > MAX_JOBS {
            // The graph checks are quadratic in the number of jobs; no real pipeline comes
            // near this, and a hostile file should not cost a daemon seconds.
            self.error(
                node.pos(),
                format!("too many jobs ({}; the limit is {MAX_JOBS})", entries.len()),
                Some("split the work into fewer, larger jobs".into()),
            );
            return Vec::new();
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut jobs = Vec::new();
        for (key, value) in entries {
            if let Some(line) = seen.insert(&key.value, key.pos.line) {
                self.error(
                    key.pos,
                    format!("duplicate job \"{}\"", key.value),
                    Some(format!("it is first defined on line {line}; rename one")),
                );
                continue;
            }
            if !expr::is_identifier(&key.value) {
                self.error(
                    key.pos,
                    format!("invalid job id \"{}\"", key.value),
                    Some(
                        "job ids are letters, digits, `_` and `-`, starting with a letter or `_`"
                            .into(),
                    ),
                );
            }
            jobs.push(self.job(key, value));
        }
        jobs
    }

    fn job(&mut self, key: &Scalar, node: &Node) -> RawJob {
        let id = key.value.clone();
        let mut job = RawJob {
            id: id.clone(),
            id_pos: key.pos,
            name: None,
            needs: Vec::new(),
            needs_pos: key.pos,
            spec: None,
            mode: Mode::Router,
            release: false,
            artifacts: None,
            refs: Vec::new(),
            show: Vec::new(),
            select: None,
        };
        let Some(entries) = self.mapping(node, &format!("job \"{id}\""), true) else {
            return job;
        };
        let context = format!("in job \"{id}\"");
        let f = self.fields(entries, JOB_KEYS, &context);

        job.name = f.get("name").and_then(|n| self.string(n, "`name`"));
        if let Some(node) = f.get("needs") {
            job.needs_pos = f.key_pos("needs").unwrap_or(key.pos);
            job.needs = self.strings(node, "`needs`", true).unwrap_or_default();
            self.no_repeats(&job.needs, &format!("the needs of job \"{id}\""));
        }
        let mode = self.mode(&f, &id);

        // Which sort of job is it? Exactly one of run/steps, uses, approval.
        let has = |k: &str| f.has(k);
        let at = |k: &str| f.key_pos(k).unwrap_or(key.pos);
        let mut shape = None;
        let mut clash = false;
        if has("run") && has("steps") {
            self.error(
                at("steps"),
                format!("job \"{id}\" has both `run` and `steps`"),
                Some("use one: `steps` are run in order as one script".into()),
            );
            clash = true;
        }
        if (has("run") || has("steps")) && has("uses") {
            self.error(
                at("uses"),
                format!("job \"{id}\" has both `run` and `uses`"),
                Some("a job either runs a script or calls a DVM; split it into two jobs".into()),
            );
            clash = true;
        }
        if has("approval") && (has("run") || has("steps") || has("uses")) {
            self.error(
                at("approval"),
                format!("approval job \"{id}\" also runs something"),
                Some("an approval gate runs nothing; move the work into its own job".into()),
            );
            clash = true;
        }
        if has("approval") {
            shape = Some(Shape::Approval);
        } else if has("uses") {
            shape = Some(Shape::Dvm);
        } else if has("run") || has("steps") {
            shape = Some(Shape::Run);
        } else {
            self.error(
                key.pos,
                format!("job \"{id}\" has nothing to do"),
                Some("give it `run`, `steps`, `uses: dvm` or `approval`".into()),
            );
        }
        let Some(shape) = shape else {
            return job;
        };
        if !clash {
            for (name, (k, _)) in &f.found {
                if let Some((shapes, place)) = only_for(name)
                    && !shapes.contains(&shape)
                {
                    self.error(
                        k.pos,
                        format!("`{name}` does not apply to {}", shape_name(shape)),
                        Some(format!("`{name}` is for {place}")),
                    );
                }
            }
        }
        let timeout = f.get("timeout").and_then(|n| self.timeout(n, "`timeout`"));
        if let Some(node) = f.get("select") {
            job.select = self
                .select(node, &format!("in job \"{id}\""))
                .map(|policy| (policy, at("select")));
        }
        let mut spec = match shape {
            Shape::Run => self.run_job(&f, &mut job, timeout),
            Shape::Dvm => self.dvm_job(&f, &mut job, timeout),
            Shape::Approval => self.approval_job(&f, &mut job),
        };
        if let Some(release) = f.get("release").and_then(|n| self.boolean(n, "`release`")) {
            job.release = release;
            let no_artifacts = job.artifacts.as_ref().is_some_and(|a| a.is_empty());
            if release && shape == Shape::Run && no_artifacts {
                self.error(
                    at("release"),
                    format!("job \"{id}\" is a release but has no artifacts"),
                    Some("list the files to release under `artifacts`".into()),
                );
            }
        }
        if matches!(mode, Some(Mode::Quorum { .. })) && shape == Shape::Dvm && has("provider") {
            self.error(
                at("provider"),
                format!("quorum job \"{id}\" names one `provider`"),
                Some(
                    "a quorum's members are wrapper DVMs that each forward to a different \
                     ordinary DVM, named by the mandate (`inner` tags); remove `provider`"
                        .into(),
                ),
            );
        }
        if shape == Shape::Run
            && let Some(m) = mode
        {
            let own = match f.get("image") {
                Some(node) => self
                    .scalar(node, "`image`", "an image reference")
                    .cloned()
                    .map(|s| (s, true)),
                None => self.default_image.clone().map(|s| (s, false)),
            };
            if let Some((scalar, own)) = own {
                let image = self.image(&scalar, &id, own, matches!(m, Mode::Quorum { .. }));
                match (&mut spec, image) {
                    (Some(JobSpec::Run { image: slot, .. }), Some(image)) => *slot = Some(image),
                    (_, None) => spec = None,
                    _ => {}
                }
            }
        }
        job.mode = mode.unwrap_or_default();
        job.spec = if clash || mode.is_none() { None } else { spec };
        job
    }

    /// A build image reference, canonically spelled. Without a digest: an error in a quorum
    /// job (members could build in different images), a warning elsewhere. `own`: the job's
    /// own `image:` rather than the pipeline's default.
    fn image(&mut self, s: &Scalar, id: &str, own: bool, quorum: bool) -> Option<String> {
        use quorum_proto::image::ImageRef;
        let image = match ImageRef::parse_unpinned(&s.value) {
            Ok(image) => image,
            Err(e) => {
                self.error(
                    s.pos,
                    format!("invalid image \"{}\": {e}", s.value),
                    Some("write NAME@sha256:<64 hex>, NAME being [HOST[:PORT]/]path".into()),
                );
                return None;
            }
        };
        if image.digest.is_none() {
            let whose = if own {
                format!("job \"{id}\"")
            } else {
                format!("the pipeline's default image, used by job \"{id}\",")
            };
            let hint = Some(format!(
                "pin it by digest: `{}@sha256:…`; `skopeo inspect --format '{{{{.Digest}}}}' \
                 docker://{}` prints the digest, `quorum image push` prints a whole reference",
                s.value, s.value
            ));
            if quorum {
                self.error(
                    s.pos,
                    format!("{whose} is a quorum job, and its image \"{}\" has no digest: members could build in different images", s.value),
                    hint,
                );
                return None;
            }
            self.sink.warning(
                s.pos,
                format!("{whose} names image \"{}\" by tag: the tag can move, so this build is not reproducible", s.value),
                hint,
            );
        }
        Some(image.to_string())
    }

    fn mode(&mut self, f: &Fields<'_>, id: &str) -> Option<Mode> {
        let mode = match f.get("mode") {
            None => "router".to_owned(),
            Some(node) => {
                let s = self.scalar(node, "`mode`", "naive, router or quorum")?;
                if !MODES.contains(&s.value.as_str()) {
                    let hint = did_you_mean(&s.value, MODES.iter().copied(), || {
                        Some("modes are `naive`, `router` and `quorum`".into())
                    });
                    self.error(s.pos, format!("unknown mode \"{}\"", s.value), hint);
                    return None;
                }
                s.value.clone()
            }
        };
        let replicas = f.get("replicas").and_then(|n| self.number(n, "`replicas`"));
        let threshold = f
            .get("threshold")
            .and_then(|n| self.number(n, "`threshold`"));
        if mode != "quorum" {
            let mut ok = true;
            for key in ["replicas", "threshold"] {
                if let Some(pos) = f.key_pos(key) {
                    self.error(
                        pos,
                        format!("`{key}` only applies to `mode: quorum`"),
                        Some(format!("set `mode: quorum` or remove `{key}`")),
                    );
                    ok = false;
                }
            }
            return match mode.as_str() {
                _ if !ok => None,
                "naive" => Some(Mode::Naive),
                _ => Some(Mode::Router),
            };
        }
        let mode_pos = f.key_pos("mode").unwrap_or_default();
        let (Some(replicas), Some(threshold)) = (replicas, threshold) else {
            if !(f.has("replicas") && f.has("threshold")) {
                self.error(
                    mode_pos,
                    format!("job \"{id}\" is in quorum mode but does not say how many replicas and how many must agree"),
                    Some("add `replicas: n` and `threshold: t` (t of n identical results)".into()),
                );
            }
            return None;
        };
        let mut ok = true;
        if replicas < 2 {
            self.error(
                f.key_pos("replicas").unwrap_or(mode_pos),
                format!("a quorum needs at least 2 replicas, found {replicas}"),
                Some("use `mode: router` for a single runner".into()),
            );
            ok = false;
        }
        if threshold < 1 {
            self.error(
                f.key_pos("threshold").unwrap_or(mode_pos),
                "`threshold` must be at least 1",
                None,
            );
            ok = false;
        } else if threshold > replicas {
            self.error(
                f.key_pos("threshold").unwrap_or(mode_pos),
                format!("`threshold` {threshold} is more than the {replicas} replicas"),
                Some("t of n results must agree, so t cannot exceed n".into()),
            );
            ok = false;
        }
        ok.then_some(Mode::Quorum {
            replicas,
            threshold,
        })
    }

    fn run_job(
        &mut self,
        f: &Fields<'_>,
        job: &mut RawJob,
        timeout: Option<u64>,
    ) -> Option<JobSpec> {
        let id = job.id.clone();
        let mut ok = true;
        let script = if let Some(node) = f.get("run") {
            let run = self.scalar(node, "`run`", "a script");
            run.and_then(|s| self.script(s, &id))
        } else if let Some(node) = f.get("steps") {
            self.steps(node, &id)
        } else {
            None
        };
        ok &= script.is_some();

        let mut env = BTreeMap::new();
        if let Some(node) = f.get("env") {
            match self.mapping(node, "`env`", true) {
                Some(entries) => {
                    let mut lines = HashMap::new();
                    for (key, value) in entries {
                        let name = &key.value;
                        if let Some(line) = lines.insert(name.as_str(), key.pos.line) {
                            self.error(
                                key.pos,
                                format!("duplicate env \"{name}\""),
                                Some(format!("it is first set on line {line}; keep one")),
                            );
                            ok = false;
                            continue;
                        }
                        if !is_env_name(name) {
                            self.error(
                                key.pos,
                                format!("invalid environment variable name \"{name}\""),
                                Some(
                                    "names are letters, digits and `_`, not starting with a digit"
                                        .into(),
                                ),
                            );
                            ok = false;
                        }
                        let text = match value {
                            Node::Scalar(s) if s.is_null() => String::new(),
                            Node::Scalar(s) => s.value.clone(),
                            n => {
                                self.error(
                                    n.pos(),
                                    format!(
                                        "env \"{name}\" must be a string, found {}",
                                        n.describe()
                                    ),
                                    None,
                                );
                                ok = false;
                                continue;
                            }
                        };
                        let text = self.expressions(&text, value.pos(), &mut job.refs);
                        env.insert(name.clone(), text);
                    }
                }
                None => ok = false,
            }
        }

        let mut secrets = Vec::new();
        if let Some(node) = f.get("secrets") {
            let list = self.strings(node, "`secrets`", false).unwrap_or_default();
            self.no_repeats(&list, &format!("the secrets of job \"{id}\""));
            for (name, pos) in &list {
                if !is_env_name(name) {
                    self.error(
                        *pos,
                        format!("secret name \"{name}\" is not an environment variable name"),
                        Some(
                            "secrets reach the job as environment variables: use letters, \
                             digits and `_`, not starting with a digit"
                                .into(),
                        ),
                    );
                    ok = false;
                } else if env.contains_key(name) {
                    self.error(
                        *pos,
                        format!("secret \"{name}\" is also set in `env`"),
                        Some("a secret and an env variable cannot share a name".into()),
                    );
                    ok = false;
                }
            }
            secrets = list.into_iter().map(|(s, _)| s).collect();
            secrets.sort();
            secrets.dedup();
        }

        let mut artifacts = Vec::new();
        if let Some(node) = f.get("artifacts") {
            let list = self.artifact_entries(node).unwrap_or_default();
            self.no_repeats(&list, &format!("the artifacts of job \"{id}\""));
            for (entry, pos) in &list {
                let path = ArtifactSpec::of(entry).path();
                if let Some(problem) = artifact_problem(path) {
                    self.error(
                        *pos,
                        format!("artifact path \"{path}\" {problem}"),
                        Some(
                            "artifact paths are relative to the repository root and stay inside it"
                                .into(),
                        ),
                    );
                    ok = false;
                }
            }
            artifacts = list.into_iter().map(|(s, _)| s).collect();
            artifacts.sort();
            artifacts.dedup();
        }
        job.artifacts = Some(artifacts.clone());

        let network = f
            .get("network")
            .and_then(|n| self.boolean(n, "`network`"))
            .unwrap_or(false);

        Some(JobSpec::Run {
            script: script?,
            env,
            secrets,
            artifacts,
            network,
            timeout_secs: timeout,
            image: None,
        })
        .filter(|_| ok)
    }

    /// A `run` script: non-empty and without expressions.
    /// The entries of `artifacts`, each canonical: a path (`out/app`), or an OCI image layout
    /// directory, written `{ oci: out/image }` and kept as `oci:out/image` (the step's form).
    fn artifact_entries(&mut self, node: &Node) -> Option<Vec<(String, Pos)>> {
        let Node::Seq(items, _) = node else {
            self.error(
                node.pos(),
                format!(
                    "`artifacts` must be a list of paths or `{{ oci: DIR }}`, found {}",
                    node.describe()
                ),
                None,
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                Node::Map(entries, pos) => {
                    let f = self.fields(entries, OCI_ARTIFACT_KEYS, "in an artifact");
                    let Some(dir) = f.get("oci") else {
                        self.error(
                            *pos,
                            "an artifact mapping needs `oci`, the OCI image layout directory"
                                .to_string(),
                            Some("write `- { oci: out/image }`, or a path".into()),
                        );
                        continue;
                    };
                    if let Some(s) = self.scalar(dir, "`oci`", "a directory path") {
                        out.push((format!("{OCI_ARTIFACT_PREFIX}{}", s.value), s.pos));
                    }
                }
                _ => {
                    if let Some(s) = self.scalar(item, "each entry of `artifacts`", "a path") {
                        out.push((s.value.clone(), s.pos));
                    }
                }
            }
        }
        Some(out)
    }

    fn script(&mut self, s: &Scalar, id: &str) -> Option<String> {
        if s.value.trim().is_empty() {
            self.error(s.pos, format!("job \"{id}\" has an empty `run`"), None);
            return None;
        }
        if s.value.contains("${{") {
            self.error(
                s.pos,
                "expressions are not expanded in `run` scripts",
                Some(
                    "pass the value through `env` (`env: { URL: \"${{ … }}\" }`) and use \"$URL\" \
                     in the script"
                        .into(),
                ),
            );
            return None;
        }
        Some(s.value.clone())
    }

    fn steps(&mut self, node: &Node, id: &str) -> Option<String> {
        let Node::Seq(items, _) = node else {
            self.error(
                node.pos(),
                format!("`steps` must be a list, found {}", node.describe()),
                Some("write each step as `- run: …`".into()),
            );
            return None;
        };
        if items.is_empty() {
            self.error(node.pos(), format!("job \"{id}\" has no steps"), None);
            return None;
        }
        let mut parts = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let context = format!("in step {} of job \"{id}\"", i + 1);
            let Some(entries) =
                self.mapping(item, &format!("step {} of job \"{id}\"", i + 1), false)
            else {
                ok = false;
                continue;
            };
            let f = self.fields(entries, STEP_KEYS, &context);
            // Step names are documentation, like comments: they are not part of the plan.
            if let Some(n) = f.get("name") {
                self.string(n, "`name`");
            }
            match f.get("run") {
                Some(run) => match self
                    .scalar(run, "`run`", "a script")
                    .and_then(|s| self.script(s, id))
                {
                    Some(script) => parts.push(script.trim_end_matches('\n').to_owned()),
                    None => ok = false,
                },
                None => {
                    self.error(
                        item.pos(),
                        format!("step {} of job \"{id}\" has no `run`", i + 1),
                        None,
                    );
                    ok = false;
                }
            }
        }
        // One script, steps in order, each starting on its own line.
        ok.then(|| parts.join("\n") + "\n")
    }

    fn dvm_job(
        &mut self,
        f: &Fields<'_>,
        job: &mut RawJob,
        timeout: Option<u64>,
    ) -> Option<JobSpec> {
        let id = job.id.clone();
        let mut ok = true;
        if let Some(s) = f
            .get("uses")
            .and_then(|n| self.scalar(n, "`uses`", "`dvm`"))
            && s.value != "dvm"
        {
            self.error(
                s.pos,
                format!("unknown `uses` value \"{}\"", s.value),
                Some("the only value is `dvm`: a request to a NIP-90 DVM".into()),
            );
            ok = false;
        }
        let kind = match f.get("kind") {
            None => {
                self.error(
                    f.key_pos("uses").unwrap_or(job.id_pos),
                    format!("job \"{id}\" calls a DVM but has no `kind`"),
                    Some("add the NIP-90 request kind, e.g. `kind: 5500`".into()),
                );
                None
            }
            Some(node) => self.number(node, "`kind`").and_then(|k| {
                let pos = node.pos();
                let kind = u16::try_from(k).ok().filter(|k| JOB_REQUEST_RANGE.contains(k));
                let Some(kind) = kind else {
                    self.error(
                        pos,
                        format!("kind {k} is not a NIP-90 job request kind"),
                        Some("job request kinds are 5000–5999".into()),
                    );
                    return None;
                };
                if OUR_BLOCK.contains(&kind) {
                    let what = JobKind::ALL
                        .into_iter()
                        .find(|j| j.request_number() == kind)
                        .map(|j| format!("Quorum CI's own {} job", j.name()))
                        .unwrap_or_else(|| "reserved for Quorum CI".into());
                    self.error(
                        pos,
                        format!("kind {kind} is {what}"),
                        Some("use `run` or `steps` for builds and tests; the router requests Quorum CI's kinds itself".into()),
                    );
                    return None;
                }
                Some(kind)
            }),
        };
        ok &= kind.is_some();

        let mut inputs = Vec::new();
        if let Some(node) = f.get("inputs") {
            match node {
                Node::Seq(items, _) => {
                    for (i, item) in items.iter().enumerate() {
                        match self.dvm_input(item, i + 1, &id, &mut job.refs) {
                            Some(input) => inputs.push(input),
                            None => ok = false,
                        }
                    }
                }
                n => {
                    self.error(
                        n.pos(),
                        format!("`inputs` must be a list, found {}", n.describe()),
                        Some("write each input as `- { type: url, value: … }`".into()),
                    );
                    ok = false;
                }
            }
        }

        let mut params = BTreeMap::new();
        if let Some(node) = f.get("params") {
            match self.mapping(node, "`params`", true) {
                Some(entries) => {
                    let mut lines = HashMap::new();
                    for (key, value) in entries {
                        if let Some(line) = lines.insert(key.value.as_str(), key.pos.line) {
                            self.error(
                                key.pos,
                                format!("duplicate param \"{}\"", key.value),
                                Some(format!("it is first set on line {line}; keep one")),
                            );
                            ok = false;
                            continue;
                        }
                        let text = match value {
                            Node::Scalar(s) if s.is_null() => String::new(),
                            Node::Scalar(s) => s.value.clone(),
                            n => {
                                self.error(
                                    n.pos(),
                                    format!(
                                        "param \"{}\" must be a string, found {}",
                                        key.value,
                                        n.describe()
                                    ),
                                    None,
                                );
                                ok = false;
                                continue;
                            }
                        };
                        let text = self.expressions(&text, value.pos(), &mut job.refs);
                        params.insert(key.value.clone(), text);
                    }
                }
                None => ok = false,
            }
        }

        let provider = match f.get("provider") {
            None => None,
            Some(node) => {
                let key = self
                    .scalar(node, "`provider`", "a public key")
                    .and_then(|s| self.public_key(&s.value, s.pos));
                ok &= key.is_some();
                key
            }
        };

        Some(JobSpec::Dvm {
            kind: kind?,
            inputs,
            params,
            provider,
            timeout_secs: timeout,
        })
        .filter(|_| ok)
    }

    fn dvm_input(
        &mut self,
        node: &Node,
        index: usize,
        id: &str,
        refs: &mut Vec<(Reference, Pos)>,
    ) -> Option<DvmInput> {
        let entries = self.mapping(node, &format!("input {index} of job \"{id}\""), false)?;
        let f = self.fields(
            entries,
            DVM_INPUT_KEYS,
            &format!("in input {index} of job \"{id}\""),
        );
        let names = InputType::ALL.map(InputType::as_str);
        let input_type = match f.get("type") {
            None => {
                self.error(
                    node.pos(),
                    format!("input {index} of job \"{id}\" has no `type`"),
                    Some("add `type: text`, `url`, `event` or `job`".into()),
                );
                None
            }
            Some(n) => self.scalar(n, "`type`", "an input type").and_then(|s| {
                let found = InputType::ALL.into_iter().find(|t| t.as_str() == s.value);
                if found.is_none() {
                    let hint = did_you_mean(&s.value, names, || {
                        Some("input types are `text`, `url`, `event` and `job`".into())
                    });
                    self.error(s.pos, format!("unknown input type \"{}\"", s.value), hint);
                }
                found
            }),
        };
        let value = match f.get("value") {
            None => {
                self.error(
                    node.pos(),
                    format!("input {index} of job \"{id}\" has no `value`"),
                    None,
                );
                None
            }
            Some(n) => self
                .scalar(n, "`value`", "a string")
                .map(|s| (s.value.clone(), s.pos)),
        };
        let marker = f.get("marker").and_then(|n| self.string(n, "`marker`"));
        let (value, pos) = value?;
        let input_type = input_type?;
        let literal = !value.contains("${{");
        let value = self.expressions(&value, pos, refs);
        if literal && matches!(input_type, InputType::Event | InputType::Job) && !is_hex_id(&value)
        {
            self.error(
                pos,
                format!(
                    "input of type `{}` must be an event id, found \"{value}\"",
                    input_type.as_str()
                ),
                Some(
                    "write 64 hex characters or an expression like ${{ jobs.<id>.result }}".into(),
                ),
            );
            return None;
        }
        Some(DvmInput {
            input_type,
            value,
            marker,
        })
    }

    fn approval_job(&mut self, f: &Fields<'_>, job: &mut RawJob) -> Option<JobSpec> {
        let id = job.id.clone();
        let node = f.get("approval")?;
        let entries = self.mapping(node, "`approval`", false)?;
        let a = self.fields(
            entries,
            APPROVAL_KEYS,
            &format!("in the approval of job \"{id}\""),
        );
        let mut ok = true;
        let required = match a.get("required") {
            None => {
                self.error(
                    f.key_pos("approval").unwrap_or(node.pos()),
                    format!("approval job \"{id}\" does not say how many approvals it needs"),
                    Some("add `required: 1` (or more)".into()),
                );
                None
            }
            Some(n) => self.number(n, "`required`").and_then(|r| {
                if r == 0 {
                    self.error(
                        n.pos(),
                        "`required` must be at least 1",
                        Some("remove the job if no approval is needed".into()),
                    );
                    None
                } else {
                    Some(r)
                }
            }),
        };
        let mut from = Vec::new();
        if let Some(n) = a.get("from") {
            let list = self.strings(n, "`from`", false).unwrap_or_default();
            for (value, pos) in &list {
                let Some(hex) = self.public_key(value, *pos) else {
                    ok = false;
                    continue;
                };
                // Compared as hex, so an npub and its hex spelling are the same approver.
                if from.contains(&hex) {
                    self.error(
                        *pos,
                        format!("approver \"{value}\" is listed twice in job \"{id}\""),
                        Some("an npub and its hex form are the same key; remove one".into()),
                    );
                    ok = false;
                } else {
                    from.push(hex);
                }
            }
            from.sort();
            from.dedup();
            if from.is_empty() && ok {
                self.error(
                    n.pos(),
                    "`from` is empty: nobody could approve",
                    Some(
                        "list approvers, or remove `from` to ask the repository's maintainers"
                            .into(),
                    ),
                );
                ok = false;
            }
            if let Some(r) = required
                && !from.is_empty()
                && r as usize > from.len()
            {
                self.error(
                    a.key_pos("required").unwrap_or(node.pos()),
                    format!(
                        "approval job \"{id}\" requires {r} approvals but lists only {} approvers",
                        from.len()
                    ),
                    Some("lower `required` or add approvers to `from`".into()),
                );
                ok = false;
            }
        }
        let mut show: Vec<String> = match a.get("show") {
            Some(n) => {
                // Kept with positions for the graph checks.
                job.show = self.strings(n, "`show`", true).unwrap_or_default();
                job.show.iter().map(|(s, _)| s.clone()).collect()
            }
            // By default approvers see what the gate directly waits for (already checked as
            // `needs`, so not checked again as `show`).
            None => job.needs.iter().map(|(s, _)| s.clone()).collect(),
        };
        show.sort();
        show.dedup();
        Some(JobSpec::Approval {
            required: required?,
            from,
            show,
        })
        .filter(|_| ok)
    }
}

/// Why an artifact path is refused, if it is.
fn artifact_problem(path: &str) -> Option<&'static str> {
    if path.trim().is_empty() {
        Some("is empty")
    } else if path.starts_with(['/', '\\'])
        || (path.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && path.get(1..2) == Some(":"))
    {
        Some("is absolute")
    } else if path.split(['/', '\\']).any(|c| c == "..") {
        Some("contains `..`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths() {
        assert_eq!(artifact_problem("out/app"), None);
        assert_eq!(artifact_problem("./out/app..tar"), None);
        assert_eq!(artifact_problem("/etc/passwd"), Some("is absolute"));
        assert_eq!(artifact_problem("C:/x"), Some("is absolute"));
        assert_eq!(artifact_problem("\\\\server\\x"), Some("is absolute"));
        assert_eq!(artifact_problem("out/a:b"), None);
        assert_eq!(artifact_problem("out/../../x"), Some("contains `..`"));
        assert_eq!(artifact_problem(".."), Some("contains `..`"));
        assert_eq!(artifact_problem(" "), Some("is empty"));
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("CARGO_TERM_COLOR"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
