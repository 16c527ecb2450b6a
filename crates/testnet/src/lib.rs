//! Test-only: a Quorum CI network on loopback for integration tests and benchmarks of the
//! crates that sit above the runner (router, watcher, CLI-level flows).
//!
//! Everything is real: our relay over WebSocket, our Blossom server over HTTP, runner DVMs
//! with bubblewrap, router DVMs. Servers stop when the [`Network`] is dropped.

pub mod bench;
pub mod quorum;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quorum_blossom::{BlossomConfig, BlossomServer};
use quorum_dvm::client::JobClient;
use quorum_dvm::{Dvm, DvmConfig};
use quorum_proto::nostr::{Keys, RelayUrl};
use quorum_runner::{GitPolicy, Runner, RunnerConfig};
use tokio::sync::oneshot;

/// What a market runner announces ([`Network::priced_runner`]).
#[derive(Clone, Default)]
pub struct Terms {
    pub price_msats: u64,
    /// Price per second a job runs, prepaid for `max_timeout` (the change comes back).
    pub msats_per_second: u64,
    /// The longest a step may run (announced; what a per-second price is prepaid for);
    /// `None`: the runner's default.
    pub max_timeout: Option<Duration>,
    /// The operator it names (a claim until the operator lists it).
    pub operator: Option<quorum_proto::nostr::PublicKey>,
    /// Takes payment before any work; `None`: jobs run unpaid whatever the price says.
    pub payments: Option<Arc<dyn quorum_dvm::handler::PaymentGate>>,
    /// Mints announced in the price.
    pub mints: Vec<String>,
}

/// What a paid router takes ([`Network::paid_router`]): a fee per run, at a mint, with the
/// budget for the runners it hires on top (docs/protocol.md §17.4).
#[derive(Clone)]
pub struct RouterTerms {
    /// The fee per run, in millisats: what an unpaid request is asked for.
    pub fee_msats: u64,
    /// Mints announced in the price.
    pub mints: Vec<String>,
    /// Collects the requester's token (the fee up front, and the budget sent with it).
    pub payments: Arc<dyn quorum_dvm::handler::PaymentGate>,
    /// Pays the runners a run hires from the wallet the payments are redeemed into, with the
    /// router's key (their change comes back to it).
    pub payer: Arc<dyn quorum_dvm::handler::Payer>,
}

/// How a test runner is set up beyond its data directory and keys.
struct RunnerSpec<'a> {
    /// Fetch file:// repositories.
    allow_local: bool,
    quorum: Option<quorum_consensus::job::QuorumMember>,
    sandbox: Arc<dyn quorum_sandbox::Sandbox>,
    terms: &'a Terms,
    /// A last change to the runner's configuration.
    tweak: fn(&mut RunnerConfig),
}

/// A relay and a Blossom server on 127.0.0.1, stopped when dropped.
pub struct Network {
    pub relay: RelayUrl,
    pub blossom: url::Url,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Network {
    pub async fn start(dir: &Path) -> Network {
        let relay =
            quorum_relay::Relay::open(quorum_relay::RelayConfig::default(), &dir.join("relay"))
                .await
                .expect("the relay opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let relay_url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap()))
            .expect("a relay URL");
        let (relay_stop, relay_stopped) = oneshot::channel::<()>();
        tokio::spawn(relay.serve(listener, async move {
            let _ = relay_stopped.await;
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let blossom_url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap()))
            .expect("a Blossom URL");
        let server = BlossomServer::open(
            BlossomConfig {
                public_url: Some(blossom_url.clone()),
                ..BlossomConfig::default()
            },
            &dir.join("blossom"),
        )
        .await
        .expect("the Blossom server opens");
        let (blossom_stop, blossom_stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = blossom_stopped.await;
        }));
        Network {
            relay: relay_url,
            blossom: blossom_url,
            _stops: vec![relay_stop, blossom_stop],
        }
    }

    /// A runner DVM with bubblewrap; `allow_local` lets it fetch file:// repositories.
    pub async fn runner(&self, data: &Path, allow_local: bool) -> Dvm {
        self.runner_with_keys(data, Keys::generate(), allow_local)
            .await
    }

    /// [`Network::runner`] with the given keys (to know its secret key, or restart it).
    pub async fn runner_with_keys(&self, data: &Path, keys: Keys, allow_local: bool) -> Dvm {
        self.start_runner(data, keys, allow_local, None).await
    }

    /// A runner DVM with bubblewrap whose configuration `tweak` changes (e.g. to require
    /// build images); it fetches file:// repositories.
    pub async fn runner_configured(
        &self,
        data: &Path,
        keys: Keys,
        tweak: fn(&mut RunnerConfig),
    ) -> Dvm {
        let sandbox = quorum_sandbox::Bubblewrap::detect()
            .expect("bubblewrap is required for these tests: apt-get install bubblewrap");
        self.start_runner_in(
            data,
            keys,
            RunnerSpec {
                allow_local: true,
                quorum: None,
                sandbox: Arc::new(sandbox),
                terms: &Terms::default(),
                tweak,
            },
        )
        .await
    }

    /// The quorum side of a member runner: its shares in `share_dir`, on this relay.
    fn quorum_member(
        &self,
        keys: &Keys,
        share_dir: &Path,
        config: quorum_consensus::member::MemberConfig,
    ) -> quorum_consensus::job::QuorumMember {
        quorum_consensus::job::QuorumMember::new(
            vec![self.relay.clone()],
            keys.clone(),
            share_dir.to_path_buf(),
        )
        .with_config(config)
    }

    /// A runner that serves quorum jobs with the shares in `share_dir` (`<quorum hex>.json`).
    pub async fn quorum_runner(
        &self,
        data: &Path,
        keys: Keys,
        share_dir: &Path,
        config: quorum_consensus::member::MemberConfig,
    ) -> Dvm {
        let member = self.quorum_member(&keys, share_dir, config);
        self.start_runner(data, keys, true, Some(member)).await
    }

    /// A quorum runner that announces `terms` (a price) and takes payment before any work.
    pub async fn priced_quorum_runner(
        &self,
        data: &Path,
        keys: Keys,
        share_dir: &Path,
        config: quorum_consensus::member::MemberConfig,
        terms: &Terms,
    ) -> Dvm {
        let member = self.quorum_member(&keys, share_dir, config);
        let sandbox = quorum_sandbox::Bubblewrap::detect()
            .expect("bubblewrap is required for these tests: apt-get install bubblewrap");
        self.start_runner_in(
            data,
            keys,
            RunnerSpec {
                allow_local: true,
                quorum: Some(member),
                sandbox: Arc::new(sandbox),
                terms,
                tweak: |_| {},
            },
        )
        .await
    }

    /// A quorum runner whose steps run in `sandbox` (e.g. bubblewrap with a host toolchain of
    /// its own, for a runner whose host differs from the others').
    pub async fn quorum_runner_in(
        &self,
        data: &Path,
        keys: Keys,
        share_dir: &Path,
        config: quorum_consensus::member::MemberConfig,
        sandbox: Arc<dyn quorum_sandbox::Sandbox>,
    ) -> Dvm {
        let member = self.quorum_member(&keys, share_dir, config);
        self.start_runner_in(
            data,
            keys,
            RunnerSpec {
                allow_local: true,
                quorum: Some(member),
                sandbox,
                terms: &Terms::default(),
                tweak: |_| {},
            },
        )
        .await
    }

    /// A compromised quorum runner: its steps run in the real sandbox, and then `tamper`
    /// rewrites the work dir before the artifacts are packed (a backdoored build agent). It
    /// reports and commits to the tampered bytes like an honest runner would.
    pub async fn tampering_quorum_runner(
        &self,
        data: &Path,
        keys: Keys,
        share_dir: &Path,
        config: quorum_consensus::member::MemberConfig,
        tamper: fn(&Path),
    ) -> Dvm {
        let member = self.quorum_member(&keys, share_dir, config);
        let sandbox = Tampering {
            inner: quorum_sandbox::Bubblewrap::detect()
                .expect("bubblewrap is required for these tests: apt-get install bubblewrap"),
            tamper,
        };
        self.start_runner_in(
            data,
            keys,
            RunnerSpec {
                allow_local: true,
                quorum: Some(member),
                sandbox: Arc::new(sandbox),
                terms: &Terms::default(),
                tweak: |_| {},
            },
        )
        .await
    }

    /// A runner of the open market: it announces `terms` (price, operator) and fetches
    /// file:// repositories.
    pub async fn priced_runner(&self, data: &Path, keys: Keys, terms: &Terms) -> Dvm {
        let sandbox = quorum_sandbox::Bubblewrap::detect()
            .expect("bubblewrap is required for these tests: apt-get install bubblewrap");
        self.start_runner_in(
            data,
            keys,
            RunnerSpec {
                allow_local: true,
                quorum: None,
                sandbox: Arc::new(sandbox),
                terms,
                tweak: |_| {},
            },
        )
        .await
    }

    async fn start_runner(
        &self,
        data: &Path,
        keys: Keys,
        allow_local: bool,
        quorum: Option<quorum_consensus::job::QuorumMember>,
    ) -> Dvm {
        let sandbox = quorum_sandbox::Bubblewrap::detect()
            .expect("bubblewrap is required for these tests: apt-get install bubblewrap");
        self.start_runner_in(
            data,
            keys,
            RunnerSpec {
                allow_local,
                quorum,
                sandbox: Arc::new(sandbox),
                terms: &Terms::default(),
                tweak: |_| {},
            },
        )
        .await
    }

    async fn start_runner_in(&self, data: &Path, keys: Keys, spec: RunnerSpec<'_>) -> Dvm {
        let RunnerSpec {
            allow_local,
            quorum,
            sandbox,
            terms,
            tweak,
        } = spec;
        let mut config = RunnerConfig::new(data.join("work"), vec![self.blossom.clone()]);
        config.price_msats = terms.price_msats;
        config.msats_per_second = terms.msats_per_second;
        if let Some(max) = terms.max_timeout {
            config.max_timeout = max;
        }
        config.mints = terms.mints.clone();
        // Tests ask for network steps; the sandbox keeps them off the host's loopback.
        config.allow_network = true;
        config.git = GitPolicy {
            allow_local,
            // Test repositories are served on loopback.
            allow_private: true,
            timeout: Some(Duration::from_secs(30)),
            ..GitPolicy::default()
        };
        // Build images from this network's Blossom server, cached per runner.
        config.images = Some(Arc::new(
            quorum_oci::ImageCache::open(
                data.join("images"),
                4 << 30,
                quorum_oci::Fetcher::new(vec![self.blossom.clone()], Vec::new()),
            )
            .expect("the image cache opens"),
        ));
        tweak(&mut config);
        let mut runner = Runner::new(
            config,
            sandbox,
            quorum_blossom::client::BlossomClient::new(keys.clone()),
        );
        if let Some(member) = quorum {
            runner = runner.with_quorum(member);
        }
        let mut dvm_config = DvmConfig::new(vec![self.relay.clone()], data.join("dvm"), "runner");
        // Frequent signs of life, so that tests can use a short patience.
        dvm_config.heartbeat = Duration::from_millis(500);
        dvm_config.operator = terms.operator;
        dvm_config.payments = terms.payments.clone();
        Dvm::start(dvm_config, keys, runner)
            .await
            .expect("the runner starts")
    }

    /// A router DVM signing with `keys` (pass the same keys to restart "the same" router).
    pub async fn router(&self, data: &Path, keys: &Keys) -> quorum_router::dvm::RunningRouter {
        self.router_with_policy(data, keys, None).await
    }

    /// [`Network::router`] applying `select` to runs whose request names no runners.
    pub async fn router_with_policy(
        &self,
        data: &Path,
        keys: &Keys,
        select: Option<quorum_pipeline::select::SelectPolicy>,
    ) -> quorum_router::dvm::RunningRouter {
        self.start_router(data, keys, select, None).await
    }

    /// A router that takes payment on `terms` and hires priced runners with it, at most what
    /// each run was paid beyond the fee.
    pub async fn paid_router(
        &self,
        data: &Path,
        keys: &Keys,
        terms: &RouterTerms,
    ) -> quorum_router::dvm::RunningRouter {
        self.start_router(data, keys, None, Some(terms)).await
    }

    async fn start_router(
        &self,
        data: &Path,
        keys: &Keys,
        select: Option<quorum_pipeline::select::SelectPolicy>,
        terms: Option<&RouterTerms>,
    ) -> quorum_router::dvm::RunningRouter {
        let client = JobClient::connect(std::slice::from_ref(&self.relay), keys.clone())
            .await
            .expect("the router's client connects");
        let router = quorum_router::dvm::Router::new(
            quorum_router::dvm::RouterConfig {
                work_root: data.join("work"),
                git: GitPolicy {
                    allow_local: true,
                    allow_private: true,
                    timeout: Some(Duration::from_secs(30)),
                    ..GitPolicy::default()
                },
                runners: Vec::new(),
                select,
                max_run: Duration::from_secs(600),
                bundle_store: Some(quorum_blossom::client::BlossomClient::new(keys.clone())),
                price: quorum_proto::nip89::Price {
                    msats_per_job: terms.map_or(0, |t| t.fee_msats),
                    msats_per_second: 0,
                    mints: terms.map(|t| t.mints.clone()).unwrap_or_default(),
                },
                payer: terms.map(|t| t.payer.clone()),
            },
            Arc::new(client),
        );
        let mut config = DvmConfig::new(vec![self.relay.clone()], data.join("dvm"), "router");
        config.payments = terms.map(|t| t.payments.clone());
        router
            .start(config, keys.clone())
            .await
            .expect("the router starts")
    }

    /// The report of the router's result (6700) for run request `request`, waiting up to
    /// `within` for it.
    pub async fn run_report(
        &self,
        request: quorum_proto::nostr::EventId,
        within: Duration,
    ) -> quorum_proto::run::RunReport {
        use quorum_proto::nostr::{Filter, Kind};
        let client = self.client().await;
        let deadline = tokio::time::Instant::now() + within;
        let report = loop {
            let results = client
                .fetch(
                    Filter::new().kind(Kind::from_u16(6700)).event(request),
                    Duration::from_secs(2),
                )
                .await
                .expect("the relay answers");
            if let Some(event) = results.first() {
                let result = quorum_proto::nip90::JobResult::from_event(event)
                    .expect("a router's result parses");
                break serde_json::from_str(&result.content).expect("a router's report parses");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no router finished run {request} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        client.shutdown().await;
        report
    }

    /// A job client with fresh keys.
    pub async fn client(&self) -> JobClient {
        JobClient::connect(std::slice::from_ref(&self.relay), Keys::generate())
            .await
            .expect("the client connects")
    }
}

/// A sandbox that runs the step for real and then tampers with its work dir.
struct Tampering {
    inner: quorum_sandbox::Bubblewrap,
    tamper: fn(&Path),
}

impl quorum_sandbox::Sandbox for Tampering {
    fn describe(&self) -> quorum_sandbox::SandboxInfo {
        self.inner.describe()
    }

    fn run<'a>(
        &'a self,
        spec: &'a quorum_sandbox::StepSpec,
        log: &'a mut dyn quorum_sandbox::LogSink,
    ) -> quorum_sandbox::BoxFuture<
        'a,
        Result<quorum_sandbox::StepOutcome, quorum_sandbox::SandboxError>,
    > {
        Box::pin(async move {
            let outcome = self.inner.run(spec, log).await?;
            (self.tamper)(&spec.work_dir);
            Ok(outcome)
        })
    }
}
