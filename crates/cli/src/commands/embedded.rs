//! The embedded default network: relay, Blossom server and runner DVMs in this process, on
//! loopback, with their data under one directory. `quorum up` serves it until stopped;
//! `quorum run` and `quorum demo` use it for one run. Each runner also serves quorum key
//! generation, so that [`form_quorum`] can make a quorum of them by DKG. All its DVMs run on
//! this one machine, so they are honestly one operator's: a local operator key
//! (`DATA/operator.nsec`) is named in every announcement and signs the list naming them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use quorum_dvm::Dvm;
use quorum_proto::agreement::QUORUM_ATTESTATION;
use quorum_proto::mandate::{Keygen, Mandate, MandateRules};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Keys, PublicKey, RelayUrl, Timestamp};
use quorum_proto::operator::OperatorList;
use quorum_proto::release::RELEASE_BINDING;
use quorum_router::quorum::QuorumContext;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::operator::Operators;
use crate::cli::{BlossomOptions, RelayOptions};

/// What to start.
pub struct EmbeddedSpec<'a> {
    pub data: PathBuf,
    pub relay_listen: SocketAddr,
    pub blossom_listen: SocketAddr,
    pub relay: &'a RelayOptions,
    pub blossom: &'a BlossomOptions,
    pub runners: usize,
    pub unsandboxed_runners: bool,
}

/// A running embedded network.
pub struct Embedded {
    data: PathBuf,
    pub relay_url: String,
    pub blossom_url: url::Url,
    /// The local operator (DATA/operator.nsec) who runs every DVM here.
    pub operator: PublicKey,
    pub runners: Vec<Dvm>,
    /// Each runner's quorum key service (DKG proposals and dealer deliveries naming it).
    keygen: Vec<JoinHandle<()>>,
    stop_keygen: watch::Sender<bool>,
    /// The router DVM (kind 5700), using the runners above.
    pub router: Option<quorum_router::dvm::RunningRouter>,
    stop_servers: watch::Sender<bool>,
    relay_task: JoinHandle<Result<(), quorum_relay::RelayError>>,
    blossom_task: JoinHandle<Result<(), quorum_blossom::BlossomError>>,
}

impl Embedded {
    pub async fn start(spec: EmbeddedSpec<'_>) -> anyhow::Result<Embedded> {
        std::fs::create_dir_all(&spec.data)
            .with_context(|| format!("cannot create data directory {}", spec.data.display()))?;
        // With an --allow-writer list, the network's own DVMs must still publish.
        let own_writers = if spec.relay.allowed_writers.is_empty() {
            Vec::new()
        } else {
            own_keys(&spec.data, spec.runners)?
        };
        let (relay, relay_listener, relay_url) = super::relay::start(
            spec.relay,
            &spec.data.join("relay"),
            spec.relay_listen,
            &own_writers,
        )
        .await?;
        let (blossom, blossom_listener, blossom_url) = super::blossom::start(
            spec.blossom,
            &spec.data.join("blossom"),
            spec.blossom_listen,
            None,
        )
        .await?;
        // The servers stop after the DVMs, so that nothing a DVM still says is lost.
        let (stop_servers, servers_stopped) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let relay_task =
            tokio::spawn(relay.serve(relay_listener, stopped(servers_stopped.clone())));
        let blossom_task = tokio::spawn(blossom.serve(blossom_listener, stopped(servers_stopped)));
        let operator = quorum_dvm::keyfile::load_or_create(&spec.data.join("operator.nsec"))?;
        let runners = start_runners(
            &spec.data,
            spec.runners,
            spec.unsandboxed_runners,
            &relay_url,
            &blossom_url,
            operator.public_key(),
        )
        .await?;
        let (stop_keygen, keygen_stopped) = watch::channel(false);
        let relays = super::relay_urls(std::slice::from_ref(&relay_url))?;
        let mut keygen = Vec::with_capacity(runners.len());
        for (n, runner) in runners.iter().enumerate() {
            let data = runner_dir(&spec.data, n + 1);
            let keys = quorum_dvm::keyfile::load_or_create(&data.join("runner.nsec"))?;
            let (relays, stop) = (relays.clone(), stopped(keygen_stopped.clone()));
            debug_assert_eq!(keys.public_key(), runner.public_key());
            keygen.push(tokio::spawn(async move {
                let served =
                    quorum_consensus::keygen::serve(&relays, &keys, data.join("shares"), stop);
                if let Err(err) = served.await {
                    tracing::error!("quorum key service: {err}");
                }
            }));
        }
        let router = if runners.is_empty() {
            None
        } else {
            let data = spec.data.join("router");
            let keys = quorum_dvm::keyfile::load_or_create(&data.join("router.nsec"))?;
            let setup = super::dvm::RouterSetup {
                relays: super::relay_urls(std::slice::from_ref(&relay_url))?,
                data,
                runners: runners.iter().map(Dvm::public_key).collect(),
                max_run: std::time::Duration::from_secs(6 * 3600),
                allow_local_repos: true,
                operator: Some(operator.public_key()),
                allow_private_git: true,
                select: None,
                // Free, as the embedded runners are: a run there costs nothing to pass on.
                mint: None,
                fee_msats: 0,
            };
            Some(super::dvm::start_router(setup, keys).await?)
        };
        let dvms: Vec<PublicKey> = runners
            .iter()
            .map(Dvm::public_key)
            .chain(
                router
                    .iter()
                    .map(quorum_router::dvm::RunningRouter::public_key),
            )
            .collect();
        if !dvms.is_empty() {
            confirm_operator(&relays, &operator, &dvms).await?;
        }
        Ok(Embedded {
            data: spec.data.clone(),
            relay_url,
            blossom_url,
            operator: operator.public_key(),
            runners,
            keygen,
            stop_keygen,
            router,
            stop_servers,
            relay_task,
            blossom_task,
        })
    }

    /// Stops the DVMs, then the servers, and reports a server that failed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(router) = self.router {
            router.shutdown().await;
        }
        let _ = self.stop_keygen.send(true);
        for service in self.keygen {
            let _ = service.await;
        }
        for runner in self.runners {
            runner.shutdown().await;
        }
        let _ = self.stop_servers.send(true);
        let (relay_result, blossom_result) = tokio::join!(self.relay_task, self.blossom_task);
        relay_result
            .context("relay task panicked")?
            .context("relay stopped with an error")?;
        blossom_result
            .context("Blossom task panicked")?
            .context("Blossom server stopped with an error")?;
        Ok(())
    }
}

/// Starts the runner DVMs, each with its own key and data dir. Without bubblewrap they are not
/// started (unless asked to run unsandboxed), and the operator is told why.
/// The operator signs the list naming `dvms` (replacing the last one: the DVMs here may differ
/// from the previous start) and waits until every DVM's announcement names it, so that whoever
/// looks next finds them confirmed.
async fn confirm_operator(
    relays: &[RelayUrl],
    operator: &Keys,
    dvms: &[PublicKey],
) -> anyhow::Result<()> {
    let client = quorum_dvm::client::JobClient::connect(relays, operator.clone()).await?;
    let confirmed = async {
        client
            .publish_event(OperatorList::new(dvms.iter().copied()).to_event_builder())
            .await
            .context("cannot publish the local operator's list of its DVMs")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found = super::operator::lookup(&client, dvms, std::time::Duration::ZERO).await?;
            let all = found
                .claims
                .values()
                .all(|c| c.confirmed() == Some(operator.public_key()));
            if all {
                return anyhow::Ok(());
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    "the embedded DVMs are not all confirmed as the local operator's yet: {}",
                    found.lines().join("; ")
                );
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    .await;
    client.shutdown().await;
    confirmed
}

async fn start_runners(
    data: &Path,
    count: usize,
    unsandboxed: bool,
    relay_url: &str,
    blossom_url: &url::Url,
    operator: PublicKey,
) -> anyhow::Result<Vec<Dvm>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let sandbox = match super::dvm::sandbox(false) {
        Ok(sandbox) => sandbox,
        Err(_) if unsandboxed => super::dvm::sandbox(true)?,
        Err(err) => {
            tracing::warn!(
                "no runner DVMs started: {err:#}. Install bubblewrap, or pass \
                 --unsandboxed-runners for development"
            );
            return Ok(Vec::new());
        }
    };
    let relays = super::relay_urls(&[relay_url.to_string()])?;
    let mut dvms = Vec::with_capacity(count);
    for n in 1..=count {
        let data = runner_dir(data, n);
        let keys = quorum_dvm::keyfile::load_or_create(&data.join("runner.nsec"))?;
        let setup = super::dvm::RunnerSetup {
            relays: relays.clone(),
            blossom: vec![blossom_url.clone()],
            data,
            concurrency: 2,
            max_timeout: std::time::Duration::from_secs(3600),
            allow_network: true,
            // The embedded network is one person's machine: local repositories are theirs.
            allow_local_repos: true,
            allow_private_git: true,
            price_msats: 0,
            price_msats_per_second: 0,
            mint: None,
            operator: Some(operator),
            // Images from the embedded Blossom server (or their registries), kept per runner.
            images: crate::cli::ImageCacheArgs {
                image_cache: None,
                image_cache_mib: 8192,
                require_image: false,
                insecure_registries: Vec::new(),
            },
        };
        dvms.push(super::dvm::start_runner(setup, keys, sandbox.clone()).await?);
    }
    Ok(dvms)
}

/// Public keys of the runner DVMs and the router DVM this network runs (created if new).
fn own_keys(data: &Path, runners: usize) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::with_capacity(runners + 1);
    for n in 1..=runners {
        let file = runner_dir(data, n).join("runner.nsec");
        keys.push(quorum_dvm::keyfile::load_or_create(&file)?.public_key());
    }
    let router = data.join("router").join("router.nsec");
    keys.push(quorum_dvm::keyfile::load_or_create(&router)?.public_key());
    Ok(keys)
}

fn runner_dir(data: &Path, n: usize) -> PathBuf {
    data.join("runners").join(n.to_string())
}

/// What a quorum of the embedded runners is for.
pub struct QuorumRequest {
    /// The repository and pipeline the mandate covers.
    pub repo: RepoCoordinate,
    pub pipeline: String,
    /// The jobs it covers (empty: all).
    pub jobs: Vec<String>,
    pub threshold: u16,
    /// The keys that may request the quorum's jobs (the run's engine key).
    pub requesters: Vec<PublicKey>,
    /// The mandate's note to humans.
    pub note: String,
}

impl Embedded {
    /// The network's data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The share directories of the first `n` runners.
    pub fn share_dirs(&self, n: usize) -> Vec<PathBuf> {
        (1..=n.min(self.runners.len()))
            .map(|n| runner_dir(&self.data, n).join("shares"))
            .collect()
    }
}

/// Makes a quorum key among `members` (runner DVMs that serve key generation) by DKG over
/// `relays`: nobody, not even this process's maintainer key, ever holds the key. Then signs and
/// publishes the mandate naming it with `maintainer`, who must speak for the repository.
///
/// Unlike `quorum mandate create`, it proceeds whoever runs the members (the embedded
/// network's DVMs are all one operator's): it returns who does, for the caller to say.
pub async fn form_quorum(
    relays: &[RelayUrl],
    maintainer: &Keys,
    members: &[PublicKey],
    request: QuorumRequest,
) -> anyhow::Result<(QuorumContext, Operators)> {
    let operators = super::operator::lookup_on(relays, members, std::time::Duration::from_secs(5))
        .await
        .context("cannot look up who runs the quorum's members")?;
    let mut mandate = Mandate {
        repo: request.repo,
        pipeline: request.pipeline,
        jobs: request.jobs,
        quorum: None,
        members: quorum_consensus::keygen::new_members(members),
        threshold: request.threshold,
        keygen: Keygen::Dkg,
        allow: [QUORUM_ATTESTATION.as_u16(), RELEASE_BINDING.as_u16()]
            .into_iter()
            .collect(),
        // As `quorum mandate create` does: relays drop an expired mandate (NIP-40), and a
        // release is verified against it.
        expiration: Timestamp::now() + 30 * 24 * 3600u64,
        rules: MandateRules {
            requesters: request.requesters,
            ..MandateRules::default()
        },
        content: request.note,
    };
    let proposal = quorum_consensus::keygen::propose_dkg(relays, maintainer, mandate.clone())
        .await
        .context("cannot publish the DKG proposal")?;
    let quorum = quorum_consensus::keygen::await_group_key(
        relays,
        proposal.id,
        members,
        std::time::Duration::from_secs(60),
    )
    .await
    .context("the runners did not agree on a quorum key")?;
    mandate.quorum = Some(quorum);
    let event = quorum_consensus::keygen::publish_mandate(relays, maintainer, &mandate)
        .await
        .context("cannot publish the mandate")?;
    let context = QuorumContext::new(event).map_err(anyhow::Error::msg)?;
    Ok((context, operators))
}

/// Publishes, as `maintainer`, the NIP-34 announcement of the repository `identifier` with
/// `clone_url` as its clone URL, and a state in which `ref_name` points at `commit`: the
/// evidence quorum members require before they build anything (protocol §16).
pub async fn publish_repository(
    client: &quorum_dvm::client::JobClient,
    identifier: &str,
    clone_url: &str,
    ref_name: &str,
    commit: &str,
) -> anyhow::Result<()> {
    use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
    let mut announcement = RepositoryAnnouncement::new(identifier);
    announcement.clone = vec![clone_url.to_string()];
    client
        .publish_event(announcement.to_event_builder())
        .await
        .context("cannot publish the repository announcement (30617)")?;
    let state = RepositoryState::new(identifier)
        .with_ref(ref_name, commit)?
        .with_head(ref_name)?;
    client
        .publish_event(state.to_event_builder())
        .await
        .context("cannot publish the repository state (30618)")?;
    Ok(())
}

/// A member saves its share once it has seen every member announce the key, as the organiser
/// did: wait for the files of local runners, so that a quorum job started next finds them.
pub async fn wait_for_shares(dirs: &[PathBuf], quorum: &PublicKey) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for dir in dirs {
        let path = quorum_consensus::job::share_path(dir, quorum);
        while !path.exists() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "a runner announced the quorum key but saved no share in {}",
                    dir.display()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
