//! `quorum verify FILE --repo REPO`: is this file a release of that repository, built by a
//! quorum from the code its maintainers signed? From the relays, a verification bundle, or both.
//! `quorum verify --image NAME@sha256:… --repo REPO` asks the same of a released OCI image.

use std::process::ExitCode;

use anyhow::Context;
use quorum_dvm::client::JobClient;
use quorum_proto::image::ImageRef;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Keys, PublicKey, ToBech32};
use quorum_router::verify::{Expectation, Verification};

use crate::cli::VerifyArgs;

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let expect = Expectation {
        repo: args
            .repo
            .as_deref()
            .map(|text| {
                RepoCoordinate::parse_user(text).with_context(|| {
                    format!("--repo {text:?} is neither 30617:<owner hex>:<d> nor an naddr")
                })
            })
            .transpose()?,
        min_threshold: args.min_threshold,
        min_operators: args.min_operators,
        require_dkg: args.require_dkg,
        allow_single_builder: args.allow_single_builder,
    };
    let client = if args.relays.is_empty() {
        None
    } else {
        let relays = super::relay_urls(&args.relays)?;
        Some(JobClient::connect(&relays, Keys::generate()).await?)
    };
    let verification = match (&args.image, &args.file) {
        (Some(image), _) => {
            let image = ImageRef::parse(image).with_context(|| {
                format!("--image {image:?} is not HOST[:PORT]/NAME@sha256:<digest>")
            })?;
            quorum_router::verify::verify_image(
                client.as_ref(),
                &image,
                args.insecure_registries.clone(),
                args.bundle.as_deref(),
                &expect,
            )
            .await
        }
        (None, Some(file)) => {
            quorum_router::verify::verify_file(
                client.as_ref(),
                file,
                args.bundle.as_deref(),
                &expect,
            )
            .await
        }
        (None, None) => anyhow::bail!("give a FILE or --image NAME@sha256:…"),
    };
    if let Some(client) = client {
        client.shutdown().await;
    }
    let verification = verification?;
    if args.json {
        println!("{}", serde_json::to_string(&verification)?);
    } else {
        print_human(&verification);
    }
    Ok(if verification.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// `npub… (hex)` for a hex key, or the text as it came (sanitised) if it is not one.
fn npub(hex: &str) -> String {
    match PublicKey::from_hex(hex)
        .ok()
        .and_then(|k| k.to_bech32().ok())
    {
        Some(npub) => npub,
        None => super::sanitize(hex),
    }
}

fn print_human(v: &Verification) {
    if let Some(image) = &v.image {
        println!("image       {}", super::sanitize(image));
    }
    println!("sha256      {}", v.sha256);
    let show = |label: &str, value: &Option<String>| {
        if let Some(value) = value {
            println!("  {label:<11} {}", super::sanitize(value));
        }
    };
    match &v.expected_repo {
        Some(repo) => println!("expected    {}", super::sanitize(repo)),
        None => println!("expected    (no --repo given)"),
    }
    // Without a release, the problems below say so.
    if let Some(release) = &v.release {
        println!("{} release   {release}", mark(v.ok));
        show("name", &v.name);
        show("signed by", &v.signer.as_deref().map(npub));
        show("repo", &v.repo);
        show("commit", &v.commit);
        show("run", &v.run);
    }
    if let Some(source) = &v.source {
        println!("  source      {}", super::sanitize(&source.url));
        println!(
            "    state     {} signed by {}{}",
            source.state,
            npub(&source.state_signer),
            if source.refs.is_empty() {
                " (commit reachable from a ref, per the quorum)".to_string()
            } else {
                format!(
                    ": {} → the commit",
                    super::sanitize(&source.refs.join(", "))
                )
            }
        );
        println!("    announced {}", source.announcement);
    }
    show("request", &v.request);
    show("  by", &v.requester.as_deref().map(npub));
    if let (Some(job), Some(pipeline)) = (&v.job, &v.pipeline) {
        println!(
            "  job         {} of {} (plan {})",
            super::sanitize(job),
            super::sanitize(pipeline),
            v.plan_hash.as_deref().unwrap_or("?")
        );
    }
    show("built by", &v.built_by);
    if let Some(quorum) = &v.quorum {
        println!("  quorum      {}", npub(quorum));
        show("attestation", &v.attestation);
        if let Some(mandate) = &v.mandate {
            println!("  mandate     {}", super::sanitize(mandate));
            show("  signed by", &v.mandate_signer.as_deref().map(npub));
        }
        if let Some(threshold) = v.threshold {
            println!(
                "  threshold   {} of {} members must agree",
                threshold.t, threshold.n
            );
        }
        show("key made by", &v.keygen);
        if let Some(distinct) = v.distinct_operators {
            println!("  operators   {distinct} distinct, confirmed");
            for (member, operator) in &v.operators {
                println!(
                    "    {} run by {}",
                    npub(member),
                    operator
                        .as_deref()
                        .map_or("nobody confirmed".to_string(), npub)
                );
            }
        }
        let members = |label: &str, list: &[String]| {
            println!("  {label:<11} {}", list.len());
            for member in list {
                println!("    {}", npub(member));
            }
        };
        members("agreed", &v.agreed);
        members("disagreed", &v.disagreed);
        members("silent", &v.silent);
        if !v.late.is_empty() {
            members("late", &v.late);
        }
    }
    for builder in &v.attested_by {
        println!("{} attested by {}", mark(true), npub(builder));
    }
    for problem in &v.problems {
        println!("{} {}", mark(false), super::sanitize(problem));
    }
    for warning in &v.warnings {
        println!("! {}", super::sanitize(warning));
    }
    for bundle in &v.bundles {
        println!("  bundle      {bundle}");
    }
    for url in &v.urls {
        println!("  mirror      {}", super::sanitize(url));
    }
    let verdict = match (v.ok, v.quorum.is_some()) {
        (true, true) => {
            "verified: these bytes are a release of the expected repository; a quorum authorised \
             by a maintainer's mandate signed it, at least t of its members built them from the \
             commit a maintainer's signed state named, as the pipeline there defines the job"
        }
        (true, false) => {
            "verified: a release lists these bytes and its builders attest them (it is not \
             quorum-signed: nothing vouches for the signer's authority)"
        }
        (false, _) => "NOT verified",
    };
    println!("{verdict}");
}
