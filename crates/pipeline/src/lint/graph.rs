//! The checks across jobs: needs, cycles, references, and the topological order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Linter, RawJob};
use crate::diag::did_you_mean;
use crate::expr::Reference;

impl Linter {
    /// Checks needs, cycles and references; returns the topological order when the graph is
    /// sound.
    pub(super) fn graph(&mut self, jobs: &[RawJob], inputs: &[String]) -> Option<Vec<String>> {
        let ids: BTreeSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        let by_id: BTreeMap<&str, &RawJob> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        let mut ok = true;
        // Valid edges only: job → what it needs.
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for job in jobs {
            let out = edges.entry(job.id.as_str()).or_default();
            for (need, pos) in &job.needs {
                if *need == job.id {
                    self.error(
                        *pos,
                        format!("job \"{}\" needs itself", job.id),
                        Some("remove it from `needs`".into()),
                    );
                    ok = false;
                } else if ids.contains(need.as_str()) {
                    out.insert(need.as_str());
                } else {
                    let hint = did_you_mean(need, ids.iter().copied(), || None);
                    self.error(
                        *pos,
                        format!("job \"{}\" needs unknown job \"{need}\"", job.id),
                        hint,
                    );
                    ok = false;
                }
            }
        }

        // Cycles: from each job, the shortest way back to itself through `needs`.
        let mut in_cycle = BTreeSet::new();
        for &start in &ids {
            if in_cycle.contains(start) {
                continue;
            }
            if let Some(cycle) = shortest_cycle(&edges, start) {
                let pos = by_id.get(start).map(|j| j.needs_pos).unwrap_or_default();
                self.error(
                    pos,
                    format!("needs form a cycle: {}", cycle.join(" → ")),
                    Some("each arrow reads \"needs\"; remove one of these needs".into()),
                );
                in_cycle.extend(cycle);
                ok = false;
            }
        }

        // References: to declared inputs, to jobs this one (transitively) needs.
        for job in jobs {
            let ancestors = ancestors(&edges, &job.id);
            for (reference, pos) in &job.refs {
                let Some(target) = reference.job() else {
                    if let Reference::Input { name } = reference
                        && !inputs.iter().any(|i| i == name)
                    {
                        let hint = did_you_mean(name, inputs.iter().map(String::as_str), || {
                            Some("declare it under `on.manual.inputs`".into())
                        });
                        self.error(
                            *pos,
                            format!("${{{{ {reference} }}}} refers to unknown input \"{name}\""),
                            hint,
                        );
                        ok = false;
                    }
                    continue;
                };
                let Some(upstream) = by_id.get(target) else {
                    let hint = did_you_mean(target, ids.iter().copied(), || None);
                    self.error(
                        *pos,
                        format!("${{{{ {reference} }}}} refers to unknown job \"{target}\""),
                        hint,
                    );
                    ok = false;
                    continue;
                };
                if target == job.id {
                    self.error(
                        *pos,
                        format!("job \"{}\" refers to its own output", job.id),
                        Some("a job can only use what jobs it needs produced".into()),
                    );
                    ok = false;
                    continue;
                }
                if !ancestors.contains(target) {
                    self.error(
                        *pos,
                        format!(
                            "job \"{}\" uses ${{{{ {reference} }}}} but does not need job \"{target}\"",
                            job.id
                        ),
                        Some(format!("add \"{target}\" to its `needs`")),
                    );
                    ok = false;
                }
                if let Reference::Artifact { path, .. } = reference {
                    match &upstream.artifacts {
                        Some(declared) if declared.contains(path) => {}
                        Some(declared) => {
                            let hint =
                                did_you_mean(path, declared.iter().map(String::as_str), || {
                                    Some(if declared.is_empty() {
                                        format!("job \"{target}\" declares no artifacts")
                                    } else {
                                        format!(
                                            "its artifacts are {}",
                                            declared
                                                .iter()
                                                .map(|d| format!("\"{d}\""))
                                                .collect::<Vec<_>>()
                                                .join(", ")
                                        )
                                    })
                                });
                            self.error(
                                *pos,
                                format!("job \"{target}\" has no artifact \"{path}\""),
                                hint,
                            );
                            ok = false;
                        }
                        None => {
                            // Not a run job (or unreadable, already reported).
                            if upstream.spec.is_some() {
                                self.error(
                                    *pos,
                                    format!("job \"{target}\" has no artifacts"),
                                    Some("only jobs with `run` or `steps` upload artifacts".into()),
                                );
                                ok = false;
                            }
                        }
                    }
                }
            }
            for (shown, pos) in &job.show {
                if !ids.contains(shown.as_str()) {
                    let hint = did_you_mean(shown, ids.iter().copied(), || None);
                    self.error(
                        *pos,
                        format!("approval job \"{}\" shows unknown job \"{shown}\"", job.id),
                        hint,
                    );
                    ok = false;
                } else if !ancestors.contains(shown.as_str()) {
                    self.error(
                        *pos,
                        format!(
                            "approval job \"{}\" shows job \"{shown}\" but does not need it",
                            job.id
                        ),
                        Some(format!(
                            "add \"{shown}\" to its `needs`: approvers can only see what has run"
                        )),
                    );
                    ok = false;
                }
            }
        }
        if !ok || jobs.is_empty() {
            return None;
        }
        Some(topological_order(&edges))
    }
}

/// `job → … → job` through `needs`, shortest first, neighbours in id order.
fn shortest_cycle<'a>(
    edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in edges.get(node).into_iter().flatten() {
            if next == start {
                let mut path = vec![start];
                let mut at = node;
                while at != start {
                    path.push(at);
                    at = parent.get(at).copied().unwrap_or(start);
                }
                path.reverse();
                // `path` is now [.., node] ending at start; put start first and last.
                path.rotate_right(1);
                path.push(start);
                return Some(path);
            }
            if !parent.contains_key(next) && next != start {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every job `id` needs, directly or not.
fn ancestors<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>, id: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = edges.get(id).into_iter().flatten().copied().collect();
    while let Some(node) = stack.pop() {
        if seen.insert(node) {
            stack.extend(edges.get(node).into_iter().flatten().copied());
        }
    }
    seen
}

/// Kahn's algorithm; among the jobs whose needs are met, the smallest id goes first, so the
/// order depends only on the graph. The caller has ruled out cycles.
fn topological_order(edges: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    let mut waiting: BTreeMap<&str, usize> = edges.iter().map(|(k, v)| (*k, v.len())).collect();
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut order = Vec::new();
    while let Some(next) = ready.pop_first() {
        order.push(next.to_owned());
        for (job, needs) in edges {
            if needs.contains(next)
                && let Some(n) = waiting.get_mut(job)
            {
                *n -= 1;
                if *n == 0 {
                    ready.insert(job);
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topological_order_breaks_ties_by_id() {
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        edges.insert("z", BTreeSet::new());
        edges.insert("b", BTreeSet::from(["z"]));
        edges.insert("a", BTreeSet::from(["z"]));
        edges.insert("c", BTreeSet::new());
        assert_eq!(topological_order(&edges), ["c", "z", "a", "b"]);
    }

    #[test]
    fn cycles_are_named_shortest_first() {
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        edges.insert("build", BTreeSet::from(["test"]));
        edges.insert("test", BTreeSet::from(["build", "lint"]));
        edges.insert("lint", BTreeSet::from(["build"]));
        assert_eq!(
            shortest_cycle(&edges, "build"),
            Some(vec!["build", "test", "build"])
        );
        assert_eq!(
            shortest_cycle(&edges, "lint"),
            Some(vec!["lint", "build", "test", "lint"])
        );
    }
}
