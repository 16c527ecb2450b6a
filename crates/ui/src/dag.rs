//! A run's jobs drawn as an SVG graph: jobs as nodes in columns by depth, needs as edges,
//! colours by status, each node naming its mode and duration and linking to the job's page.
//!
//! The graph is what the relays show: a job appears once its request (or the router's line
//! about it) is out, and its edges come from its request's `job` inputs (protocol §9).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::html::{duration, esc, url_part};
use crate::hub::RunView;

const NODE_W: u32 = 176;
const NODE_H: u32 = 54;
const COL_GAP: u32 = 64;
const ROW_GAP: u32 = 22;
const PAD: u32 = 12;

/// The SVG of `run`'s jobs (an empty-state paragraph when there are none yet).
pub fn svg(run: &RunView) -> String {
    if run.jobs.is_empty() {
        return "<p class=\"muted\">No job has started yet.</p>".into();
    }
    // Edges as job indices, resolved from the requests each job needs.
    let index: BTreeMap<&str, usize> = run
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.as_str(), i))
        .collect();
    let edges: Vec<(usize, usize)> = run
        .jobs
        .iter()
        .enumerate()
        .flat_map(|(to, job)| {
            job.needs
                .iter()
                .filter_map(|need| run.job_of_request(need))
                .chain(job.need_jobs.iter().map(String::as_str))
                .filter_map(|need| index.get(need).copied())
                .filter(move |from| *from != to)
                .map(move |from| (from, to))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Depth: longest path from a job without needs (bounded, so a cycle cannot hang us).
    let mut depth = vec![0usize; run.jobs.len()];
    for _ in 0..run.jobs.len() {
        let mut changed = false;
        for &(from, to) in &edges {
            if depth[to] < depth[from] + 1 {
                depth[to] = depth[from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let positions: Vec<(u32, u32)> = depth
        .iter()
        .map(|d| {
            let row = rows.entry(*d).or_default();
            let at = (
                PAD + *d as u32 * (NODE_W + COL_GAP),
                PAD + *row as u32 * (NODE_H + ROW_GAP),
            );
            *row += 1;
            at
        })
        .collect();
    let columns = depth.iter().max().map_or(1, |d| d + 1) as u32;
    let most_rows = rows.values().max().copied().unwrap_or(1) as u32;
    let width = 2 * PAD + columns * NODE_W + (columns - 1) * COL_GAP;
    let height = 2 * PAD + most_rows * NODE_H + (most_rows - 1) * ROW_GAP;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"dag\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"group\" aria-label=\"Jobs of the run and what each needs\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" class=\"arrowhead\"/></marker></defs>"
    );
    for &(from, to) in &edges {
        let (x1, y1) = (positions[from].0 + NODE_W, positions[from].1 + NODE_H / 2);
        let (x2, y2) = (positions[to].0, positions[to].1 + NODE_H / 2);
        let mid = (x1 + x2) / 2;
        let _ = write!(
            out,
            "<path class=\"edge\" d=\"M{x1} {y1}C{mid} {y1} {mid} {y2} {x2} {y2}\" marker-end=\"url(#arrow)\"/>"
        );
    }
    for (job, (x, y)) in run.jobs.iter().zip(&positions) {
        let label: String = job.id.chars().take(20).collect();
        let mut detail = job.mode.label();
        if let Some(ms) = job.duration_ms() {
            detail.push_str(" · ");
            detail.push_str(&duration(ms));
        }
        let _ = write!(
            out,
            "<a href=\"/run/{run}/job/{job_url}\" class=\"node {status}\" data-job=\"{id}\" \
             aria-label=\"{id}: {status_label}, {mode}\">\
             <title>{id}: {status_label}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\"/>\
             <text x=\"{tx}\" y=\"{ty1}\" class=\"job\">{label}</text>\
             <text x=\"{tx}\" y=\"{ty2}\" class=\"mode\">{detail}</text></a>",
            run = run.request.id.to_hex(),
            job_url = url_part(&job.id),
            status = job.status.class(),
            status_label = job.status.label(),
            id = esc(&job.id),
            mode = esc(&job.mode.label()),
            tx = x + 12,
            ty1 = y + 22,
            ty2 = y + 42,
            label = esc(&label),
            detail = esc(&detail),
        );
    }
    out.push_str("</svg>");
    out
}
