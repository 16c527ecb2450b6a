//! From the YAML tree to a [`Plan`]: every check of the file, with positions.
//!
//! The walk never stops at the first problem: each part of the file is checked and every
//! problem is collected, then the graph checks (unknown needs, cycles, references) run over
//! whatever jobs could be read. Only a file without a single error compiles to a plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use quorum_proto::nostr::PublicKey;

use crate::diag::{Diagnostics, Pos, Sink, did_you_mean};
use crate::expr::{self, FORMS, Reference};
use crate::plan::{
    JobSpec, ManualInput, ManualTrigger, Mode, Plan, PlannedJob, PullRequestTrigger, PushTrigger,
    Triggers, ref_glob,
};
use crate::yaml::{self, Node, Scalar};

mod graph;
mod jobs;
mod select;

pub use jobs::MAX_JOBS;

/// Larger files are refused before parsing: a pipeline is a page or two of YAML, and the
/// parser's work (and its recursion) should stay bounded on hostile input.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// The longest timeout a job may ask for: one week.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

const TOP_KEYS: &[&str] = &["name", "on", "image", "jobs", "select"];
const ON_KEYS: &[&str] = &["push", "manual", "pull_request"];
const PUSH_KEYS: &[&str] = &["branches", "tags"];
const MANUAL_KEYS: &[&str] = &["inputs"];
const MANUAL_INPUT_KEYS: &[&str] = &["description", "required", "default"];

/// Every key the linter accepts, by where it may appear (the headings of the pipeline
/// reference, `docs/pipeline.md`): the reference is tested against this list so that a key
/// added here cannot go undocumented.
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("top level", TOP_KEYS),
    ("on", ON_KEYS),
    ("on.push", PUSH_KEYS),
    ("on.manual", MANUAL_KEYS),
    ("on.manual.inputs.<name>", MANUAL_INPUT_KEYS),
    ("jobs.<id>", jobs::JOB_KEYS),
    ("jobs.<id>.steps[]", jobs::STEP_KEYS),
    ("jobs.<id>.inputs[]", jobs::DVM_INPUT_KEYS),
    ("jobs.<id>.approval", jobs::APPROVAL_KEYS),
    ("jobs.<id>.mode", jobs::MODES),
    ("select", select::SELECT_KEYS),
    ("select.trusted", select::TRUSTED_KEYS),
    ("select.record", select::RECORD_KEYS),
    ("select.price", select::PRICE_KEYS),
    ("select.prefer", select::PREFERENCES),
];

/// The entries of one mapping, first occurrence of each allowed key.
struct Fields<'n> {
    found: BTreeMap<&'n str, (&'n Scalar, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.found.get(key).map(|(_, v)| *v)
    }

    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.found.get(key).map(|(k, _)| k.pos)
    }

    fn has(&self, key: &str) -> bool {
        self.found.contains_key(key)
    }
}

/// A job as read from the file, before the graph checks.
struct RawJob {
    id: String,
    id_pos: Pos,
    name: Option<String>,
    /// Each need with its position, as written.
    needs: Vec<(String, Pos)>,
    needs_pos: Pos,
    spec: Option<JobSpec>,
    mode: Mode,
    release: bool,
    /// Artifact paths, for checking references to them.
    artifacts: Option<Vec<String>>,
    /// Every expression in the job's values.
    refs: Vec<(Reference, Pos)>,
    /// Approval `show` entries with positions.
    show: Vec<(String, Pos)>,
    /// The job's own `select`, and where it is.
    select: Option<(crate::select::SelectPolicy, Pos)>,
}

struct Linter {
    sink: Sink,
    /// The top-level `image:`, which script jobs without their own take.
    default_image: Option<Scalar>,
}

/// Parses, lints and compiles one pipeline file.
pub(crate) fn compile(file_name: &str, text: &str) -> Result<(Plan, Diagnostics), Diagnostics> {
    let mut lint = Linter {
        sink: Sink::new(file_name),
        default_image: None,
    };
    let start = Pos { line: 1, column: 1 };
    if text.len() > MAX_FILE_BYTES {
        lint.sink.error(
            start,
            format!(
                "the pipeline file is too large ({} bytes; the limit is {MAX_FILE_BYTES})",
                text.len()
            ),
            None,
        );
        return Err(lint.sink.finish());
    }
    let root = match yaml::load(text) {
        Ok(root) => root,
        Err(e) => {
            lint.sink.error(e.pos, e.message, e.hint);
            return Err(lint.sink.finish());
        }
    };
    let plan = lint.file(&root);
    match plan {
        Some(plan) if !lint.sink.has_errors() => Ok((plan, lint.sink.finish())),
        _ => {
            if !lint.sink.has_errors() {
                // Every path that yields no plan reports why; this is a guard against a bug
                // in the linter turning into a silently accepted file.
                lint.sink
                    .error(start, "the pipeline could not be compiled", None);
            }
            Err(lint.sink.finish())
        }
    }
}

/// Parses and lints a selection policy file: one `select` mapping at its root (the keys of
/// `select:` in a pipeline), for `quorum market --policy` and a router's default policy.
pub(crate) fn compile_select(
    file_name: &str,
    text: &str,
) -> Result<crate::select::SelectPolicy, Diagnostics> {
    let mut lint = Linter {
        sink: Sink::new(file_name),
        default_image: None,
    };
    if text.len() > MAX_FILE_BYTES {
        lint.sink.error(
            Pos { line: 1, column: 1 },
            format!("the policy file is too large ({} bytes)", text.len()),
            None,
        );
        return Err(lint.sink.finish());
    }
    let root = match yaml::load(text) {
        Ok(root) => root,
        Err(e) => {
            lint.sink.error(e.pos, e.message, e.hint);
            return Err(lint.sink.finish());
        }
    };
    match lint.select(&root, "in the policy file") {
        Some(policy) if !lint.sink.has_errors() => Ok(policy),
        _ => {
            if !lint.sink.has_errors() {
                lint.sink.error(
                    Pos { line: 1, column: 1 },
                    "the policy could not be read",
                    None,
                );
            }
            Err(lint.sink.finish())
        }
    }
}

fn list_keys(allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Linter {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.sink.error(pos, message, hint);
    }

    // ---- typed access -------------------------------------------------------------------

    /// The mapping's entries; `null` reads as an empty mapping when `null_ok`.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        null_ok: bool,
    ) -> Option<&'n [(Scalar, Node)]> {
        match node {
            Node::Map(entries, _) => Some(entries),
            n if null_ok && n.is_null() => Some(&[]),
            n => {
                self.error(
                    n.pos(),
                    format!("{what} must be a mapping, found {}", n.describe()),
                    None,
                );
                None
            }
        }
    }

    /// Checks the keys of a mapping: unknown keys and duplicates are errors.
    fn fields<'n>(
        &mut self,
        entries: &'n [(Scalar, Node)],
        allowed: &[&str],
        context: &str,
    ) -> Fields<'n> {
        let mut found: BTreeMap<&'n str, (&'n Scalar, &'n Node)> = BTreeMap::new();
        for (key, value) in entries {
            let name = key.value.as_str();
            if let Some((first, _)) = found.get(name) {
                let line = first.pos.line;
                self.error(
                    key.pos,
                    format!("duplicate key \"{name}\" {context}"),
                    Some(format!("it is first set on line {line}; keep one")),
                );
            } else if !allowed.contains(&name) {
                let hint = did_you_mean(name, allowed.iter().copied(), || {
                    Some(format!("expected one of {}", list_keys(allowed)))
                });
                self.error(key.pos, format!("unknown key \"{name}\" {context}"), hint);
            } else {
                found.insert(name, (key, value));
            }
        }
        Fields { found }
    }

    fn scalar<'n>(&mut self, node: &'n Node, what: &str, expected: &str) -> Option<&'n Scalar> {
        match node {
            Node::Scalar(s) if !s.is_null() => Some(s),
            n => {
                self.error(
                    n.pos(),
                    format!("{what} must be {expected}, found {}", n.describe()),
                    None,
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        self.scalar(node, what, "a string").map(|s| s.value.clone())
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        let s = self.scalar(node, what, "true or false")?;
        match (s.plain, s.value.as_str()) {
            (true, "true" | "True" | "TRUE") => Some(true),
            (true, "false" | "False" | "FALSE") => Some(false),
            _ => {
                self.error(
                    s.pos,
                    format!("{what} must be true or false, found \"{}\"", s.value),
                    None,
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<u32> {
        let s = self.scalar(node, what, "a whole number")?;
        match s.value.parse::<u32>() {
            Ok(n) if s.plain => Some(n),
            _ => {
                self.error(
                    s.pos,
                    format!("{what} must be a whole number, found \"{}\"", s.value),
                    None,
                );
                None
            }
        }
    }

    /// A list of strings; a single string too when `single_ok` (as for `needs: build`).
    fn strings(&mut self, node: &Node, what: &str, single_ok: bool) -> Option<Vec<(String, Pos)>> {
        match node {
            Node::Seq(items, _) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(s) = self.scalar(item, &format!("each entry of {what}"), "a string")
                    {
                        out.push((s.value.clone(), s.pos));
                    }
                }
                Some(out)
            }
            Node::Scalar(s) if single_ok && !s.is_null() => Some(vec![(s.value.clone(), s.pos)]),
            n => {
                let expected = if single_ok {
                    "a string or a list of strings"
                } else {
                    "a list of strings"
                };
                self.error(
                    n.pos(),
                    format!("{what} must be {expected}, found {}", n.describe()),
                    None,
                );
                None
            }
        }
    }

    /// Reports every repeated entry of a list.
    fn no_repeats(&mut self, items: &[(String, Pos)], what: &str) {
        let mut seen = BTreeSet::new();
        for (item, pos) in items {
            if !seen.insert(item.as_str()) {
                self.error(
                    *pos,
                    format!("\"{item}\" appears twice in {what}"),
                    Some("remove the repeated entry".into()),
                );
            }
        }
    }

    fn public_key(&mut self, value: &str, pos: Pos) -> Option<String> {
        match PublicKey::parse(value) {
            // `parse` only decodes 32 bytes; `xonly` checks they are a point on the curve,
            // so that a mistyped key is caught here and not when a signature never verifies.
            Ok(key) if key.xonly().is_ok() => Some(key.to_hex()),
            Ok(_) => {
                self.error(
                    pos,
                    format!("invalid public key \"{value}\""),
                    Some("this is not a point on secp256k1; copy the key again".into()),
                );
                None
            }
            Err(_) => {
                self.error(
                    pos,
                    format!("invalid public key \"{value}\""),
                    Some("write an npub (bech32) or 64 hex characters".into()),
                );
                None
            }
        }
    }

    /// Parses the expressions of a value, collecting its references; returns the value with
    /// its expressions spelled canonically.
    fn expressions(&mut self, value: &str, pos: Pos, refs: &mut Vec<(Reference, Pos)>) -> String {
        match expr::references(value).and_then(|found| Ok((found, expr::normalize(value)?))) {
            Ok((found, normal)) => {
                refs.extend(found.into_iter().map(|r| (r, pos)));
                normal
            }
            Err(e) => {
                self.error(pos, e.to_string(), Some(FORMS.into()));
                value.to_owned()
            }
        }
    }

    fn timeout(&mut self, node: &Node, what: &str) -> Option<u64> {
        let s = self.scalar(node, what, "a duration")?;
        let secs = parse_duration(&s.value).filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n));
        if secs.is_none() {
            self.error(
                s.pos,
                format!("bad timeout \"{}\"", s.value),
                Some(
                    "write seconds (`600`) or a duration such as `90s`, `10m`, `1h30m`, \
                     at most one week"
                        .into(),
                ),
            );
        }
        secs
    }

    // ---- the file -----------------------------------------------------------------------

    fn file(&mut self, root: &Node) -> Option<Plan> {
        let entries = match root {
            Node::Map(entries, _) => entries,
            n => {
                let message = if n.is_null() {
                    "the pipeline file is empty".to_owned()
                } else {
                    format!("a pipeline file must be a mapping, found {}", n.describe())
                };
                self.error(
                    n.pos(),
                    message,
                    Some("start with `name:`, `on:` and `jobs:`".into()),
                );
                return None;
            }
        };
        let top = self.fields(entries, TOP_KEYS, "at the top level");
        let name = top.get("name").and_then(|n| self.string(n, "`name`"));
        let select = top
            .get("select")
            .and_then(|n| self.select(n, "at the top level"));
        if let Some(node) = top.get("image") {
            self.default_image = self.scalar(node, "`image`", "an image reference").cloned();
        }
        let on = match top.get("on") {
            Some(node) => self.triggers(node),
            None => {
                self.error(
                    Pos { line: 1, column: 1 },
                    "the pipeline has no `on`: it would never run",
                    Some("add e.g. `on: { push: { branches: [main] } }`".into()),
                );
                None
            }
        };
        let inputs: Vec<String> = on
            .as_ref()
            .and_then(|t| t.manual.as_ref())
            .map(|m| m.inputs.keys().cloned().collect())
            .unwrap_or_default();
        let jobs = match top.get("jobs") {
            Some(node) => self.jobs(node),
            None => {
                self.error(
                    Pos { line: 1, column: 1 },
                    "the pipeline has no `jobs`",
                    Some("add `jobs:` with at least one job".into()),
                );
                Vec::new()
            }
        };
        let order = self.graph(&jobs, &inputs);
        let on = on?;
        let order = order?;
        let mut by_id: HashMap<String, RawJob> =
            jobs.into_iter().map(|j| (j.id.clone(), j)).collect();
        let mut planned = Vec::new();
        for id in order {
            let job = by_id.remove(&id)?;
            let mut needs: Vec<String> = job.needs.into_iter().map(|(n, _)| n).collect();
            needs.sort();
            needs.dedup();
            let spec = job.spec?;
            let select = self.job_select(&job.id, &spec, job.mode, job.select, select.as_ref());
            planned.push(PlannedJob {
                name: job.name.unwrap_or_else(|| job.id.clone()),
                id: job.id,
                needs,
                spec,
                mode: job.mode,
                release: job.release,
                select,
            });
        }
        Some(Plan {
            name,
            on,
            jobs: planned,
        })
    }

    fn triggers(&mut self, node: &Node) -> Option<Triggers> {
        let mut triggers = Triggers::default();
        let mut ok = true;
        let unknown = |name: &str| {
            did_you_mean(name, ON_KEYS.iter().copied(), || {
                Some("Quorum CI triggers are `push`, `manual` and `pull_request`".into())
            })
        };
        match node {
            // `on: push` and `on: [push, manual]`, as in GitHub Actions.
            Node::Scalar(_) | Node::Seq(..) => {
                for (name, pos) in self.strings(node, "`on`", true)? {
                    match name.as_str() {
                        "push" => triggers.push = Some(PushTrigger::default()),
                        "manual" => triggers.manual = Some(ManualTrigger::default()),
                        "pull_request" => {
                            triggers.pull_request = Some(PullRequestTrigger::default())
                        }
                        other => {
                            let hint = unknown(other);
                            self.error(pos, format!("unknown trigger \"{other}\""), hint);
                            ok = false;
                        }
                    }
                }
            }
            Node::Map(entries, _) => {
                for (key, _) in entries {
                    if !ON_KEYS.contains(&key.value.as_str()) {
                        let hint = unknown(&key.value);
                        self.error(key.pos, format!("unknown trigger \"{}\"", key.value), hint);
                        ok = false;
                    }
                }
                let known: Vec<(Scalar, Node)> = entries
                    .iter()
                    .filter(|(k, _)| ON_KEYS.contains(&k.value.as_str()))
                    .cloned()
                    .collect();
                let fields = self.fields(&known, ON_KEYS, "in `on`");
                if let Some(push) = fields.get("push") {
                    triggers.push = self.push_trigger(push);
                    ok &= triggers.push.is_some();
                }
                if let Some(manual) = fields.get("manual") {
                    triggers.manual = self.manual_trigger(manual);
                    ok &= triggers.manual.is_some();
                }
                if let Some(pull_request) = fields.get("pull_request") {
                    let entries = self.mapping(pull_request, "`on.pull_request`", true);
                    if let Some(entries) = entries {
                        for (key, _) in entries {
                            self.error(
                                key.pos,
                                format!("unknown key \"{}\" in `on.pull_request`", key.value),
                                Some("`pull_request` takes no keys yet: write it alone".into()),
                            );
                        }
                        if entries.is_empty() {
                            triggers.pull_request = Some(PullRequestTrigger::default());
                        }
                    }
                    ok &= triggers.pull_request.is_some();
                }
            }
        }
        if ok
            && triggers.push.is_none()
            && triggers.manual.is_none()
            && triggers.pull_request.is_none()
        {
            self.error(
                node.pos(),
                "`on` names no trigger: the pipeline would never run",
                Some("add `push`, `manual` or `pull_request`".into()),
            );
            ok = false;
        }
        ok.then_some(triggers)
    }

    fn push_trigger(&mut self, node: &Node) -> Option<PushTrigger> {
        let entries = self.mapping(node, "`on.push`", true)?;
        let fields = self.fields(entries, PUSH_KEYS, "in `on.push`");
        let mut ok = true;
        let mut globs = |lint: &mut Self, key: &str| -> Option<Vec<String>> {
            let node = fields.get(key)?;
            let what = format!("`on.push.{key}`");
            let Some(list) = lint.strings(node, &what, true) else {
                ok = false;
                return None;
            };
            if list.is_empty() {
                let example = if key == "tags" { "v*" } else { "main" };
                lint.error(
                    node.pos(),
                    format!("{what} is empty: nothing would match"),
                    Some(format!("list globs such as `{example}`, or remove `{key}`")),
                );
                ok = false;
            }
            lint.no_repeats(&list, &what);
            for (glob, pos) in &list {
                if glob.starts_with('!') {
                    lint.error(
                        *pos,
                        format!("negated pattern \"{glob}\" is not supported"),
                        Some("list the refs that should run the pipeline".into()),
                    );
                    ok = false;
                } else if let Err(e) = ref_glob(glob) {
                    lint.error(*pos, format!("invalid glob \"{glob}\": {}", e.kind()), None);
                    ok = false;
                }
            }
            // Sorted: the order of globs means nothing, and the plan is canonical.
            let mut globs: Vec<String> = list.into_iter().map(|(g, _)| g).collect();
            globs.sort();
            globs.dedup();
            Some(globs)
        };
        let branches = globs(self, "branches");
        let tags = globs(self, "tags");
        ok.then_some(PushTrigger { branches, tags })
    }

    fn manual_trigger(&mut self, node: &Node) -> Option<ManualTrigger> {
        let entries = self.mapping(node, "`on.manual`", true)?;
        let fields = self.fields(entries, MANUAL_KEYS, "in `on.manual`");
        let mut trigger = ManualTrigger::default();
        let Some(inputs) = fields.get("inputs") else {
            return Some(trigger);
        };
        let entries = self.mapping(inputs, "`on.manual.inputs`", true)?;
        let mut ok = true;
        let mut seen = BTreeMap::new();
        for (key, value) in entries {
            let name = &key.value;
            if let Some(line) = seen.insert(name.clone(), key.pos.line) {
                self.error(
                    key.pos,
                    format!("duplicate input \"{name}\""),
                    Some(format!("it is first declared on line {line}; keep one")),
                );
                ok = false;
                continue;
            }
            if !expr::is_identifier(name) {
                self.error(
                    key.pos,
                    format!("invalid input name \"{name}\""),
                    Some("use letters, digits, `_` and `-`, starting with a letter or `_`".into()),
                );
                ok = false;
            }
            let context = format!("in input \"{name}\"");
            let Some(entries) = self.mapping(value, &format!("input \"{name}\""), true) else {
                ok = false;
                continue;
            };
            let f = self.fields(entries, MANUAL_INPUT_KEYS, &context);
            let input = ManualInput {
                description: f
                    .get("description")
                    .and_then(|n| self.string(n, "`description`")),
                required: f
                    .get("required")
                    .and_then(|n| self.boolean(n, "`required`"))
                    .unwrap_or(false),
                default: f.get("default").and_then(|n| self.string(n, "`default`")),
            };
            trigger.inputs.insert(name.clone(), input);
        }
        ok.then_some(trigger)
    }
}

/// `600`, `90s`, `10m`, `1h`, `1h30m` → seconds.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    let mut last_unit = u64::MAX;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(number.unwrap_or(0).checked_mul(10)?.checked_add(d.into())?);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        // Units in decreasing order, each once: `1h30m`, not `30m1h` or `1m1m`.
        if unit >= last_unit {
            return None;
        }
        last_unit = unit;
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if number.is_some() || text.is_empty() {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("600"), Some(600));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("1h0m5s"), Some(3605));
        for bad in [
            "",
            "m",
            "10 m",
            "10min",
            "1.5h",
            "30m1h",
            "1m1m",
            "-5s",
            "5d",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
