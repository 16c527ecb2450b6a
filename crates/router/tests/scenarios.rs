//! Scenario files: `tests/scenarios/NAME.pipeline.yml` is run end to end on its own loopback
//! network (relay, Blossom, two bubblewrap runners) against the sample repository, and every
//! job's outcome must match `NAME.expected`: one line per job, `JOB STATUS [TEXT]`, with STATUS
//! one of success, failure, skipped, and TEXT a part of the failure or skip reason (for a
//! success, of the job's result content: `approved by …`, a DVM's answer). Add a scenario by
//! adding two files.
//!
//! An optional third file `NAME.actors` is a script of what happens around the run, one step a
//! line (`#` starts a comment):
//!
//! - `router`: the run goes through a router DVM (a run request, its result report) instead of
//!   the engine called directly.
//! - `patience SECONDS`: the engine takes a silent DVM for dead after SECONDS (default 150).
//! - `start node-dvm interop/SCRIPT.mjs KIND`: before the run, starts a Node DVM on the relay;
//!   `$DVM` in the pipeline is its public key. It is killed when the scenario ends.
//! - `[when "TEXT"] ACTION`: waits (up to 60 s) for a signal containing TEXT, then acts. ACTION
//!   is `kill-runner N` (N = 1 or 2), `restart-router` (same key and data), `approve WHO`,
//!   `reject WHO` (WHO = maintainer or stranger: a verdict on the run's approval request) or
//!   `wait SECONDS`. Steps run in file order, each after the one before.
//!
//! Signals are the run's progress: `▶ JOB`, `✔ JOB`, `✘ JOB: reason` and step output lines
//! (from the engine or the router's feedback), and every DVM's feedback as `WHO: STATUS` or
//! `WHO: EXTRA` (`runner 1: queued`, `runner 1: processing`, `router: partial`, `dvm: …`).
//! A step whose signal never comes fails the scenario, as does an unknown line
//! (`NAME.actors:LINE: unknown actor step "WORD"`).
//!
//! The repository's maintainer and a stranger have keys of their own: `$MAINTAINER` and
//! `$STRANGER` are their public keys in the pipeline, and their short names (12 hex digits, as
//! verdicts name them) in `.expected`. Runners are listed to the engine (and the router) as
//! runner 1 then runner 2; a job starts on the runner `quorum_router::first_runner` picks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::Dvm;
use quorum_dvm::client::Patience;
use quorum_proto::approval::Decision;
use quorum_router::{EngineConfig, JobRecord, JobState, RunContext, RunReporter, execute};
use quorum_testkit::daemon::Daemon;
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;
use tokio::sync::{mpsc, watch};

/// How long one step of a script may wait for its signal.
const STEP_WAIT: Duration = Duration::from_secs(60);
/// How long one scenario may take in all.
const SCENARIO_WAIT: Duration = Duration::from_secs(150);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Maintainer,
    Stranger,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    KillRunner(usize),
    RestartRouter,
    Verdict(Decision, Who),
    Wait(Duration),
}

#[derive(Debug, Clone, PartialEq)]
struct Step {
    line: usize,
    when: Option<String>,
    action: Action,
}

#[derive(Debug, Default, PartialEq)]
struct Script {
    router: bool,
    patience: Option<Duration>,
    /// Node DVMs to start: script path (from the workspace root) and request kind.
    dvms: Vec<(String, u16)>,
    steps: Vec<Step>,
}

/// Parses an actors file; errors read `FILE:LINE: what is wrong "WORD"`.
fn parse_script(file: &str, text: &str) -> Result<Script, String> {
    let mut script = Script::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let at = |what: &str, word: &str| format!("{file}:{line}: {what} {word:?}");
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let (when, rest) = match content.strip_prefix("when ") {
            Some(after) => {
                let after = after.trim_start();
                let quoted = after
                    .strip_prefix('"')
                    .and_then(|a| a.split_once('"'))
                    .ok_or_else(|| at("`when` needs a quoted text, not", after))?;
                (Some(quoted.0.to_string()), quoted.1.trim())
            }
            None => (None, content),
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let number = |word: Option<&&str>| -> Result<f64, String> {
            let word = word.copied().unwrap_or_default();
            word.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| at("expected a number, not", word))
        };
        let setup = |script: &mut Script| -> Result<bool, String> {
            match words.as_slice() {
                ["router"] => script.router = true,
                ["patience", _] => {
                    script.patience = Some(Duration::from_secs_f64(number(words.get(1))?))
                }
                ["start", "node-dvm", path, kind] => {
                    if !path.starts_with("interop/") || !path.ends_with(".mjs") {
                        return Err(at("a node DVM is a script under interop/, not", path));
                    }
                    let kind = kind.parse().map_err(|_| at("not a request kind:", kind))?;
                    script.dvms.push((path.to_string(), kind));
                }
                _ => return Ok(false),
            }
            Ok(true)
        };
        if when.is_none() && setup(&mut script)? {
            continue;
        }
        let who = |word: Option<&&str>| match word.copied() {
            Some("maintainer") => Ok(Who::Maintainer),
            Some("stranger") => Ok(Who::Stranger),
            other => Err(at("unknown signer", other.unwrap_or_default())),
        };
        let action = match words.as_slice() {
            ["kill-runner", n] => match *n {
                "1" => Action::KillRunner(1),
                "2" => Action::KillRunner(2),
                _ => return Err(at("there are runners 1 and 2, not", n)),
            },
            ["restart-router"] => {
                if !script.router {
                    return Err(at("needs `router` on an earlier line:", "restart-router"));
                }
                Action::RestartRouter
            }
            ["approve", _] => Action::Verdict(Decision::Approve, who(words.get(1))?),
            ["reject", _] => Action::Verdict(Decision::Reject, who(words.get(1))?),
            ["wait", _] => Action::Wait(Duration::from_secs_f64(number(words.get(1))?)),
            _ => {
                let word = words.first().copied().unwrap_or_default();
                return Err(at("unknown actor step", word));
            }
        };
        script.steps.push(Step { line, when, action });
    }
    Ok(script)
}

#[test]
fn an_unknown_actor_line_names_its_file_line_and_word() {
    let script = parse_script(
        "x.actors",
        "router # through the DVM\n\nwhen \"▶ second\" restart-router\nwait 1.5\n",
    )
    .unwrap();
    assert!(script.router);
    assert_eq!(script.steps[0].when.as_deref(), Some("▶ second"));
    assert_eq!(
        script.steps[1].action,
        Action::Wait(Duration::from_millis(1500))
    );
    for (text, error) in [
        (
            "\nexplode 3\n",
            "x.actors:2: unknown actor step \"explode\"",
        ),
        (
            "kill-runner 3",
            "x.actors:1: there are runners 1 and 2, not \"3\"",
        ),
        ("approve nobody", "x.actors:1: unknown signer \"nobody\""),
        (
            "when unquoted kill-runner 1",
            "x.actors:1: `when` needs a quoted",
        ),
        ("restart-router", "x.actors:1: needs `router`"),
        (
            "when \"x\" router",
            "x.actors:1: unknown actor step \"router\"",
        ),
        (
            "start node-dvm /tmp/a.mjs 5500",
            "x.actors:1: a node DVM is a script",
        ),
    ] {
        let got = parse_script("x.actors", text).unwrap_err();
        assert!(got.starts_with(error), "{text:?}: {got}");
    }
}

/// The engine's progress, as signals.
struct Signals(mpsc::UnboundedSender<String>);

impl RunReporter for Signals {
    fn job_started(&mut self, job: &quorum_pipeline::PlannedJob) {
        let _ = self.0.send(format!("▶ {}", job.id));
    }
    fn job_progress(&mut self, _: &str, _: &PublicKey, line: &str) {
        let _ = self.0.send(line.to_string());
    }
    fn job_finished(&mut self, record: &JobRecord) {
        let _ = self.0.send(match &record.state {
            JobState::Succeeded => format!("✔ {}", record.id),
            JobState::Failed { reason } => format!("✘ {}: {reason}", record.id),
            JobState::Skipped { reason } => format!("– {} skipped: {reason}", record.id),
        });
    }
}

/// One job's end: id, status, and the reason (or, for a success, the result content).
type Ending = (String, String, String);

fn ending(record: &JobRecord) -> Ending {
    let (status, why) = match &record.state {
        JobState::Succeeded => ("success", record.content.clone().unwrap_or_default()),
        JobState::Failed { reason } => ("failure", reason.clone()),
        JobState::Skipped { reason } => ("skipped", reason.clone()),
    };
    (record.id.clone(), status.into(), why)
}

/// Everything a script acts on.
struct Cast<'a> {
    network: &'a Network,
    runners: Vec<Option<Dvm>>,
    router: Option<quorum_router::dvm::RunningRouter>,
    router_keys: Keys,
    router_data: PathBuf,
    maintainer: Keys,
    stranger: Keys,
}

impl Cast<'_> {
    async fn act(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::KillRunner(n) => match self.runners[n - 1].take() {
                Some(runner) => runner.shutdown().await,
                None => return Err(format!("runner {n} is already dead")),
            },
            Action::RestartRouter => {
                if let Some(router) = self.router.take() {
                    router.shutdown().await;
                }
                self.router = Some(
                    self.network
                        .router(&self.router_data, &self.router_keys)
                        .await,
                );
            }
            Action::Verdict(decision, who) => {
                let keys = match who {
                    Who::Maintainer => &self.maintainer,
                    Who::Stranger => &self.stranger,
                };
                decide(&self.network.relay, keys, *decision).await?;
            }
            Action::Wait(time) => tokio::time::sleep(*time).await,
        }
        Ok(())
    }

    async fn shutdown(self) {
        for runner in self.runners.into_iter().flatten() {
            runner.shutdown().await;
        }
        if let Some(router) = self.router {
            router.shutdown().await;
        }
    }
}

/// A nostr client with `keys`, connected to `relay`.
async fn connect(relay: &RelayUrl, keys: &Keys) -> Result<Client, String> {
    let client = Client::new(keys.clone());
    client
        .add_relay(relay.clone())
        .await
        .map_err(|e| e.to_string())?;
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    Ok(client)
}

/// Signs a verdict on the first approval request on the relay.
async fn decide(relay: &RelayUrl, keys: &Keys, decision: Decision) -> Result<(), String> {
    use quorum_proto::approval::{APPROVAL_REQUEST, ApprovalRequest, Verdict};
    let client = connect(relay, keys).await?;
    let deadline = tokio::time::Instant::now() + STEP_WAIT;
    let request = loop {
        let found = client
            .fetch_events(Filter::new().kind(APPROVAL_REQUEST), Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(event) = found.first() {
            break event.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no approval request within {STEP_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let parsed = ApprovalRequest::from_event(&request).map_err(|e| e.to_string())?;
    let verdict = Verdict::on(decision, &request, &parsed, Timestamp::now() + 600)
        .to_event_builder()
        .map_err(|e| e.to_string())?
        .sign_with_keys(keys)
        .map_err(|e| e.to_string())?;
    client
        .send_event(&verdict)
        .await
        .map_err(|e| e.to_string())?;
    client.shutdown().await;
    Ok(())
}

/// Performs the script's steps in order; stops with an error when a signal does not come.
async fn perform(
    file: &str,
    steps: &[Step],
    cast: &mut Cast<'_>,
    signals: &mut mpsc::UnboundedReceiver<String>,
    mut done: watch::Receiver<bool>,
) -> Result<(), String> {
    for step in steps {
        if let Some(text) = &step.when {
            let deadline = tokio::time::Instant::now() + STEP_WAIT;
            loop {
                tokio::select! {
                    biased;
                    signal = signals.recv() => {
                        if signal.is_some_and(|s| s.contains(text.as_str())) {
                            break;
                        }
                    }
                    _ = done.wait_for(|d| *d) => {
                        return Err(format!("{file}:{}: the run ended before {text:?}", step.line));
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(format!("{file}:{}: no {text:?} within {STEP_WAIT:?}", step.line));
                    }
                }
            }
        }
        cast.act(&step.action)
            .await
            .map_err(|e| format!("{file}:{}: {e}", step.line))?;
    }
    Ok(())
}

/// Sends every DVM feedback on the relay as a signal `WHO: EXTRA-OR-STATUS` (then its content).
async fn listen(
    relay: &RelayUrl,
    names: Vec<(PublicKey, String)>,
    signals: mpsc::UnboundedSender<String>,
) -> Client {
    let client = connect(relay, &Keys::generate()).await.unwrap();
    let mut notifications = client.notifications();
    client
        .subscribe(Filter::new().kind(Kind::from_u16(7000)), None)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok(notification) = notifications.recv().await {
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            let Ok(feedback) = quorum_proto::nip90::JobFeedback::from_event(&event) else {
                continue;
            };
            let who = names
                .iter()
                .find(|(key, _)| *key == event.pubkey)
                .map_or_else(|| event.pubkey.to_hex()[..12].to_string(), |n| n.1.clone());
            let what = feedback
                .extra
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| feedback.status.as_str().to_string());
            let mut signal = format!("{who}: {what}");
            if !event.content.is_empty() {
                signal = format!("{signal}\n{}", event.content);
            }
            if signals.send(signal).is_err() {
                break;
            }
        }
    });
    client
}

/// Runs one scenario on a network of its own; returns what did not end as expected.
async fn scenario(root: &Path, scenarios: &Path, name: &str) -> Vec<String> {
    let read = |suffix: &str| std::fs::read_to_string(scenarios.join(format!("{name}{suffix}")));
    let actors_file = format!("{name}.actors");
    let script = match read(".actors") {
        Ok(text) => match parse_script(&actors_file, &text) {
            Ok(script) => script,
            Err(error) => return vec![error],
        },
        Err(_) => Script::default(),
    };
    let dir = root.join(name);
    let network = Network::start(&dir).await;
    let (repo, _) = sample_repo(&dir);
    let maintainer = Keys::generate();
    let stranger = Keys::generate();
    let mut cast = Cast {
        network: &network,
        runners: vec![
            Some(network.runner(&dir.join("r1"), true).await),
            Some(network.runner(&dir.join("r2"), true).await),
        ],
        router: None,
        router_keys: Keys::generate(),
        router_data: dir.join("router"),
        maintainer: maintainer.clone(),
        stranger: stranger.clone(),
    };
    let runner_keys: Vec<PublicKey> = cast.runners.iter().flatten().map(Dvm::public_key).collect();
    let mut names = vec![
        (runner_keys[0], "runner 1".to_string()),
        (runner_keys[1], "runner 2".to_string()),
        (cast.router_keys.public_key(), "router".to_string()),
    ];
    let mut dvms = Vec::new();
    for (script_path, kind) in &script.dvms {
        let interop = quorum_testkit::node::ensure_installed();
        let path = interop.join("..").join(script_path);
        let daemon = Daemon::spawn(
            "node",
            &[
                path.to_str().unwrap(),
                network.relay.as_str(),
                &kind.to_string(),
            ],
        );
        let key = daemon.value_of("dvm");
        names.push((PublicKey::from_hex(&key).unwrap(), "dvm".to_string()));
        dvms.push((daemon, key));
    }
    if script.router {
        cast.router = Some(network.router(&cast.router_data, &cast.router_keys).await);
    }

    let hex = |keys: &Keys| keys.public_key().to_hex();
    let mut pipeline = read(".pipeline.yml")
        .unwrap()
        .replace("$MAINTAINER", &hex(&maintainer))
        .replace("$STRANGER", &hex(&stranger));
    if let Some((_, key)) = dvms.first() {
        pipeline = pipeline.replace("$DVM", key);
    }
    let expected = read(".expected")
        .unwrap()
        .replace("$MAINTAINER", &hex(&maintainer)[..12])
        .replace("$STRANGER", &hex(&stranger)[..12]);
    // The scenario runs on its own commit carrying its pipeline, as a maintainer would push it.
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), &pipeline).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "--allow-empty", "-m", name]);
    let plan = match quorum_pipeline::parse(".quorum/pipeline.yml", &pipeline) {
        Ok(plan) => plan,
        Err(diagnostics) => return vec![format!("{name}: does not lint:\n{diagnostics}")],
    };
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit: git(&repo, &["rev-parse", "HEAD"]),
        repo_id: Some(quorum_proto::nip34::RepoCoordinate::new(
            maintainer.public_key(),
            "sample",
        )),
        ..RunContext::default()
    };

    let (signal_tx, mut signals) = mpsc::unbounded_channel();
    let listener = listen(&network.relay, names, signal_tx.clone()).await;
    let (done_tx, done) = watch::channel(false);
    let mut client = network.client().await;
    if let Some(silence) = script.patience {
        client = client.with_patience(Patience {
            until_taken: Duration::from_secs(10),
            silence,
        });
    }
    let router_key = cast.router_keys.public_key();
    let run = async {
        let endings = if script.router {
            run_through_router(&network.relay, router_key, &context, &runner_keys).await
        } else {
            let config = EngineConfig {
                runners: runner_keys.clone(),
                ..EngineConfig::default()
            };
            let mut reporter = Signals(signal_tx);
            let outcome = execute(&client, &plan, &context, &config, Vec::new(), &mut reporter);
            Ok(outcome.await.jobs.iter().map(ending).collect())
        };
        let _ = done_tx.send(true);
        endings
    };
    let acting = perform(&actors_file, &script.steps, &mut cast, &mut signals, done);
    let mut failures = Vec::new();
    match tokio::time::timeout(SCENARIO_WAIT, async { tokio::join!(run, acting) }).await {
        Err(_) => failures.push(format!("{name}: did not finish within {SCENARIO_WAIT:?}")),
        Ok((endings, acted)) => {
            if let Err(error) = acted {
                failures.push(error);
            }
            match endings {
                Ok(endings) => failures.extend(compare(name, &expected, &endings)),
                Err(error) => failures.push(format!("{name}: {error}")),
            }
        }
    }
    for (daemon, _) in dvms {
        daemon.kill_hard();
    }
    listener.shutdown().await;
    client.shutdown().await;
    cast.shutdown().await;
    failures
}

/// Sends the run to the router DVM as a customer and waits for its report.
async fn run_through_router(
    relay: &RelayUrl,
    router: PublicKey,
    context: &RunContext,
    runners: &[PublicKey],
) -> Result<Vec<Ending>, String> {
    let keys = Keys::generate();
    let customer = connect(relay, &keys).await?;
    let mut notifications = customer.notifications();
    customer
        .subscribe(Filter::new().pubkey(keys.public_key()), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = quorum_proto::run::RunRequest::new(&context.repo, &context.commit);
    request.runners = runners.to_vec();
    let request = request
        .to_request()
        .provider(router)
        .to_event_builder()
        .sign_with_keys(&keys)
        .map_err(|e| e.to_string())?;
    customer
        .send_event(&request)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + SCENARIO_WAIT;
    let report = loop {
        let notification = tokio::time::timeout_at(deadline, notifications.recv())
            .await
            .map_err(|_| "no run result from the router")?
            .map_err(|e| e.to_string())?;
        if let RelayPoolNotification::Event { event, .. } = notification
            && event.kind.as_u16() == 6700
            && event.tags.event_ids().any(|id| *id == request.id)
        {
            let result =
                quorum_proto::nip90::JobResult::from_event(&event).map_err(|e| e.to_string())?;
            break serde_json::from_str::<quorum_proto::run::RunReport>(&result.content)
                .map_err(|e| e.to_string())?;
        }
    };
    customer.shutdown().await;
    Ok(report
        .jobs
        .into_iter()
        .map(|j| (j.id, j.status, j.reason.unwrap_or_default()))
        .collect())
}

/// What of `expected` the endings do not match.
fn compare(name: &str, expected: &str, endings: &[Ending]) -> Vec<String> {
    let mut failures = Vec::new();
    let lines: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines {
        let mut parts = line.splitn(3, ' ');
        let (job, want, reason) = (
            parts.next().unwrap(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let Some((_, got, why)) = endings.iter().find(|(id, _, _)| id == job) else {
            failures.push(format!("{name}: no job {job}"));
            continue;
        };
        if got != want || !why.contains(reason) {
            failures.push(format!(
                "{name}: {job} ended {got} ({why:?}), expected {want} {reason:?}"
            ));
        }
    }
    if lines.len() != endings.len() {
        failures.push(format!(
            "{name}: {} jobs ran, {} expected",
            endings.len(),
            lines.len()
        ));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_file_ends_as_expected() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&scenarios)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".pipeline.yml").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 5, "scenario files are missing: {names:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in &names {
        failures.extend(scenario(dir.path(), &scenarios, name).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
