//! `quorum mandate create`: make a quorum key among member DVMs and publish the mandate (kind
//! 8704) that authorises it. With a DKG (the default) the members make the key among
//! themselves and nobody ever holds it; with `--dealer` this machine deals it and holds the
//! whole key once. `quorum mandate refresh`: the members renew their shares of the same key.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_consensus::keygen::{self, KeygenConfig};
use quorum_dvm::client::JobClient;
use quorum_proto::mandate::{Keygen, Mandate, MandateRules, SourceRule};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Event, EventId, Filter, Keys, PublicKey, RelayUrl, Timestamp};

use super::operator::Operators;
use super::signer::Signer;

use crate::cli::{MandateCommand, MandateCreateArgs, MandateRefreshArgs};

pub async fn run(command: MandateCommand) -> anyhow::Result<ExitCode> {
    match command {
        MandateCommand::Create(args) => create(*args).await,
        MandateCommand::Refresh(args) => refresh(args).await,
    }
}

/// The kinds the quorum may sign: `--allow`, or what the covered quorum jobs of the pipeline in
/// `--dir` sign (said on stderr), or attestations alone without a pipeline file there.
fn allowed_kinds(args: &MandateCreateArgs) -> anyhow::Result<std::collections::BTreeSet<u16>> {
    if !args.allow.is_empty() {
        return Ok(args.allow.iter().copied().collect());
    }
    let path = args.dir.join(&args.pipeline);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "note: no {} here: the quorum may sign attestations (8708) only; pass --allow 8700 \
             for releases",
            path.display()
        );
        return Ok([quorum_proto::agreement::QUORUM_ATTESTATION.as_u16()].into());
    };
    let plan = quorum_pipeline::parse(&args.pipeline, &text).map_err(|diagnostics| {
        anyhow::anyhow!(
            "{diagnostics}\n(the pipeline sets what the quorum may sign; or pass --allow)"
        )
    })?;
    let kinds = plan.quorum_signing_kinds(&args.jobs);
    if kinds.is_empty() {
        bail!(
            "{} has no quorum job{}: nothing for a quorum to sign",
            path.display(),
            if args.jobs.is_empty() {
                String::new()
            } else {
                format!(" among {}", args.jobs.join(", "))
            }
        );
    }
    eprintln!(
        "allow: {} (what the quorum jobs of {} sign)",
        kinds
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        path.display()
    );
    Ok(kinds)
}

/// Publishes the current mandate again with `keygen refresh` and waits until every member
/// announced the refreshed key, which must be the same.
async fn refresh(args: MandateRefreshArgs) -> anyhow::Result<ExitCode> {
    let id = EventId::parse(&args.mandate).with_context(|| {
        format!(
            "--mandate {:?} is not an event id (hex or nevent)",
            args.mandate
        )
    })?;
    let relays = super::relay_urls(&args.relays)?;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let found = client
        .fetch(
            Filter::new().id(id).kind(quorum_proto::mandate::MANDATE),
            Duration::from_secs(10),
        )
        .await;
    client.shutdown().await;
    let Some(current) = found?.into_iter().next() else {
        bail!("no mandate {id} on {}", args.relays.join(", "));
    };
    let mut mandate = Mandate::from_event(&current).context("the current mandate is invalid")?;
    let quorum = mandate
        .quorum
        .context("that mandate names no quorum key (a DKG proposal?): nothing to refresh")?;
    if mandate.expiration <= Timestamp::now() {
        bail!("mandate {id} has expired: create a new quorum instead");
    }
    let signer = Signer::from_args(&args.signer).await?;
    mandate.keygen = Keygen::Refresh;
    let published = sign_and_publish(&relays, &signer, &mandate).await;
    signer.shutdown().await;
    let event = published.context("publishing the refresh mandate")?;
    let members: Vec<PublicKey> = mandate.members.iter().map(|m| m.pubkey).collect();
    eprintln!(
        "refresh mandate {} published; waiting up to {} s for all {} members to announce the \
         refreshed key",
        event.id,
        args.wait,
        members.len()
    );
    let announced =
        keygen::await_group_key(&relays, event.id, &members, Duration::from_secs(args.wait))
            .await
            .context("the members did not all refresh their shares")?;
    if announced != quorum {
        bail!("the members announced quorum key {announced}, not {quorum}: the refresh failed");
    }
    if args.json {
        let json = serde_json::json!({
            "quorum": quorum.to_hex(),
            "mandate": event.id.to_hex(),
            "refreshed": members.iter().map(PublicKey::to_hex).collect::<Vec<_>>(),
        });
        super::announce(&json.to_string());
    } else {
        super::announce(&format!("quorum: {} (unchanged)", quorum.to_hex()));
        super::announce(&format!("mandate: {}", event.id.to_hex()));
        super::announce(&format!("refreshed: all {} members", members.len()));
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(args: MandateCreateArgs) -> anyhow::Result<ExitCode> {
    let relays = super::relay_urls(&args.relays)?;
    let repo = repo(&args.repo)?;
    let mut pubkeys = Vec::with_capacity(args.members.len());
    for text in &args.members {
        let pubkey = PublicKey::parse(text)
            .with_context(|| format!("--member {text:?} is neither an npub nor 64 hex"))?;
        if pubkeys.contains(&pubkey) {
            bail!("--member {text:?} is given twice");
        }
        pubkeys.push(pubkey);
    }
    let lifetime = duration(&args.expires_in)
        .with_context(|| format!("--expires-in {:?}", args.expires_in))?;
    let mut mandate = Mandate {
        repo,
        pipeline: args.pipeline.clone(),
        jobs: args.jobs.clone(),
        quorum: None,
        members: keygen::new_members(&pubkeys),
        threshold: args.threshold,
        keygen: Keygen::Dkg,
        allow: allowed_kinds(&args)?,
        expiration: Timestamp::now() + lifetime.as_secs(),
        rules: rules(&args)?,
        content: format!("quorum for {}", args.pipeline),
    };
    mandate
        .validate()
        .context("the mandate would be invalid; nothing was published")?;
    let operators = check_operators(&relays, &pubkeys, &args).await?;
    let signer = Signer::open(args.key.as_deref(), args.bunker.as_deref()).await?;

    let (event, proposal) = if args.dealer {
        let maintainer = signer
            .local()
            .context("--dealer needs a local key (--key)")?;
        let event =
            keygen::deal_and_publish(&relays, maintainer, mandate, &KeygenConfig::default())
                .await
                .context("dealing the quorum key")?;
        (event, None)
    } else {
        // The proposal: the mandate without a key, asking the members for a DKG.
        let proposal = {
            let mut proposal = mandate.clone();
            proposal.quorum = None;
            proposal.keygen = Keygen::Dkg;
            sign_and_publish(&relays, &signer, &proposal)
                .await
                .context("publishing the DKG proposal")?
        };
        eprintln!(
            "proposal {} published; waiting up to {} s for all {} members to announce the key \
             they derived",
            proposal.id,
            args.wait,
            pubkeys.len()
        );
        let quorum = keygen::await_group_key(
            &relays,
            proposal.id,
            &pubkeys,
            Duration::from_secs(args.wait),
        )
        .await
        .context(
            "no quorum key was made and no mandate was signed (a member that sends nothing is \
             offline, does not serve key generation, or refused the proposal: see its log)",
        )?;
        mandate.quorum = Some(quorum);
        let event = sign_and_publish(&relays, &signer, &mandate)
            .await
            .context("publishing the mandate")?;
        (event, Some(proposal))
    };
    signer.shutdown().await;
    print(&args, &event, proposal.as_ref(), &operators)?;
    Ok(ExitCode::SUCCESS)
}

/// Looks up who runs the members and refuses a quorum that fewer than `t` operators could sign
/// for together (one operator running several members, or members whose operator is not
/// confirmed), unless `--allow-same-operator`.
async fn check_operators(
    relays: &[RelayUrl],
    members: &[PublicKey],
    args: &MandateCreateArgs,
) -> anyhow::Result<Operators> {
    // Members started just now may not have announced themselves yet.
    let operators = super::operator::lookup_on(relays, members, Duration::from_secs(5))
        .await
        .context("looking up the members' operators; nothing was published")?;
    let t = args.threshold;
    if operators.fewest_signing(t) >= usize::from(t) {
        return Ok(operators);
    }
    let summary = operators.summary(t);
    if args.allow_same_operator {
        eprintln!("note: --allow-same-operator: {summary}");
        return Ok(operators);
    }
    let mut text = format!(
        "fewer than {t} operators could sign for a {t}-of-{} quorum of these members: \
         {summary}\n",
        members.len()
    );
    for line in operators.lines() {
        text.push_str(&format!("  member {line}\n"));
    }
    text.push_str(&format!(
        "To fix it, choose members run by different operators, so that any {t} of them are {t} \
         operators: each operator names itself in its DVM's announcement (`quorum dvm runner \
         --operator NPUB`) and confirms the DVM with its own key (`quorum operator publish --key \
         OPERATOR_KEY --dvm DVM…`); `quorum operator show NPUB` shows what an operator \
         confirms. Or pass --allow-same-operator to make this quorum anyway. Nothing was \
         published."
    ));
    bail!(text)
}

/// Signs `mandate` with the maintainer's key or bunker and publishes it.
async fn sign_and_publish(
    relays: &[RelayUrl],
    signer: &Signer,
    mandate: &Mandate,
) -> anyhow::Result<Event> {
    let event = signer.sign(mandate.to_event_builder()?).await?;
    let client = JobClient::connect(relays, Keys::generate()).await?;
    let published = client.publish_signed(&event).await;
    client.shutdown().await;
    published?;
    Ok(event)
}

fn print(
    args: &MandateCreateArgs,
    event: &Event,
    proposal: Option<&Event>,
    operators: &Operators,
) -> anyhow::Result<()> {
    let mandate = Mandate::from_event(event).context("the published mandate")?;
    let quorum = mandate
        .quorum
        .context("the published mandate names no key")?;
    let dealer_note = "the dealer (this machine) held the whole quorum key once, while dealing; \
                       the shares were sent to the members and wiped from memory";
    let mut members = mandate.members.clone();
    members.sort_by_key(|m| m.index);
    if args.json {
        if args.dealer {
            eprintln!("note: {dealer_note}");
        }
        let json = serde_json::json!({
            "quorum": quorum.to_hex(),
            "threshold": mandate.threshold,
            "members": members.iter().map(|m| m.pubkey.to_hex()).collect::<Vec<_>>(),
            "mandate": event.id.to_hex(),
            "proposal": proposal.map(|p| p.id.to_hex()),
            "keygen": mandate.keygen.name(),
            "operators": operators.json(mandate.threshold),
        });
        super::announce(&json.to_string());
        return Ok(());
    }
    super::announce(&format!("quorum: {}", quorum.to_hex()));
    super::announce(&format!("mandate: {}", event.id.to_hex()));
    if let Some(proposal) = proposal {
        super::announce(&format!("proposal: {}", proposal.id.to_hex()));
    }
    super::announce(&format!(
        "threshold: {} of {}",
        mandate.threshold,
        members.len()
    ));
    for m in &members {
        super::announce(&format!("member {}: {}", m.index, m.pubkey.to_hex()));
    }
    super::announce(&format!(
        "operators: {}",
        operators.summary(mandate.threshold)
    ));
    for line in operators.lines() {
        super::announce(&format!("operator of {line}"));
    }
    if args.dealer {
        super::announce(&format!("note: {dealer_note}"));
    }
    Ok(())
}

/// `--repo`: an naddr of a repository announcement, or its coordinate `30617:<owner hex>:<id>`.
fn repo(text: &str) -> anyhow::Result<RepoCoordinate> {
    RepoCoordinate::parse_user(text)
        .with_context(|| format!("--repo {text:?} is neither an naddr nor 30617:<owner hex>:<id>"))
}

/// A duration such as `90d`, `12h`, `30m`, `45s`, `2w` (a bare number is seconds).
fn duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("{text:?}: the unit must be s, m, h, d or w"),
    };
    let total = number
        .checked_mul(seconds)
        .filter(|s| *s > 0)
        .with_context(|| format!("{text:?} is not a usable duration"))?;
    Ok(Duration::from_secs(total))
}

/// The mandate's rules from `--requester`, `--source` and `--inner`.
fn rules(args: &MandateCreateArgs) -> anyhow::Result<MandateRules> {
    let key = |flag: &str, text: &str| {
        PublicKey::parse(text)
            .with_context(|| format!("{flag} {text:?} is neither an npub nor 64 hex characters"))
    };
    let mut rules = MandateRules {
        source: match args.source.as_str() {
            "ancestor" => SourceRule::Ancestor,
            _ => SourceRule::Tip,
        },
        ..MandateRules::default()
    };
    for text in &args.requesters {
        rules.requesters.push(key("--requester", text)?);
    }
    for pair in &args.inner {
        let (member, inner) = pair
            .split_once('=')
            .with_context(|| format!("--inner {pair:?} is not MEMBER=INNER"))?;
        let member = key("--inner", member)?;
        if rules.inner.insert(member, key("--inner", inner)?).is_some() {
            bail!("--inner names member {} twice", member.to_hex());
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("90d").unwrap(), Duration::from_secs(90 * 86_400));
        assert_eq!(duration("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(duration("45").unwrap(), Duration::from_secs(45));
        assert!(duration("0d").is_err());
        assert!(duration("3y").is_err());
        assert!(duration("d").is_err());
    }

    #[test]
    fn repositories() {
        let owner = quorum_proto::nostr::Keys::generate().public_key();
        let coordinate = format!("30617:{}:app", owner.to_hex());
        assert_eq!(repo(&coordinate).unwrap().identifier, "app");
        assert!(repo("30618:abc:app").is_err());
        let naddr = RepoCoordinate::new(owner, "app").to_naddr();
        assert_eq!(repo(&naddr).unwrap().to_string(), coordinate);
    }
}
