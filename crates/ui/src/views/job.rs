//! A job's page: its live tail and full log, its approval gate, and for a quorum job the
//! mandate, commit-reveal, tally, signing rounds and attestation (protocol §15).

use std::collections::BTreeSet;
use std::fmt::Write;

use quorum_proto::agreement::{
    COMMITMENT, QUORUM_ATTESTATION, QuorumAttestation, REVEAL, SignedCommitment, SignedReveal,
    Tally,
};
use quorum_proto::approval::{ApprovalRequest, Decision, Verdict};
use quorum_proto::mandate::{Keygen, MANDATE, Mandate};
use quorum_proto::nip90::JobRequest;
use quorum_proto::nostr::{Event, EventId, Filter, PublicKey, Timestamp};
use quorum_proto::quorum_msg::{QuorumMessage, SIGNING_REQUEST, SIGNING_ROUND1, SIGNING_ROUND2};

use super::runs::approve_command;
use super::{badge, dvm_link, key};
use crate::html::{ansi_to_html, duration, esc, short, time};
use crate::hub::{Mode, Status};
use crate::{Dashboard, UiError, fetch};

pub(super) async fn job_page(
    dashboard: &Dashboard,
    id: &EventId,
    job_id: &str,
) -> Result<String, UiError> {
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
    // Who runs the DVMs that ran it.
    let dvms: Vec<PublicKey> = job
        .providers
        .iter()
        .filter_map(|p| PublicKey::from_hex(p).ok())
        .collect();
    let operators = super::market::operators_of(dashboard, &dvms).await;
    if !operators.is_empty() {
        out.push_str("<table class=\"operators\"><caption>Who runs them</caption><tbody>");
        for dvm in &dvms {
            let _ = write!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                dvm_link(&dvm.to_hex()),
                super::market::operator_html(operators.get(dvm))
            );
        }
        out.push_str("</tbody></table>");
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
