//! `quorum market`: the DVMs offering a kind, what they charge, how they have done on the
//! record, how far the maintainer trusts them, and whether a policy admits each
//! (`quorum_market::choose`); `quorum dvm recorder` publishes the record as assertions.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quorum_market::Query;
use quorum_market::select::{Judgement, short};
use quorum_pipeline::select::SelectPolicy;
use quorum_proto::nostr::{Kind, PublicKey};

use crate::cli::{MarketArgs, RecorderArgs};
use crate::shutdown::Shutdown;

pub async fn run(args: MarketArgs) -> anyhow::Result<ExitCode> {
    let relays = super::relay_urls(&args.relays)?;
    let policy = match &args.policy {
        Some(path) => super::dvm::read_policy(path)?,
        None => SelectPolicy::default(),
    };
    let maintainer = args
        .maintainer
        .as_deref()
        .map(|text| super::operator::parse_key("--maintainer", text))
        .transpose()?;
    let client =
        quorum_dvm::client::JobClient::connect(&relays, quorum_proto::nostr::Keys::generate())
            .await?;
    let selection = quorum_market::choose(
        &client,
        &Query {
            kind: Kind::from_u16(args.kind),
            candidates: None,
            policy: &policy,
            maintainer,
            with_record: true,
            timeout: Duration::from_secs(args.wait),
        },
    )
    .await?;
    client.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&selection)?);
        return Ok(ExitCode::SUCCESS);
    }
    if selection.judged.is_empty() {
        println!("no DVM announces kind {} on these relays", args.kind);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<16} {:<22} {:>12} {:>8} {:>7} {:>7} {:>6} {:>7}  {:<18} admitted",
        "dvm", "name", "operator", "price", "success", "uptime", "agree", "jobs", "median", "trust"
    );
    for judgement in &selection.judged {
        println!("{}", row(judgement));
    }
    if let Some(diversity) = policy.diversity {
        // Diversity is a property of a set of members, not of one DVM.
        match selection.require(1, Some(diversity as usize)) {
            Ok(_) => println!("diversity: at least {diversity} distinct confirmed operators pass"),
            Err(too_few) => println!("{}", too_few.summary),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(j: &Judgement) -> String {
    let name = super::sanitize(j.name.as_deref().unwrap_or("-"));
    let name: String = name.chars().take(16).collect();
    let operator = match (&j.operator, &j.operator_note) {
        (Some(hex), _) => PublicKey::from_hex(hex)
            .map(|k| short(&k))
            .unwrap_or_default(),
        (None, _) => "unconfirmed".into(),
    };
    let price = match &j.price {
        None => "-".into(),
        Some(p) if p.is_free() => "free".into(),
        Some(p) if p.msats_per_second > 0 => {
            format!("{}+{}/s msat", p.msats_per_job, p.msats_per_second)
        }
        Some(p) => format!("{} msat", p.msats_per_job),
    };
    let percent = |v: Option<u32>| v.map(|v| format!("{v}%")).unwrap_or_else(|| "-".into());
    let f = j.figures.as_ref();
    let trust = {
        let t = &j.trust;
        let mut parts = Vec::new();
        if t.listed {
            parts.push("listed".to_string());
        }
        if let Some(d) = t.follow_distance {
            parts.push(format!("{d} hop"));
        }
        if let Some(r) = t.rank {
            parts.push(format!("rank {r}"));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    };
    let verdict = if j.admitted() {
        "yes".to_string()
    } else {
        format!("no: {}", j.excluded.join("; "))
    };
    let mints = j
        .price
        .as_ref()
        .filter(|p| !p.mints.is_empty())
        .map(|p| format!(" mints: {}", super::sanitize(&p.mints.join(", "))))
        .unwrap_or_default();
    format!(
        "{:<22} {:<16} {:<22} {:>12} {:>8} {:>7} {:>7} {:>6} {:>7}  {:<18} {verdict}{mints}",
        short(&j.dvm),
        name,
        operator,
        price,
        percent(f.map(|f| f.success)),
        percent(f.map(|f| f.uptime)),
        percent(f.and_then(|f| f.agreement)),
        f.map(|f| f.jobs.to_string()).unwrap_or_else(|| "0".into()),
        f.and_then(|f| f.median_secs)
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "-".into()),
        trust,
    )
}

/// `quorum dvm recorder`: a round now, then one every `--interval` seconds until stopped.
pub async fn recorder(args: RecorderArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let keys = quorum_dvm::keyfile::load_or_create(&args.key)?;
    let client = quorum_dvm::client::JobClient::connect(&relays, keys.clone()).await?;
    let config = quorum_market::recorder::RecorderConfig {
        kinds: args.kinds.iter().copied().map(Kind::from_u16).collect(),
        window: args.window,
        timeout: Duration::from_secs(5),
    };
    super::announce(&format!("recorder: {}", keys.public_key().to_hex()));
    let mut stop = std::pin::pin!(shutdown.wait());
    loop {
        match quorum_market::recorder::round(&client, &config).await {
            Ok(published) => {
                super::announce(&format!("recorded {} DVM(s)", published.len()));
            }
            Err(err) => tracing::warn!("recording round failed: {err}"),
        }
        if args.once {
            break;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_secs(args.interval)) => {}
        }
    }
    client.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
