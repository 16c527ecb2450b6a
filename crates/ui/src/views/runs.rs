//! The runs list (routed runs and runs known from their CI status), a routed run's page (its
//! DAG, jobs, gates, releases) and a CI-status run's page.

use std::collections::BTreeMap;
use std::fmt::Write;

use quorum_proto::nipc1::{CI_JOB_RESULT, CiJobResult, Conclusion};
use quorum_proto::nostr::{EventId, Filter, PublicKey, Timestamp};

use super::{RunFilter, badge, dvm_link, key};
use crate::html::{ansi_to_html, duration, esc, short, time, url_part};
use crate::hub::Status;
use crate::{Dashboard, UiError, fetch};

/// One line of the runs list: a routed run or one known from its CI status.
struct Row {
    repo: String,
    label: String,
    branch: Option<String>,
    class: &'static str,
    status: String,
    commit: String,
    jobs: String,
    started: Timestamp,
    href: String,
    id: String,
}

pub(super) fn runs(dashboard: &Dashboard, filter: &RunFilter) -> String {
    let mut rows: Vec<Row> = dashboard
        .hub
        .runs()
        .iter()
        .map(|run| Row {
            repo: run.repository(),
            label: run.repository_label(),
            branch: run.branch().map(str::to_string),
            class: run.status_class(),
            status: run.status_label().to_string(),
            commit: run.run.commit.clone(),
            jobs: format!(
                "{}/{}",
                run.jobs
                    .iter()
                    .filter(|j| j.status == Status::Success)
                    .count(),
                run.jobs.len()
            ),
            started: run.request.created_at,
            href: format!("/run/{}", run.request.id.to_hex()),
            id: run.request.id.to_hex(),
        })
        .collect();
    rows.extend(dashboard.hub.ci_runs().iter().map(|run| Row {
        repo: run.repository(),
        label: run.repository_label(),
        branch: run.branch().map(str::to_string),
        class: run.status_class(),
        status: run.status_label(),
        commit: run.context.commit.clone(),
        jobs: if run.conclusion.is_some() {
            format!("{} done", run.jobs.len())
        } else {
            format!("{} running", run.in_progress.len())
        },
        started: run.started_at,
        href: format!("/ci/{}/{}", run.coordinator.to_hex(), url_part(&run.run)),
        id: run.run.clone(),
    }));
    rows.sort_by_key(|r| std::cmp::Reverse(r.started));
    let repos: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r.repo.clone(), r.label.clone()))
        .collect();
    rows.retain(|r| {
        filter.repo.as_ref().is_none_or(|repo| r.repo == *repo)
            && filter
                .branch
                .as_ref()
                .is_none_or(|b| r.branch.as_ref() == Some(b))
            && filter.status.as_ref().is_none_or(|s| r.class == s)
    });
    let mut out = String::from("<h1>Runs</h1>");
    out.push_str("<form class=\"filters\" method=\"get\" action=\"/\"><label>Repository <select name=\"repo\"><option value=\"\">all</option>");
    for (repo, label) in &repos {
        let selected = if filter.repo.as_deref() == Some(repo) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<option value=\"{r}\"{selected}>{l}</option>",
            r = esc(repo),
            l = esc(label)
        );
    }
    let _ = write!(
        out,
        "</select></label><label>Branch <input name=\"branch\" value=\"{}\" size=\"12\"></label>\
         <label>Status <select name=\"status\"><option value=\"\">all</option>",
        esc(filter.branch.as_deref().unwrap_or(""))
    );
    for status in ["running", "waiting", "success", "failure"] {
        let selected = if filter.status.as_deref() == Some(status) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{status}</option>");
    }
    out.push_str("</select></label><button type=\"submit\">Filter</button></form>");
    if rows.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-runs\">No run on these relays yet. Runs appear here as soon as a run-pipeline request (kind 5700) or a run's CI status (NIP-C1) reaches them.</p>");
        return out;
    }
    out.push_str("<div class=\"scroll\"><table class=\"runs\"><thead><tr><th scope=\"col\">Status</th><th scope=\"col\">Repository</th><th scope=\"col\">Branch</th><th scope=\"col\">Commit</th><th scope=\"col\">Jobs</th><th scope=\"col\">Started</th></tr></thead><tbody>");
    for row in rows {
        let _ = write!(
            out,
            "<tr data-run=\"{id}\" class=\"{class}\"><td>{badge}</td><td><a href=\"{href}\">{repo}</a></td>\
             <td>{branch}</td><td><code>{commit}</code></td><td>{jobs}</td><td>{started}</td></tr>",
            id = esc(&row.id),
            class = row.class,
            badge = badge(row.class, &row.status),
            href = esc(&row.href),
            repo = esc(&row.label),
            branch = esc(row.branch.as_deref().unwrap_or("—")),
            commit = esc(short(&row.commit)),
            jobs = esc(&row.jobs),
            started = time(row.started.as_secs()),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A run known from its CI status events: what they say, and each job's result (9841) once
/// the run concluded. Its jobs' requests do not name it, so it has no graph.
pub(super) async fn ci_run(
    dashboard: &Dashboard,
    coordinator: &PublicKey,
    run_id: &str,
) -> Result<String, UiError> {
    let run = dashboard
        .hub
        .ci_run(coordinator, run_id)
        .ok_or_else(|| UiError::NotFound(format!("run {run_id} of {coordinator}")))?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<h1>{repo} <span class=\"muted\">at</span> <code>{commit}</code> {badge}</h1>\
         <dl class=\"facts\"><dt>Run id</dt><dd><code>{run}</code></dd><dt>Repository</dt><dd><code>{coordinate}</code></dd>\
         <dt>Branch</dt><dd>{branch}</dd><dt>Run by</dt><dd>{by}</dd><dt>Started</dt><dd>{at}</dd></dl>\
         <p class=\"muted\">Known from its CI status events (NIP-C1): a run its coordinator drove itself \
         (<code>quorum run</code>), whose job requests do not name it, so there is no graph or live log here.</p>",
        repo = esc(&run.repository_label()),
        commit = esc(short(&run.context.commit)),
        badge = badge(run.status_class(), &run.status_label()),
        run = esc(&run.run),
        coordinate = esc(&run.repository()),
        branch = esc(run.branch().unwrap_or("—")),
        by = key(&run.coordinator.to_hex()),
        at = time(run.started_at.as_secs()),
    );
    if !run.content.is_empty() {
        let _ = write!(
            out,
            "<p class=\"alert\" role=\"alert\">{}</p>",
            esc(&run.content)
        );
    }
    if run.conclusion.is_none() {
        let running: Vec<String> = run.in_progress.iter().map(|j| esc(j)).collect();
        let _ = write!(
            out,
            "<h2>Jobs</h2><p>Running now: {}</p>",
            if running.is_empty() {
                "—".into()
            } else {
                running.join(", ")
            }
        );
        return Ok(out);
    }
    let ids: Vec<EventId> = run.jobs.iter().map(|q| q.id).collect();
    let results: Vec<CiJobResult> = if ids.is_empty() {
        Vec::new()
    } else {
        fetch(
            &dashboard.hub.client,
            Filter::new().ids(ids).kind(CI_JOB_RESULT),
        )
        .await
        .iter()
        .filter_map(|e| CiJobResult::from_event(e).ok())
        .collect()
    };
    out.push_str("<h2>Jobs</h2>");
    for quote in &run.jobs {
        let job = quote.job.as_deref().unwrap_or("?");
        let Some(result) = results.iter().find(|r| r.job == job) else {
            let _ = write!(
                out,
                "<h3>{}</h3><p class=\"muted\">Its result (9841) is not on the relays.</p>",
                esc(job)
            );
            continue;
        };
        let class = match result.conclusion {
            Conclusion::Success | Conclusion::Neutral | Conclusion::Skipped => "success",
            _ => "failure",
        };
        let _ = write!(
            out,
            "<section class=\"ci-job\" data-job=\"{id}\"><h3>{name} {badge}</h3><dl class=\"facts\"><dt>Ran on</dt><dd>{on}</dd>\
             <dt>Exit code</dt><dd>{exit}</dd><dt>Full log</dt><dd>{logs}</dd></dl>",
            id = esc(&result.job),
            name = esc(result.name.as_deref().unwrap_or(&result.job)),
            badge = badge(class, result.conclusion.as_str()),
            on = result
                .runs_on
                .iter()
                .map(|k| dvm_link(k))
                .collect::<Vec<_>>()
                .join(" "),
            exit = result
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "—".into()),
            logs = if result.logs.starts_with("http://") || result.logs.starts_with("https://") {
                format!(
                    "<a href=\"{u}\" rel=\"nofollow noreferrer\">{u}</a>",
                    u = esc(&result.logs)
                )
            } else {
                "—".into()
            },
        );
        if !result.log_tail.is_empty() {
            let _ = write!(
                out,
                "<pre class=\"log\" tabindex=\"0\" aria-label=\"Log tail of {}\">{}</pre>",
                esc(&result.job),
                ansi_to_html(&result.log_tail)
            );
        }
        out.push_str("</section>");
    }
    Ok(out)
}

pub(super) fn run(dashboard: &Dashboard, id: &EventId) -> Result<String, UiError> {
    let run = dashboard.hub.run(id).ok_or_else(|| {
        UiError::NotFound(format!("run {id} (not among the runs on these relays)"))
    })?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<h1>{repo} <span class=\"muted\">at</span> <code>{commit}</code> {badge}</h1>\
         <dl class=\"facts\"><dt>Request</dt><dd><code>{id}</code></dd>\
         <dt>Repository</dt><dd>{url}<br><code>{coordinate}</code></dd><dt>Branch</dt><dd>{branch}</dd>\
         <dt>Router</dt><dd>{router}</dd><dt>Run id</dt><dd>{run_id}</dd><dt>Asked</dt><dd>{at}</dd></dl>",
        repo = esc(&run.repository_label()),
        commit = esc(short(&run.run.commit)),
        badge = badge(run.status_class(), run.status_label()),
        id = id.to_hex(),
        url = esc(&run.run.repo),
        coordinate = esc(&run
            .run
            .repo_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()),
        branch = esc(run.branch().unwrap_or("—")),
        router = run
            .router
            .as_deref()
            .map(dvm_link)
            .unwrap_or_else(|| "—".into()),
        run_id = run.run_id.as_deref().map(key).unwrap_or_else(|| "—".into()),
        at = time(run.request.created_at.as_secs()),
    );
    if let Some(cost) = run.cost() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", esc(&cost));
    }
    if let Some(error) = &run.error {
        let _ = write!(out, "<p class=\"alert\" role=\"alert\">{}</p>", esc(error));
    }
    if let Some(reason) = &run.reason {
        let _ = write!(
            out,
            "<p class=\"alert\" role=\"alert\">Failed: {}</p>",
            esc(reason)
        );
    }
    out.push_str("<h2>Jobs</h2><div class=\"scroll\">");
    out.push_str(&crate::dag::svg(&run));
    out.push_str("</div>");
    if let Some(gate) = &run.pending_gate {
        let _ = write!(
            out,
            "<section class=\"gate\" aria-label=\"Approval\"><h3>Waiting for approval</h3><p>{n} of {m} maintainer(s) must approve; run</p>{cmd}</section>",
            n = gate.required,
            m = gate.maintainers.len(),
            cmd = approve_command(dashboard, &gate.request),
        );
    }
    for job in run.jobs.iter().filter(|j| j.status == Status::Waiting) {
        if let Some(gate) = &job.gate {
            let _ = write!(
                out,
                "<section class=\"gate\" aria-label=\"Approval\"><h3>Waiting for approval: {job}</h3><p>{n} of {m} maintainer(s) must approve. \
                 <a href=\"/run/{id}/job/{job_url}\">See what is approved</a>, then run</p>{cmd}</section>",
                job = esc(&job.id),
                n = gate.required,
                m = gate.maintainers.len(),
                id = id.to_hex(),
                job_url = url_part(&job.id),
                cmd = approve_command(dashboard, &gate.request),
            );
        }
    }
    out.push_str("<div class=\"scroll\"><table class=\"jobs\"><thead><tr><th scope=\"col\">Job</th><th scope=\"col\">Mode</th><th scope=\"col\">Status</th><th scope=\"col\">Ran on</th><th scope=\"col\">Duration</th><th scope=\"col\">How it ended</th></tr></thead><tbody>");
    for job in &run.jobs {
        let providers: Vec<String> = job.providers.iter().map(|p| dvm_link(p)).collect();
        let _ = write!(
            out,
            "<tr data-job=\"{jid}\"><td><a href=\"/run/{id}/job/{job_url}\">{jid}</a></td><td>{mode}</td><td>{badge}</td>\
             <td>{providers}</td><td>{dur}</td><td>{line}</td></tr>",
            jid = esc(&job.id),
            id = id.to_hex(),
            job_url = url_part(&job.id),
            mode = esc(&job.mode.label()),
            badge = badge(job.status.class(), job.status.label()),
            providers = if providers.is_empty() {
                "—".into()
            } else {
                providers.join(" ")
            },
            dur = job.duration_ms().map(duration).unwrap_or_default(),
            line = esc(job.line.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></div>");
    if !run.releases.is_empty() {
        out.push_str("<h2>Release</h2><ul>");
        for release in &run.releases {
            let repo = run
                .run
                .repo_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = write!(
                out,
                "<li><a href=\"/releases?repo={repo}#release-{b}\">Release binding <code>{bs}</code></a> signed by {signer} {who}</li>",
                repo = url_part(&repo),
                b = esc(&release.binding),
                bs = esc(short(&release.binding)),
                signer = key(&release.signer),
                who = if release.quorum {
                    "(the mandate's quorum key)"
                } else {
                    "(the router)"
                },
            );
        }
        out.push_str("</ul>");
    }
    Ok(out)
}

pub(super) fn approve_command(dashboard: &Dashboard, request: &EventId) -> String {
    let mut command = format!("quorum approve {}", request.to_hex());
    for relay in &dashboard.relays {
        let _ = write!(command, " --relay {relay}");
    }
    command.push_str(" --key YOUR.nsec");
    format!(
        "<pre class=\"command\"><code>{}</code></pre>",
        esc(&command)
    )
}
