//! `quorum operator publish`: an operator signs the list of the DVMs it runs (NIP-51 follow set,
//! kind 30000, `d` = `quorum-ci-dvms`). `quorum operator show`: which DVMs an operator
//! confirms, and which announcements claim it. Also the relay look-up of members' operators
//! that `quorum mandate create` and the embedded network use, and how its outcome is told.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use quorum_dvm::client::JobClient;
use quorum_proto::nip89::Announcement;
use quorum_proto::nostr::{Event, Filter, Keys, PublicKey, RelayUrl};
use quorum_proto::operator::{
    self, OperatorClaim, OperatorList, UnconfirmedReason, announcement_filter, claimed_operators,
    confirmed_operators, list_filter,
};
use serde_json::json;

use super::signer::Signer;
use crate::cli::{OperatorCommand, OperatorPublishArgs, OperatorShowArgs};

/// How long one relay query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(command: OperatorCommand) -> anyhow::Result<ExitCode> {
    match command {
        OperatorCommand::Publish(args) => publish(args).await,
        OperatorCommand::Show(args) => show(args).await,
    }
}

/// `--flag VALUE`: an npub or 64 hex characters.
pub(crate) fn parse_key(flag: &str, text: &str) -> anyhow::Result<PublicKey> {
    PublicKey::parse(text).with_context(|| format!("{flag} {text:?} is neither an npub nor 64 hex"))
}

async fn publish(args: OperatorPublishArgs) -> anyhow::Result<ExitCode> {
    let relays = super::relay_urls(&args.relays)?;
    let mut dvms = Vec::with_capacity(args.dvms.len());
    for text in &args.dvms {
        let dvm = parse_key("--dvm", text)?;
        if dvms.contains(&dvm) {
            anyhow::bail!("--dvm {text:?} is given twice");
        }
        dvms.push(dvm);
    }
    let signer = Signer::from_args(&args.signer).await?;
    let signed = async {
        let operator = signer.public_key().await?;
        let event = signer
            .sign(OperatorList::new(dvms.iter().copied()).to_event_builder())
            .await?;
        anyhow::Ok((operator, event))
    }
    .await;
    signer.shutdown().await;
    let (operator, event) = signed?;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let outcome = async {
        client
            .publish_signed(&event)
            .await
            .context("publishing the list")?;
        // The other half: does each DVM name this operator?
        lookup(&client, &dvms, Duration::ZERO).await
    }
    .await;
    client.shutdown().await;
    let claims = outcome?.claims;
    if args.json {
        let json = json!({
            "operator": operator.to_hex(),
            "list": event.id.to_hex(),
            "dvms": claims_json(&claims),
        });
        super::announce(&json.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    super::announce(&format!("operator: {}", operator.to_hex()));
    super::announce(&format!(
        "list: {} names {} DVMs",
        event.id.to_hex(),
        dvms.len()
    ));
    for (dvm, claim) in &claims {
        match claim {
            OperatorClaim::Confirmed(_) => super::announce(&format!("confirmed: {}", dvm.to_hex())),
            // The list is out, so what is missing is the DVM's side.
            OperatorClaim::Unconfirmed { claimed, reason } => {
                let why = match claimed {
                    Some(other) if *other != operator => {
                        format!("its announcement names operator {}", other.to_hex())
                    }
                    _ => reason.to_string(),
                };
                super::announce(&format!(
                    "not yet confirmed: {} ({why}): run it with --operator {}",
                    dvm.to_hex(),
                    operator.to_hex()
                ))
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(args: OperatorShowArgs) -> anyhow::Result<ExitCode> {
    let operator = parse_key("operator", &args.operator)?;
    let relays = super::relay_urls(&args.relays)?;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let found = async {
        // The list, and the announcements that claim this operator (by their marked `p`).
        let mut events = client.fetch(list_filter([operator]), QUERY_TIMEOUT).await?;
        let claiming = client
            .fetch(
                Filter::new()
                    .kind(quorum_proto::nip89::HANDLER_INFORMATION)
                    .pubkey(operator),
                QUERY_TIMEOUT,
            )
            .await?;
        let listed: BTreeSet<PublicKey> = match operator::newest_list(&operator, &events) {
            Some((_, Ok(list))) => list.dvms,
            _ => BTreeSet::new(),
        };
        let dvms: Vec<PublicKey> = listed
            .iter()
            .copied()
            .chain(claiming.iter().map(|e| e.pubkey))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Each DVM's newest announcement, which may name someone else by now.
        if !dvms.is_empty() {
            events.extend(
                client
                    .fetch(announcement_filter(dvms.iter().copied()), QUERY_TIMEOUT)
                    .await?,
            );
        }
        anyhow::Ok((events, listed, dvms))
    }
    .await;
    client.shutdown().await;
    let (events, listed, dvms) = found?;
    let list = operator::newest_list(&operator, &events);
    let claims = confirmed_operators(&dvms, &events);
    let names = names(&dvms, &events);
    let row = |dvm: &PublicKey| {
        let claim = &claims[dvm];
        let state = match claim {
            OperatorClaim::Confirmed(_) => "confirmed".to_string(),
            OperatorClaim::Unconfirmed { reason, .. } => match claim.claimed() {
                Some(other) if other != operator => {
                    format!(
                        "not confirmed: its announcement names operator {}",
                        other.to_hex()
                    )
                }
                _ => format!("not confirmed: {reason}"),
            },
        };
        (claim, state)
    };
    if args.json {
        let rows: Vec<serde_json::Value> = dvms
            .iter()
            .map(|dvm| {
                let (claim, state) = row(dvm);
                json!({
                    "dvm": dvm.to_hex(),
                    "name": names.get(dvm),
                    "listed": listed.contains(dvm),
                    "claims": claim.claimed() == Some(operator),
                    "confirmed": claim.confirmed() == Some(operator),
                    "state": state,
                })
            })
            .collect();
        let json = json!({
            "operator": operator.to_hex(),
            "list": list.as_ref().map(|(event, parsed)| json!({
                "id": event.id.to_hex(),
                "created_at": event.created_at.as_secs(),
                "error": parsed.as_ref().err().map(ToString::to_string),
            })),
            "dvms": rows,
        });
        super::announce(&json.to_string());
        return Ok(ExitCode::SUCCESS);
    }
    super::announce(&format!("operator: {}", operator.to_hex()));
    match &list {
        None => super::announce(&format!(
            "list: none on {} (kind 30000, d {:?}): `quorum operator publish` makes it",
            args.relays.join(", "),
            operator::LIST_IDENTIFIER
        )),
        Some((event, Ok(parsed))) => super::announce(&format!(
            "list: {} (created_at {}) names {} DVMs",
            event.id.to_hex(),
            event.created_at.as_secs(),
            parsed.dvms.len()
        )),
        Some((event, Err(err))) => {
            super::announce(&format!("list: {} is invalid: {err}", event.id.to_hex()))
        }
    }
    if dvms.is_empty() {
        super::announce("no DVM is listed by this operator or claims it");
    }
    for dvm in &dvms {
        let (_, state) = row(dvm);
        let name = names
            .get(dvm)
            .map(|n| format!(" ({})", super::sanitize(n)))
            .unwrap_or_default();
        let side = match (
            listed.contains(dvm),
            claims[dvm].claimed() == Some(operator),
        ) {
            (true, true) => "listed, claims it",
            (true, false) => "listed",
            (false, _) => "claims it, not listed",
        };
        super::announce(&format!("dvm {}{name}: {side}; {state}", dvm.to_hex()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The names DVMs give themselves in their newest announcements (network text: sanitise
/// before printing).
fn names(dvms: &[PublicKey], events: &[Event]) -> BTreeMap<PublicKey, String> {
    operator::newest_announcements(dvms, events)
        .into_iter()
        .map(
            |(dvm, (_, announcement)): (PublicKey, (&Event, Announcement))| {
                (dvm, announcement.name)
            },
        )
        .collect()
}

/// What the relays say about who runs each of some DVMs.
pub(crate) struct Operators {
    pub claims: BTreeMap<PublicKey, OperatorClaim>,
}

/// Looks up who runs each of `dvms`: their announcements, then the lists of the operators they
/// name (two queries, [`quorum_proto::operator`]). A DVM that has just started may not have
/// announced yet: while any has no announcement, asks again until `patience` has passed.
pub(crate) async fn lookup(
    client: &JobClient,
    dvms: &[PublicKey],
    patience: Duration,
) -> anyhow::Result<Operators> {
    let deadline = Instant::now() + patience;
    loop {
        let mut events = client
            .fetch(announcement_filter(dvms.iter().copied()), QUERY_TIMEOUT)
            .await
            .context("looking up the DVMs' announcements")?;
        let operators = claimed_operators(dvms, &events);
        if !operators.is_empty() {
            events.extend(
                client
                    .fetch(list_filter(operators), QUERY_TIMEOUT)
                    .await
                    .context("looking up the operators' lists")?,
            );
        }
        let claims = confirmed_operators(dvms, &events);
        let silent = claims.values().any(|claim| {
            matches!(
                claim,
                OperatorClaim::Unconfirmed {
                    reason: UnconfirmedReason::NoAnnouncement,
                    ..
                }
            )
        });
        if !silent || Instant::now() >= deadline {
            return Ok(Operators { claims });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// [`lookup`] on a client of its own.
pub(crate) async fn lookup_on(
    relays: &[RelayUrl],
    dvms: &[PublicKey],
    patience: Duration,
) -> anyhow::Result<Operators> {
    let client = JobClient::connect(relays, Keys::generate()).await?;
    let found = lookup(&client, dvms, patience).await;
    client.shutdown().await;
    found
}

impl Operators {
    /// The distinct confirmed operators.
    pub fn distinct(&self) -> BTreeSet<PublicKey> {
        operator::distinct_confirmed(self.claims.values())
    }

    /// The fewest operators that could sign together with `threshold` shares.
    pub fn fewest_signing(&self, threshold: u16) -> usize {
        operator::fewest_signing_operators(self.claims.values(), usize::from(threshold))
    }

    /// One line per member: whose it is, or why that is not known.
    pub fn lines(&self) -> Vec<String> {
        self.claims
            .iter()
            .map(|(dvm, claim)| match claim {
                OperatorClaim::Confirmed(operator) => {
                    format!(
                        "{}: operator {} (confirmed)",
                        dvm.to_hex(),
                        operator.to_hex()
                    )
                }
                OperatorClaim::Unconfirmed { claimed, reason } => format!(
                    "{}: operator {} (not confirmed: {reason})",
                    dvm.to_hex(),
                    claimed.map_or("unknown".into(), |o| o.to_hex())
                ),
            })
            .collect()
    }

    /// One sentence on how the members are spread over operators, for a quorum of `threshold`.
    pub fn summary(&self, threshold: u16) -> String {
        let members = self.claims.len();
        let distinct = self.distinct();
        let unconfirmed = self
            .claims
            .values()
            .filter(|c| c.confirmed().is_none())
            .count();
        let fewest = self.fewest_signing(threshold);
        if unconfirmed == 0 && distinct.len() == 1 {
            let only = distinct.first().expect("one operator");
            return format!(
                "all {members} members are run by one operator, {}: it alone could sign",
                only.to_hex()
            );
        }
        let mut text = format!(
            "{} distinct confirmed operator{} among {members} members",
            distinct.len(),
            if distinct.len() == 1 { "" } else { "s" }
        );
        if unconfirmed > 0 {
            text.push_str(&format!(", {unconfirmed} unconfirmed"));
        }
        text.push_str(&format!(
            "; the fewest that could sign together: {fewest} (threshold {threshold})"
        ));
        text
    }

    /// For JSON output: each member's operator and whether it is confirmed.
    pub fn json(&self, threshold: u16) -> serde_json::Value {
        json!({
            "members": claims_json(&self.claims),
            "distinct": self.distinct().iter().map(PublicKey::to_hex).collect::<Vec<_>>(),
            "fewest_signing": self.fewest_signing(threshold),
        })
    }
}

fn claims_json(claims: &BTreeMap<PublicKey, OperatorClaim>) -> Vec<serde_json::Value> {
    claims
        .iter()
        .map(|(dvm, claim)| {
            let reason = match claim {
                OperatorClaim::Confirmed(_) => None,
                OperatorClaim::Unconfirmed { reason, .. } => Some(reason.to_string()),
            };
            json!({
                "dvm": dvm.to_hex(),
                "operator": claim.claimed().map(|o| o.to_hex()),
                "confirmed": claim.confirmed().is_some(),
                "reason": reason,
            })
        })
        .collect()
}
