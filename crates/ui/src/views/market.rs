//! The DVM market: announcements (NIP-89), their operators (§6.1) and their answers of the last
//! day.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use quorum_proto::nip89::{Announcement, HANDLER_INFORMATION};
use quorum_proto::nip90::{FeedbackStatus, JobFeedback};
use quorum_proto::nostr::{Event, Filter, Kind, PublicKey, Timestamp};
use quorum_proto::{kinds, operator};

use super::{badge, key};
use crate::html::esc;
use crate::{Dashboard, UiError, fetch};

pub(super) async fn market(dashboard: &Dashboard) -> Result<String, UiError> {
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
        let operator = operator_html(operators.get(dvm));
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

/// Who runs a DVM, as its announcement and the operator's list say together (§6.1).
pub(super) fn operator_html(claim: Option<&operator::OperatorClaim>) -> String {
    match claim {
        Some(operator::OperatorClaim::Confirmed(op)) => {
            format!("{} {}", key(&op.to_hex()), badge("success", "confirmed"))
        }
        Some(operator::OperatorClaim::Unconfirmed {
            claimed: Some(op),
            reason,
        }) => format!(
            "{} <span class=\"muted\" title=\"{}\">unconfirmed</span>",
            key(&op.to_hex()),
            esc(&reason.to_string())
        ),
        _ => "<span class=\"muted\">none named</span>".into(),
    }
}

/// Each of `dvms`' operator claim, from their announcements and their operators' lists.
pub(super) async fn operators_of(
    dashboard: &Dashboard,
    dvms: &[PublicKey],
) -> BTreeMap<PublicKey, operator::OperatorClaim> {
    if dvms.is_empty() {
        return BTreeMap::new();
    }
    let client = &dashboard.hub.client;
    let mut pool = fetch(client, operator::announcement_filter(dvms.iter().copied())).await;
    let claimed = operator::claimed_operators(dvms, &pool);
    if !claimed.is_empty() {
        pool.extend(fetch(client, operator::list_filter(claimed)).await);
    }
    operator::confirmed_operators(dvms, &pool)
}
