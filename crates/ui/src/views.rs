//! The pages: what each shows and where it reads it. Each view renders the content of the
//! page's `main`, which its live stream sends again whenever it changes.
//!
//! | view | reads |
//! |---|---|
//! | runs | the [`Hub`]'s runs (run-pipeline requests followed as `quorum follow` does) |
//! | run | one run: its DAG, jobs, who ran them, gates, releases |
//! | job | the live tail (NIP-90 `partial`), the full log (Blossom, re-hashed), the quorum's commitments, reveals, tally, attestation and mandate (§15), the gate (8701) |
//! | releases | release bindings (8700) of a repository, their files' mirrors (1063) and the verdict of `quorum verify`'s own code |
//! | market | DVM announcements (NIP-89), their operators (§6.1) and what they answered lately |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use quorum_proto::agreement::{
    COMMITMENT, QUORUM_ATTESTATION, QuorumAttestation, REVEAL, SignedCommitment, SignedReveal,
    Tally,
};
use quorum_proto::approval::{ApprovalRequest, Decision, Verdict};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::mandate::{Keygen, MANDATE, Mandate};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nip89::{Announcement, HANDLER_INFORMATION};
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobRequest};
use quorum_proto::nipc1::{CI_JOB_RESULT, CiJobResult, Conclusion};
use quorum_proto::nostr::{
    Alphabet, Event, EventId, Filter, Kind, PublicKey, SingleLetterTag, Timestamp,
};
use quorum_proto::quorum_msg::{QuorumMessage, SIGNING_REQUEST, SIGNING_ROUND1, SIGNING_ROUND2};
use quorum_proto::release::{RELEASE_BINDING, ReleaseBinding};
use quorum_proto::{kinds, operator};
use quorum_router::verify::Verification;

use crate::html::{ansi_to_html, duration, esc, short, time, url_part};
use crate::hub::{Mode, Status};
use crate::{Dashboard, UiError, fetch};

/// A page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Runs(RunFilter),
    Run(EventId),
    Job(EventId, String),
    /// A run known from its CI status events: coordinator and run id.
    Ci(PublicKey, String),
    Releases(Option<RepoCoordinate>),
    Market,
}

/// The runs list's filter (`?repo=&branch=&status=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub status: Option<String>,
}

impl View {
    /// The view at `path` (without `/live`) and `query`; `None` for no page.
    pub fn parse(path: &str, query: &BTreeMap<String, String>) -> Result<View, UiError> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let given = |key: &str| query.get(key).filter(|v| !v.is_empty()).cloned();
        let run_id = |text: &str| {
            EventId::from_hex(text)
                .map_err(|_| UiError::BadRequest(format!("{text:?} is not a run id")))
        };
        match parts.as_slice() {
            [""] | ["runs"] => Ok(View::Runs(RunFilter {
                repo: given("repo"),
                branch: given("branch"),
                status: given("status"),
            })),
            ["run", id] => Ok(View::Run(run_id(id)?)),
            ["run", id, "job", job] => Ok(View::Job(run_id(id)?, (*job).to_string())),
            ["releases"] => match given("repo") {
                None => Ok(View::Releases(None)),
                Some(repo) => RepoCoordinate::parse_user(&repo)
                    .map(|r| View::Releases(Some(r)))
                    .map_err(|_| {
                        UiError::BadRequest(format!(
                            "{repo:?} is not a repository (30617:<owner hex>:<d> or naddr1…)"
                        ))
                    }),
            },
            ["market"] => Ok(View::Market),
            ["ci", coordinator, run] => {
                let coordinator = PublicKey::from_hex(coordinator).map_err(|_| {
                    UiError::BadRequest(format!("{coordinator:?} is not a public key"))
                })?;
                Ok(View::Ci(coordinator, (*run).to_string()))
            }
            _ => Err(UiError::NotFound(path.to_string())),
        }
    }

    pub fn title(&self) -> String {
        match self {
            View::Runs(_) => "Runs".into(),
            View::Run(id) => format!("Run {}", short(&id.to_hex())),
            View::Job(_, job) => format!("Job {job}"),
            View::Ci(_, run) => format!("Run {}", short(run)),
            View::Releases(Some(repo)) => format!("Releases of {}", repo.identifier),
            View::Releases(None) => "Releases".into(),
            View::Market => "Market".into(),
        }
    }

    pub fn section(&self) -> crate::html::Section {
        use crate::html::Section;
        match self {
            View::Runs(_) | View::Run(_) | View::Job(..) | View::Ci(..) => Section::Runs,
            View::Releases(_) => Section::Releases,
            View::Market => Section::Market,
        }
    }
}

/// Renders the content of `view`'s `main`.
pub async fn render(dashboard: &Dashboard, view: &View) -> Result<String, UiError> {
    match view {
        View::Runs(filter) => Ok(runs(dashboard, filter)),
        View::Run(id) => run(dashboard, id),
        View::Job(id, job) => job_page(dashboard, id, job).await,
        View::Ci(coordinator, run) => ci_run(dashboard, coordinator, run).await,
        View::Releases(None) => releases_index(dashboard).await,
        View::Releases(Some(repo)) => releases(dashboard, repo).await,
        View::Market => market(dashboard).await,
    }
}

fn badge(class: &str, label: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(label))
}

fn dvm_link(key: &str) -> String {
    format!(
        "<a class=\"key\" href=\"/market#dvm-{k}\" title=\"{k}\">{s}</a>",
        k = esc(key),
        s = esc(short(key))
    )
}

fn key(key: &str) -> String {
    format!(
        "<code class=\"key\" title=\"{k}\">{s}</code>",
        k = esc(key),
        s = esc(short(key))
    )
}

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

fn runs(dashboard: &Dashboard, filter: &RunFilter) -> String {
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
async fn ci_run(
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

fn run(dashboard: &Dashboard, id: &EventId) -> Result<String, UiError> {
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

fn approve_command(dashboard: &Dashboard, request: &EventId) -> String {
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

async fn job_page(dashboard: &Dashboard, id: &EventId, job_id: &str) -> Result<String, UiError> {
    let run = dashboard
        .hub
        .run(id)
        .ok_or_else(|| UiError::NotFound(format!("run {id}")))?;
    let Some(job) = run.job(job_id).cloned() else {
        // Not started yet (or not in this run): the live page shows it once it starts.
        return Ok(format!(
            "<p><a href=\"/run/{rid}\">← {repo} at {commit}</a></p><h1>{job}</h1>\
             <p class=\"muted\">This job has not started yet.</p>",
            rid = id.to_hex(),
            repo = esc(&run.repository_label()),
            commit = esc(short(&run.run.commit)),
            job = esc(job_id),
        ));
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<p><a href=\"/run/{rid}\">← {repo} at {commit}</a></p>\
         <h1>{job} {badge}</h1><dl class=\"facts\"><dt>Mode</dt><dd>{mode}</dd><dt>Ran on</dt><dd>{providers}</dd>\
         <dt>Duration</dt><dd>{dur}</dd><dt>Requests</dt><dd>{requests}</dd></dl>",
        rid = id.to_hex(),
        repo = esc(&run.repository_label()),
        commit = esc(short(&run.run.commit)),
        job = esc(&job.id),
        badge = badge(job.status.class(), job.status.label()),
        mode = esc(&job.mode.label()),
        providers = {
            let list: Vec<String> = job.providers.iter().map(|p| dvm_link(p)).collect();
            if list.is_empty() {
                "—".into()
            } else {
                list.join(" ")
            }
        },
        dur = job
            .duration_ms()
            .map(duration)
            .unwrap_or_else(|| "—".into()),
        requests = {
            let list: Vec<String> = job.requests.iter().map(|r| key(&r.to_hex())).collect();
            if list.is_empty() {
                "—".into()
            } else {
                list.join(" ")
            }
        },
    );
    if let Some(line) = &job.line {
        let _ = write!(out, "<p class=\"line\">{}</p>", esc(line));
    }
    if let Some(gate) = &job.gate {
        out.push_str(&gate_section(dashboard, gate, job.status == Status::Waiting).await);
    }
    if job.mode == Mode::Quorum
        && let Some(request) = job.requests.first()
    {
        out.push_str(&quorum_section(dashboard, request).await);
    }
    if job.mode != Mode::Approval {
        let many = job.providers.len() > 1;
        let _ = write!(
            out,
            "<h2>Log</h2><p class=\"muted\">{what}</p><pre class=\"log\" id=\"log\" tabindex=\"0\" aria-label=\"Log of {job}\">",
            what = if matches!(job.status, Status::Running) {
                "Live tail (NIP-90 partial feedback), as the DVM sends it."
            } else {
                "The tail the DVM sent while the job ran."
            },
            job = esc(&job.id),
        );
        for (provider, line) in &job.log {
            if many {
                let _ = write!(out, "<span class=\"who\">{}</span> ", esc(short(provider)));
            }
            let _ = writeln!(out, "<span class=\"ln\">{}</span>", ansi_to_html(line));
        }
        out.push_str("</pre>");
        if let Some(report) = &job.report
            && job.status != Status::Running
        {
            match dashboard.full_log(&report.log).await {
                Ok(text) => {
                    let _ = write!(
                        out,
                        "<details open><summary>Full log from Blossom ({size} bytes, sha256 <code>{sha}</code>)</summary>\
                         <pre class=\"log\" id=\"full-log\" tabindex=\"0\">{log}</pre></details>",
                        size = report.log.size,
                        sha = esc(short(&report.log.sha256)),
                        log = ansi_to_html(&text),
                    );
                }
                Err(err) => {
                    let _ = write!(
                        out,
                        "<p class=\"alert\">The full log could not be read: {}</p>",
                        esc(&err)
                    );
                }
            }
        }
    }
    Ok(out)
}

async fn gate_section(dashboard: &Dashboard, gate: &crate::hub::Gate, pending: bool) -> String {
    let mut out =
        String::from("<section class=\"gate\" aria-label=\"Approval gate\"><h2>Approval</h2>");
    let events = fetch(&dashboard.hub.client, Filter::new().id(gate.request)).await;
    let Some((event, request)) = events
        .iter()
        .find(|e| e.id == gate.request)
        .and_then(|e| ApprovalRequest::from_event(e).ok().map(|r| (e, r)))
    else {
        out.push_str("<p class=\"muted\">The approval request is not on the relays.</p></section>");
        return out;
    };
    let _ = write!(
        out,
        "<p>{content}</p><dl class=\"facts\"><dt>Commit</dt><dd><code>{commit}</code></dd><dt>Needs</dt><dd>{required} of {n} maintainers</dd>\
         <dt>Maintainers asked</dt><dd>{maintainers}</dd><dt>Built by</dt><dd>{builders}</dd><dt>Expires</dt><dd>{exp}</dd></dl>\
         <table><caption>What is approved</caption><thead><tr><th scope=\"col\">Artifact</th><th scope=\"col\">sha256</th></tr></thead><tbody>",
        content = esc(&request.content),
        commit = esc(&request.commit),
        required = request.required,
        n = request.maintainers.len(),
        maintainers = request
            .maintainers
            .iter()
            .map(|m| key(&m.to_hex()))
            .collect::<Vec<_>>()
            .join(" "),
        builders = request
            .builders
            .iter()
            .map(|b| dvm_link(&b.to_hex()))
            .collect::<Vec<_>>()
            .join(" "),
        exp = time(request.expiration.as_secs()),
    );
    for artifact in &request.artifacts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code class=\"sha\">{}</code></td></tr>",
            esc(&artifact.name),
            artifact.sha256.to_hex()
        );
    }
    out.push_str("</tbody></table>");
    for (maintainer, approved) in &gate.verdicts {
        let _ = write!(
            out,
            "<p>{} {}</p>",
            key(maintainer),
            if *approved {
                badge("success", "approved")
            } else {
                badge("failure", "rejected")
            }
        );
    }
    if pending {
        out.push_str("<p>A maintainer approves with:</p>");
        out.push_str(&approve_command(dashboard, &gate.request));
        // For a NIP-07 signer in the browser: the verdict to sign, exactly as `quorum approve`
        // builds it (the page's script fills in the signer's key and the time).
        let verdict = Verdict::on(Decision::Approve, event, &request, request.expiration);
        if let Ok(builder) = verdict.to_event_builder() {
            let unsigned = builder.build(dashboard.hub.client.public_key());
            let template = serde_json::json!({
                "kind": unsigned.kind.as_u16(),
                "content": unsigned.content,
                "tags": unsigned.tags.iter().map(|t| t.as_slice().to_vec()).collect::<Vec<_>>(),
            });
            let _ = write!(
                out,
                "<p><button type=\"button\" class=\"nip07\" data-verdict=\"{}\" hidden>Approve with my browser signer (NIP-07)</button> \
                 <span class=\"nip07-result\" role=\"status\"></span></p>",
                esc(&template.to_string())
            );
        }
    }
    out.push_str("</section>");
    out
}

async fn quorum_section(dashboard: &Dashboard, request_id: &EventId) -> String {
    let client = &dashboard.hub.client;
    let mut out = String::from("<section class=\"quorum\" aria-label=\"Quorum\"><h2>Quorum</h2>");
    let Some(request) = dashboard.hub.request(request_id) else {
        out.push_str("<p class=\"muted\">Reading the job request…</p></section>");
        return out;
    };
    let Some(mandate_id) = JobRequest::from_event(&request).ok().and_then(|r| {
        r.param_value("mandate")
            .and_then(|m| EventId::from_hex(m).ok())
    }) else {
        out.push_str("<p class=\"muted\">The request names no mandate.</p></section>");
        return out;
    };
    let mandates = fetch(client, Filter::new().id(mandate_id).kind(MANDATE)).await;
    let Some((mandate_event, mandate)) = mandates
        .iter()
        .find(|e| e.id == mandate_id)
        .and_then(|e| Mandate::from_event(e).ok().map(|m| (e, m)))
    else {
        let _ = write!(
            out,
            "<p class=\"alert\">Mandate <code>{}</code> is not on the relays (it may have expired).</p></section>",
            mandate_id.to_hex()
        );
        return out;
    };
    let Some(roster) = mandate.roster() else {
        out.push_str("<p class=\"alert\">The mandate names no quorum key.</p></section>");
        return out;
    };
    let quorum = roster.quorum();
    let events = fetch(
        client,
        Filter::new().kinds([COMMITMENT, REVEAL]).event(*request_id),
    )
    .await;
    let commitments: Vec<SignedCommitment> = events
        .iter()
        .filter(|e| e.kind == COMMITMENT)
        .filter_map(|e| SignedCommitment::from_event(e).ok())
        .collect();
    let reveals: Vec<SignedReveal> = events
        .iter()
        .filter(|e| e.kind == REVEAL)
        .filter_map(|e| SignedReveal::from_event(e).ok())
        .collect();
    let attestation = fetch(
        client,
        Filter::new()
            .kind(QUORUM_ATTESTATION)
            .author(quorum)
            .event(*request_id),
    )
    .await
    .into_iter()
    .filter_map(|e| QuorumAttestation::from_event(&e).ok().map(|a| (e, a)))
    .find(|(_, a)| a.job == *request_id);
    let tally = Tally::new(roster.clone(), *request_id).evaluate(&commitments, &reveals);

    // The mandate: who authorised the key, t of n.
    let _ = write!(
        out,
        "<h3>Mandate</h3><dl class=\"facts\"><dt>Quorum key</dt><dd>{q}</dd><dt>Threshold</dt><dd id=\"threshold\">{t} of {n}</dd>\
         <dt>Signed by</dt><dd>{signer} (maintainer of {repo})</dd><dt>Key made by</dt><dd>{keygen}</dd>\
         <dt>Members</dt><dd>{members}</dd><dt>Mandate</dt><dd>{mid}, expires {exp}</dd></dl>",
        q = key(&quorum.to_hex()),
        t = roster.threshold(),
        n = roster.members().len(),
        signer = key(&mandate_event.pubkey.to_hex()),
        repo = esc(&mandate.repo.to_string()),
        keygen = match &mandate.keygen {
            Keygen::Dkg => "DKG among the members (nobody held the key)",
            Keygen::Dealer { .. } => "a trusted dealer (who held the whole key)",
            Keygen::Refresh => "refresh of an existing key",
        },
        members = mandate
            .members
            .iter()
            .map(|m| format!("#{} {}", m.index, dvm_link(&m.pubkey.to_hex())))
            .collect::<Vec<_>>()
            .join(", "),
        mid = key(&mandate_event.id.to_hex()),
        exp = time(mandate.expiration.as_secs()),
    );

    // The tally.
    let attested: BTreeSet<PublicKey> = attestation
        .as_ref()
        .map(|(_, a)| a.agreed.clone())
        .unwrap_or_default();
    let late: Vec<&PublicKey> = match &attestation {
        Some(_) => tally
            .agreed
            .iter()
            .filter(|m| !attested.contains(m))
            .collect(),
        None => Vec::new(),
    };
    let agreed: Vec<&PublicKey> = match &attestation {
        Some(_) => attested.iter().collect(),
        None => tally.agreed.iter().collect(),
    };
    let mut disagreed: Vec<PublicKey> = tally.disagreed.keys().copied().collect();
    disagreed.extend(tally.invalid.keys().copied());
    disagreed.extend(tally.equivocated.keys().copied());
    let list = |keys: &mut dyn Iterator<Item = &PublicKey>| {
        let keys: Vec<String> = keys.map(|k| dvm_link(&k.to_hex())).collect();
        if keys.is_empty() {
            "—".to_string()
        } else {
            keys.join(" ")
        }
    };
    let _ = write!(
        out,
        "<h3>Tally</h3><table class=\"tally\" id=\"tally\"><tbody>\
         <tr class=\"agreed\"><th scope=\"row\">Agreed</th><td class=\"count\">{na}</td><td>{a}</td></tr>\
         <tr class=\"disagreed\"><th scope=\"row\">Disagreed</th><td class=\"count\">{nd}</td><td>{d}</td></tr>\
         <tr class=\"silent\"><th scope=\"row\">Silent</th><td class=\"count\">{ns}</td><td>{s}</td></tr>\
         <tr class=\"late\"><th scope=\"row\">Late</th><td class=\"count\">{nl}</td><td>{l}</td></tr></tbody></table>",
        na = agreed.len(),
        a = list(&mut agreed.iter().copied()),
        nd = disagreed.len(),
        d = list(&mut disagreed.iter()),
        ns = tally.silent.len(),
        s = list(&mut tally.silent.iter()),
        nl = late.len(),
        l = list(&mut late.iter().copied()),
    );
    for (member, reason) in &tally.invalid {
        let _ = write!(
            out,
            "<p class=\"alert\">{}: reveal does not open its commitment: {}</p>",
            key(&member.to_hex()),
            esc(reason)
        );
    }
    for member in tally.equivocated.keys() {
        let _ = write!(
            out,
            "<p class=\"alert\">{} committed to two different results (equivocation).</p>",
            key(&member.to_hex())
        );
    }

    // Per file: who built which sha256.
    out.push_str("<h3>Files</h3><div class=\"scroll\"><table class=\"files\"><thead><tr><th scope=\"col\">File</th><th scope=\"col\">sha256</th><th scope=\"col\">Built by</th><th scope=\"col\"></th></tr></thead><tbody>");
    for (name, votes) in &tally.files {
        for (sha, members) in &votes.votes {
            let is_agreed = votes.agreed.as_ref() == Some(sha);
            let _ = write!(
                out,
                "<tr class=\"{class}\"><td>{name}</td><td><code class=\"sha\">{sha}</code></td><td>{by}</td><td>{mark}</td></tr>",
                class = if is_agreed { "agreed" } else { "other" },
                name = esc(name),
                sha = esc(&sha.to_hex()),
                by = list(&mut members.iter()),
                mark = if is_agreed {
                    badge(
                        "success",
                        &format!("agreed ({} ≥ {})", members.len(), roster.threshold()),
                    )
                } else {
                    badge("failure", "differs")
                },
            );
        }
    }
    out.push_str("</tbody></table></div>");

    // Commitments and reveals in time order.
    let mut timeline: Vec<&Event> = events.iter().collect();
    timeline.sort_by_key(|e| (e.created_at, e.kind.as_u16(), e.id));
    out.push_str("<h3>Commit-reveal</h3><ol class=\"timeline\">");
    for event in timeline {
        let what = if event.kind == COMMITMENT {
            match SignedCommitment::from_event(event) {
                Ok(c) => format!(
                    "committed to <code>{}</code>",
                    esc(short(&hex::encode(c.commitment().digest)))
                ),
                Err(err) => format!(
                    "sent a commitment that does not parse: {}",
                    esc(&err.to_string())
                ),
            }
        } else {
            match SignedReveal::from_event(event) {
                Ok(r) => format!(
                    "revealed {}",
                    r.reveal()
                        .result
                        .files
                        .iter()
                        .map(|(name, sha)| format!(
                            "{} = <code>{}</code>",
                            esc(name),
                            esc(short(&sha.to_hex()))
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(err) => format!(
                    "sent a reveal that does not parse: {}",
                    esc(&err.to_string())
                ),
            }
        };
        let _ = write!(
            out,
            "<li><time>{}</time> {} {}</li>",
            time(event.created_at.as_secs()),
            dvm_link(&event.pubkey.to_hex()),
            what
        );
    }
    out.push_str("</ol>");

    // The signing rounds: their envelopes are sealed to the members, but who sent which round
    // of which attempt (`session`) is in the clear. They name no job, so those shown are the
    // quorum's between the first reveal and the attestation.
    if let Some(first) = reveals.iter().map(|r| r.event().created_at).min() {
        let until = attestation
            .as_ref()
            .map(|(e, _)| e.created_at + 10u64)
            .unwrap_or_else(Timestamp::now);
        let mut rounds: Vec<QuorumMessage> = fetch(
            client,
            Filter::new()
                .kinds([SIGNING_ROUND1, SIGNING_REQUEST, SIGNING_ROUND2])
                .authors(roster.members().iter().copied())
                .since(first)
                .until(until),
        )
        .await
        .iter()
        .filter_map(|e| QuorumMessage::from_event(e).ok())
        .filter(|m| m.quorum == Some(quorum))
        .collect();
        // In the order of the protocol within a second: commitments, request, shares.
        let phase = |m: &QuorumMessage| match m.kind.kind() {
            k if k == SIGNING_ROUND1 => 0,
            k if k == SIGNING_REQUEST => 1,
            _ => 2,
        };
        rounds.sort_by_key(|m| (m.created_at, phase(m), m.id));
        if !rounds.is_empty() {
            out.push_str("<h3>Signing rounds</h3><ol class=\"timeline\" id=\"signing\">");
            for message in &rounds {
                let what = match message.kind.kind() {
                    k if k == SIGNING_ROUND1 => "sent its nonce commitments (round 1)",
                    k if k == SIGNING_REQUEST => "asked the chosen signers to sign (request)",
                    _ => "sent its signature shares (round 2)",
                };
                let _ = write!(
                    out,
                    "<li><time>{}</time> {} {what}, attempt <code>{}</code></li>",
                    time(message.created_at.as_secs()),
                    dvm_link(&message.sender.to_hex()),
                    esc(short(&message.session.to_hex())),
                );
            }
            out.push_str("</ol>");
        }
    }

    // The attestation.
    match &attestation {
        Some((event, a)) => {
            let _ = write!(
                out,
                "<h3>Attestation</h3><p id=\"attestation\">{} signed by the quorum key {} at {}: {} file(s), agreed by {}.</p>",
                key(&event.id.to_hex()),
                key(&quorum.to_hex()),
                time(event.created_at.as_secs()),
                a.files.files.len(),
                list(&mut a.agreed.iter()),
            );
        }
        None => out.push_str(
            "<h3>Attestation</h3><p class=\"muted\" id=\"attestation\">Not signed (yet).</p>",
        ),
    }
    out.push_str("</section>");
    out
}

async fn releases_index(dashboard: &Dashboard) -> Result<String, UiError> {
    let mut repos: BTreeSet<String> = dashboard
        .hub
        .runs()
        .iter()
        .filter_map(|r| r.run.repo_id.as_ref().map(ToString::to_string))
        .collect();
    for event in fetch(
        &dashboard.hub.client,
        Filter::new().kind(RELEASE_BINDING).limit(500),
    )
    .await
    {
        if let Ok(binding) = ReleaseBinding::from_event(&event) {
            repos.insert(binding.repo.to_string());
        }
    }
    let mut out = String::from("<h1>Releases</h1>");
    if repos.is_empty() {
        out.push_str(
            "<p class=\"muted\">No repository with runs or releases on these relays yet.</p>",
        );
        return Ok(out);
    }
    out.push_str("<ul class=\"repos\">");
    for repo in repos {
        let _ = write!(
            out,
            "<li><a href=\"/releases?repo={}\">{}</a></li>",
            url_part(&repo),
            esc(&repo)
        );
    }
    out.push_str("</ul>");
    Ok(out)
}

async fn releases(dashboard: &Dashboard, repo: &RepoCoordinate) -> Result<String, UiError> {
    let client = &dashboard.hub.client;
    let mut bindings: Vec<(Event, ReleaseBinding)> = fetch(
        client,
        Filter::new()
            .kind(RELEASE_BINDING)
            .custom_tag(SingleLetterTag::lowercase(Alphabet::A), repo.to_string())
            .limit(100),
    )
    .await
    .into_iter()
    .filter_map(|e| ReleaseBinding::from_event(&e).ok().map(|b| (e, b)))
    .filter(|(_, b)| b.repo == *repo)
    .collect();
    bindings.sort_by_key(|(e, _)| std::cmp::Reverse((e.created_at, e.id)));
    let mut out = format!(
        "<h1>Releases of <code>{}</code></h1>",
        esc(&repo.to_string())
    );
    if bindings.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-releases\">No release binding (kind 8700) of this repository on these relays.</p>");
        return Ok(out);
    }
    for (event, binding) in &bindings {
        let _ = write!(
            out,
            "<article class=\"release\" id=\"release-{id}\"><h2>{version} <span class=\"muted\">commit</span> <code>{commit}</code></h2>\
             <dl class=\"facts\"><dt>Binding</dt><dd>{bid}</dd><dt>Signed by</dt><dd>{signer}</dd><dt>Run</dt><dd>{run}</dd><dt>Published</dt><dd>{at}</dd></dl>",
            id = event.id.to_hex(),
            version = esc(binding.version.as_deref().unwrap_or("Release of")),
            commit = esc(short(&binding.commit)),
            bid = key(&event.id.to_hex()),
            signer = key(&event.pubkey.to_hex()),
            run = key(&binding.run),
            at = time(event.created_at.as_secs()),
        );
        for artifact in &binding.artifacts {
            let _ = write!(
                out,
                "<section class=\"artifact\"><h3>{name}</h3><p>sha256 <code class=\"sha\">{sha}</code></p>",
                name = esc(&artifact.name),
                sha = artifact.sha256.to_hex(),
            );
            out.push_str(&verdict_html(dashboard, repo, &event.id, &artifact.sha256));
            out.push_str("</section>");
        }
        out.push_str("</article>");
    }
    Ok(out)
}

/// The verdict of `quorum verify`'s code on one released file, as checks that passed or failed.
fn verdict_html(
    dashboard: &Dashboard,
    repo: &RepoCoordinate,
    binding: &EventId,
    sha: &Sha256Hex,
) -> String {
    let Some(verdict) = dashboard.verdict(repo, binding, sha) else {
        return "<p class=\"muted verdict pending\" role=\"status\">Verifying…</p>".into();
    };
    let mut out = String::new();
    let mirrors: Vec<String> = verdict
        .mirrors
        .iter()
        .map(|(url, result)| match result {
            Ok(()) => format!(
                "<li>✔ <a href=\"{u}\" rel=\"nofollow noreferrer\">{u}</a> serves these bytes</li>",
                u = esc(url)
            ),
            Err(err) => format!("<li>✘ {}: {}</li>", esc(url), esc(err)),
        })
        .collect();
    if !mirrors.is_empty() {
        let _ = write!(
            out,
            "<p>Mirrors:</p><ul class=\"mirrors\">{}</ul>",
            mirrors.concat()
        );
    }
    let _ = write!(
        out,
        "<div class=\"verdict {class}\" data-ok=\"{ok}\"><p class=\"verdict-line\">{mark}</p><ul class=\"checks\">",
        class = if verdict.verification.ok {
            "ok"
        } else {
            "failed"
        },
        ok = verdict.verification.ok,
        mark = if verdict.verification.ok {
            badge("success", "✔ verified (quorum verify)")
        } else {
            badge("failure", "✘ does not verify (quorum verify)")
        },
    );
    for (check, text) in checks(&verdict.verification) {
        let (class, mark, word) = match check {
            Check::Passed => ("pass", "✔", "passed:"),
            Check::Failed => ("fail", "✘", "failed:"),
            Check::Noted => ("note", "ℹ", "note:"),
        };
        let _ = write!(
            out,
            "<li class=\"{class}\"><span aria-hidden=\"true\">{mark}</span><span class=\"sr\">{word}</span> {t}</li>",
            t = esc(&text),
        );
    }
    out.push_str("</ul>");
    for warning in &verdict.verification.warnings {
        let _ = write!(out, "<p class=\"muted\">⚠ {}</p>", esc(warning));
    }
    out.push_str("</div>");
    out
}

/// How one line of a verdict reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Passed,
    Failed,
    /// Found, not required (the user's policy decides: `quorum verify --min-operators`).
    Noted,
}

/// The trust chain's checks (protocol §16, in `verify.rs`'s order): what held, from what the
/// verdict found, and every problem it names as a failed check.
pub fn checks(v: &Verification) -> Vec<(Check, String)> {
    let mut checks = Vec::new();
    if v.ok {
        if let Some(release) = &v.release {
            checks.push((
                Check::Passed,
                format!(
                    "release {} of {} lists these bytes",
                    short(release),
                    v.repo.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let (Some(attestation), Some(quorum)) = (&v.attestation, &v.quorum) {
            checks.push((
                Check::Passed,
                format!(
                    "attestation {} signed by the quorum key {}",
                    short(attestation),
                    short(quorum)
                ),
            ));
        }
        if let Some(source) = &v.source {
            checks.push((
                Check::Passed,
                format!(
                    "source: commit {} at {} of the owner's announced {}, state signed by {}",
                    short(v.commit.as_deref().unwrap_or("")),
                    if source.refs.is_empty() {
                        "a ref's history".to_string()
                    } else {
                        source.refs.join(", ")
                    },
                    source.url,
                    short(&source.state_signer)
                ),
            ));
        }
        if let Some(mandate) = &v.mandate {
            checks.push((
                Check::Passed,
                format!(
                    "mandate {} signed by maintainer {}{}, key made by {}",
                    short(mandate),
                    short(v.mandate_signer.as_deref().unwrap_or("")),
                    v.threshold
                        .map(|t| format!(", {} of {}", t.t, t.n))
                        .unwrap_or_default(),
                    v.keygen.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        if let Some(t) = v.threshold {
            checks.push((
                Check::Passed,
                format!("{} member(s) agreed, {} needed", v.agreed.len(), t.t),
            ));
        } else if !v.attested_by.is_empty() {
            checks.push((
                Check::Passed,
                format!("attested by {} builder(s)", v.attested_by.len()),
            ));
        }
        match v.distinct_operators {
            Some(0) | None if !v.agreed.is_empty() => checks.push((
                Check::Noted,
                "no operator of the agreeing members is confirmed (each DVM's announcement and its operator's list must name each other)".into(),
            )),
            Some(n) if n > 0 => checks.push((Check::Passed, format!("{n} distinct confirmed operator(s) among them"))),
            _ => {}
        }
        for (label, members) in [
            ("disagreed", &v.disagreed),
            ("were silent", &v.silent),
            ("revealed late", &v.late),
        ] {
            if !members.is_empty() {
                let keys: Vec<&str> = members.iter().map(|m| short(m)).collect();
                checks.push((
                    Check::Noted,
                    format!("{} member(s) {label}: {}", members.len(), keys.join(", ")),
                ));
            }
        }
    }
    checks.extend(v.problems.iter().map(|p| (Check::Failed, p.clone())));
    checks
}

async fn market(dashboard: &Dashboard) -> Result<String, UiError> {
    let client = &dashboard.hub.client;
    let events = fetch(client, Filter::new().kind(HANDLER_INFORMATION).limit(500)).await;
    // Newest announcement per (DVM, role).
    let mut newest: BTreeMap<(PublicKey, String), (Event, Announcement)> = BTreeMap::new();
    for event in &events {
        let Ok(announcement) = Announcement::from_event(event) else {
            continue;
        };
        let slot = (event.pubkey, announcement.identifier.clone());
        let keep = newest.get(&slot).is_none_or(|(e, _)| {
            (e.created_at, std::cmp::Reverse(e.id))
                < (event.created_at, std::cmp::Reverse(event.id))
        });
        if keep {
            newest.insert(slot, (event.clone(), announcement));
        }
    }
    let dvms: Vec<PublicKey> = newest
        .keys()
        .map(|(k, _)| *k)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut pool = events.clone();
    let claimed = operator::claimed_operators(&dvms, &pool);
    if !claimed.is_empty() {
        pool.extend(fetch(client, operator::list_filter(claimed)).await);
    }
    let operators = operator::confirmed_operators(&dvms, &pool);
    // What each answered in the last day: results and errors on the record.
    let mut record: BTreeMap<PublicKey, (usize, usize)> = BTreeMap::new();
    if !dvms.is_empty() {
        let since = Timestamp::now() - 24 * 3600u64;
        let result_kinds: BTreeSet<Kind> = newest
            .values()
            .flat_map(|(_, a)| a.kinds.iter().filter_map(|k| kinds::result_kind_for(*k)))
            .chain([kinds::JOB_FEEDBACK])
            .collect();
        let answers = fetch(
            client,
            Filter::new()
                .authors(dvms.clone())
                .kinds(result_kinds)
                .since(since)
                .limit(2000),
        )
        .await;
        for answer in answers {
            let kind = answer.kind.as_u16();
            let entry = record.entry(answer.pubkey).or_default();
            if (6000..7000).contains(&kind) {
                entry.0 += 1;
            } else if answer.kind == kinds::JOB_FEEDBACK
                && JobFeedback::from_event(&answer).is_ok_and(|f| f.status == FeedbackStatus::Error)
            {
                entry.1 += 1;
            }
        }
    }
    let mut out = String::from(
        "<h1>Market</h1><p class=\"muted\">DVMs these relays announce (NIP-89, kind 31990). An operator counts only when the DVM names it and the operator's own list names the DVM.</p>",
    );
    if newest.is_empty() {
        out.push_str("<p class=\"muted\">No DVM announcement on these relays.</p>");
        return Ok(out);
    }
    out.push_str("<div class=\"scroll\"><table class=\"market\"><thead><tr><th scope=\"col\">DVM</th><th scope=\"col\">Serves</th><th scope=\"col\">Price</th><th scope=\"col\">Operator</th><th scope=\"col\">Machine</th><th scope=\"col\">Last 24 h</th></tr></thead><tbody>");
    for ((dvm, _), (_, announcement)) in &newest {
        let hex = dvm.to_hex();
        let operator = match operators.get(dvm) {
            Some(operator::OperatorClaim::Confirmed(op)) => {
                format!("{} {}", key(&op.to_hex()), badge("success", "confirmed"))
            }
            Some(operator::OperatorClaim::Unconfirmed {
                claimed: Some(op),
                reason,
            }) => {
                format!(
                    "{} <span class=\"muted\" title=\"{}\">unconfirmed</span>",
                    key(&op.to_hex()),
                    esc(&reason.to_string())
                )
            }
            _ => "<span class=\"muted\">none named</span>".into(),
        };
        let caps = &announcement.offer.capabilities;
        let (results, errors) = record.get(dvm).copied().unwrap_or_default();
        let _ = write!(
            out,
            "<tr id=\"dvm-{hex}\"><td><strong class=\"dvm-name\">{name}</strong> {k}<br><span class=\"muted about\">{about}</span></td>\
             <td>{kinds}</td><td>{price}</td><td>{operator}</td><td>{os}/{arch}, sandbox {sandbox}</td><td>{results} result(s), {errors} error(s)</td></tr>",
            name = esc(&announcement.name),
            k = key(&hex),
            about = esc(&announcement.about),
            kinds = announcement
                .kinds
                .iter()
                .map(|k| k.as_u16().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            price = match announcement.offer.price.msats_per_job {
                0 => "free".to_string(),
                msats => format!("{msats} msat per job"),
            },
            os = esc(&caps.os),
            arch = esc(&caps.arch),
            sandbox = esc(&caps.sandbox),
        );
    }
    out.push_str("</tbody></table></div>");
    Ok(out)
}

/// Why a released file's bytes are (not) where its release says: one entry per URL tried.
pub type Mirrors = Vec<(String, Result<(), String>)>;

/// A computed verdict.
#[derive(Debug, Clone)]
pub struct FileVerdict {
    pub verification: Verification,
    pub mirrors: Mirrors,
}
