//! Releases per repository: each binding's files, their mirrors (re-hashed) and the verdict of
//! `quorum verify`'s own code as checks passed, failed or noted.

use std::collections::BTreeSet;
use std::fmt::Write;

use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Alphabet, Event, EventId, Filter, SingleLetterTag};
use quorum_proto::release::{RELEASE_BINDING, ReleaseBinding};
use quorum_router::verify::Verification;

use super::{badge, key};
use crate::html::{esc, short, time, url_part};
use crate::{Dashboard, UiError, fetch};

pub(super) async fn releases_index(dashboard: &Dashboard) -> Result<String, UiError> {
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

pub(super) async fn releases(
    dashboard: &Dashboard,
    repo: &RepoCoordinate,
) -> Result<String, UiError> {
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

/// Why a released file's bytes are (not) where its release says: one entry per URL tried.
pub type Mirrors = Vec<(String, Result<(), String>)>;

/// A computed verdict.
#[derive(Debug, Clone)]
pub struct FileVerdict {
    pub verification: Verification,
    pub mirrors: Mirrors,
}
