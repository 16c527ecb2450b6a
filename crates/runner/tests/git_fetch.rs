//! Fetching strangers' repositories, against real git servers on loopback: `git daemon`
//! (git://) and `git http-backend` behind a small HTTP server (smart HTTP). The default policy
//! refuses non-public hosts before connecting; allowed, fetches go through the checked address;
//! redirects are not followed; a repository past the size cap or the time limit fails and
//! leaves nothing behind; git's own words do not reach the requester.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use quorum_dvm::client::{JobOutcome, Quiet};
use quorum_dvm::{Dvm, DvmConfig};
use quorum_proto::nostr::Keys;
use quorum_proto::step::{StepJob, StepReport};
use quorum_runner::git::{self, GitError, GitPolicy};
use quorum_runner::{Runner, RunnerConfig};
use quorum_testkit::daemon::Daemon;
use quorum_testkit::git::{git as run_git, sample_repo};
use quorum_testnet::Network;
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_secs(60);

fn private() -> GitPolicy {
    GitPolicy {
        allow_private: true,
        timeout: Some(Duration::from_secs(30)),
        ..GitPolicy::default()
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` serving every repository under `root` on 127.0.0.1; killed when dropped.
struct GitDaemon {
    port: u16,
    _daemon: Daemon,
}

async fn git_daemon(root: &Path) -> GitDaemon {
    std::fs::create_dir_all(root).unwrap();
    let port = free_port();
    // `git daemon` would run `git-daemon` as a child that outlives a kill of `git`: start the
    // daemon itself, so that dropping it stops it.
    let exec_path = run_git(root, &["--exec-path"]);
    let daemon = Daemon::spawn(
        &format!("{exec_path}/git-daemon"),
        &[
            "--reuseaddr",
            "--export-all",
            &format!("--base-path={}", root.display()),
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            root.to_str().unwrap(),
        ],
    );
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return GitDaemon {
                port,
                _daemon: daemon,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("git daemon did not listen on {port}");
}

/// A bare copy of the sample project under `root/NAME.git`; returns its commit.
fn bare_repo(work: &Path, root: &Path, name: &str) -> String {
    let (repo, commit) = sample_repo(&work.join(name));
    std::fs::create_dir_all(root).unwrap();
    let bare = root.join(format!("{name}.git"));
    run_git(
        work,
        &[
            "clone",
            "--quiet",
            "--bare",
            repo.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    commit
}

/// A bare repository whose one commit holds `file` with `bytes`.
fn bare_repo_with(root: &Path, name: &str, file: &str, bytes: &[u8]) -> String {
    let work = root.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    run_git(&work, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(work.join(file), bytes).unwrap();
    run_git(&work, &["add", "."]);
    run_git(
        &work,
        &[
            "-c",
            "user.name=M",
            "-c",
            "user.email=m@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "big",
        ],
    );
    let commit = run_git(&work, &["rev-parse", "HEAD"]);
    let bare = root.join(format!("{name}.git"));
    run_git(
        root,
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    commit
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An HTTP server on 127.0.0.1 that counts its requests; stopped when dropped.
struct HttpServer {
    port: u16,
    requests: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Clone)]
struct Backend {
    root: PathBuf,
    requests: Arc<AtomicUsize>,
    /// Set: answer everything with a redirect to this base URL instead.
    redirect_to: Option<String>,
}

async fn http_server(root: &Path, redirect_to: Option<String>) -> HttpServer {
    let requests = Arc::new(AtomicUsize::new(0));
    let backend = Backend {
        root: root.to_path_buf(),
        requests: requests.clone(),
        redirect_to,
    };
    let app = axum::Router::new().fallback(serve_git).with_state(backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    HttpServer {
        port,
        requests,
        _stop: stop,
    }
}

/// Smart HTTP through `git http-backend` (CGI), or a redirect.
async fn serve_git(
    State(backend): State<Backend>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    backend.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(base) = &backend.redirect_to {
        let target = match uri.query() {
            Some(q) => format!("{base}{}?{q}", uri.path()),
            None => format!("{base}{}", uri.path()),
        };
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, target)
            .body(Body::empty())
            .unwrap();
    }
    let header_env = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &backend.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header_env("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header_env("content-encoding"))
        .env("HTTP_GIT_PROTOCOL", header_env("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("CGI headers end");
    let head = String::from_utf8_lossy(&out.stdout[..split]).to_string();
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.split("\r\n") {
        let (name, value) = line.split_once(':').unwrap();
        if name.eq_ignore_ascii_case("status") {
            let code = value.trim().split(' ').next().unwrap();
            status = StatusCode::from_bytes(code.as_bytes()).unwrap();
        } else {
            response = response.header(name.trim(), value.trim());
        }
    }
    response
        .status(status)
        .body(Body::from(out.stdout[split + 4..].to_vec()))
        .unwrap()
}

fn assert_refused(err: &GitError, url: &str) {
    assert!(
        matches!(err, GitError::AddressNotAllowed { .. }),
        "{url}: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("loopback, private or link-local") && text.contains("public addresses only"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_refuses_non_public_hosts_before_connecting() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        let commit = bare_repo(dir.path(), &root, "app");
        let daemon = git_daemon(&root).await;
        let http = http_server(&root, None).await;
        let policy = GitPolicy::default();
        let urls = [
            format!("git://127.0.0.1:{}/app.git", daemon.port),
            format!("http://127.0.0.1:{}/app.git", http.port),
            // A name that resolves to loopback is refused like the address.
            format!("http://localhost:{}/app.git", http.port),
            format!("git://localhost:{}/app.git", daemon.port),
            "https://[::1]/app.git".to_string(),
            "git://10.1.2.3/app.git".to_string(),
            "http://192.168.0.1/app.git".to_string(),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ];
        for (i, url) in urls.iter().enumerate() {
            let dest = dir.path().join(format!("fetch-{i}"));
            let err = git::fetch_commit(url, &commit, &dest, &policy)
                .await
                .unwrap_err();
            assert_refused(&err, url);
            assert!(!dest.exists(), "{url} left {}", dest.display());
            let err = git::ls_remote(url, &policy).await.unwrap_err();
            assert_refused(&err, url);
        }
        // Refused before any connection: the HTTP server never heard of it.
        assert_eq!(http.requests.load(Ordering::SeqCst), 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_private_hosts_are_fetched_through_the_checked_address() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        let commit = bare_repo(dir.path(), &root, "app");
        // Enough tags that a listing overflows a pipe buffer (git must be read while it runs).
        let tags: String = (0..2000)
            .map(|i| format!("create refs/tags/release-{i:05} {commit}\n"))
            .collect();
        let mut update = std::process::Command::new("git")
            .args(["update-ref", "--stdin"])
            .current_dir(root.join("app.git"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        update
            .stdin
            .take()
            .unwrap()
            .write_all(tags.as_bytes())
            .unwrap();
        assert!(update.wait().unwrap().success());
        let daemon = git_daemon(&root).await;
        let http = http_server(&root, None).await;
        for (i, url) in [
            format!("git://127.0.0.1:{}/app.git", daemon.port),
            // The name is resolved and checked by us; git connects to what we checked.
            format!("git://localhost:{}/app.git", daemon.port),
            format!("http://localhost:{}/app.git", http.port),
        ]
        .iter()
        .enumerate()
        {
            let dest = dir.path().join(format!("fetch-{i}"));
            let time = git::fetch_commit(url, &commit, &dest, &private())
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(time, quorum_testkit::git::SAMPLE_COMMIT_TIME);
            assert_eq!(run_git(&dest, &["rev-parse", "HEAD"]), commit);
            assert_eq!(
                std::fs::read_to_string(dest.join("message.txt")).unwrap(),
                "quorum"
            );
            let refs = git::ls_remote(url, &private()).await.unwrap();
            assert_eq!(refs.get("refs/heads/main"), Some(&commit), "{url}");
            assert_eq!(refs.len(), 2001, "{url}");
        }
        assert!(http.requests.load(Ordering::SeqCst) > 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        let commit = bare_repo(dir.path(), &root, "app");
        // The real repository, and a server that redirects every request to it (as a public
        // host could redirect to an internal one).
        let target = http_server(&root, None).await;
        let redirector =
            http_server(&root, Some(format!("http://127.0.0.1:{}", target.port))).await;
        let url = format!("http://127.0.0.1:{}/app.git", redirector.port);
        let dest = dir.path().join("fetch");
        let err = git::fetch_commit(&url, &commit, &dest, &private())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GitError::Command { detail, .. } if detail.contains("redirect")),
            "{err}"
        );
        assert!(!dest.exists());
        let err = git::ls_remote(&url, &private()).await.unwrap_err();
        assert!(err.to_string().contains("redirect"), "{err}");
        assert!(redirector.requests.load(Ordering::SeqCst) > 0);
        assert_eq!(
            target.requests.load(Ordering::SeqCst),
            0,
            "git followed the redirect"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_past_the_size_cap_fails_and_leaves_nothing() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        std::fs::create_dir_all(&root).unwrap();
        // 3 MiB that do not compress: the pack itself is too big.
        let big = bare_repo_with(&root, "big", "noise.bin", &noise(3 << 20));
        // 32 MiB of zeros: a pack of a few KiB that unpacks into a checkout too big.
        let bomb = bare_repo_with(&root, "bomb", "zeros.bin", &vec![0u8; 32 << 20]);
        let small = bare_repo(dir.path(), &root, "small");
        let daemon = git_daemon(&root).await;
        let capped = GitPolicy {
            max_bytes: Some(2 << 20),
            ..private()
        };
        for (name, commit) in [("big", &big), ("bomb", &bomb)] {
            let url = format!("git://127.0.0.1:{}/{name}.git", daemon.port);
            let dest = dir.path().join(format!("fetch-{name}"));
            let err = git::fetch_commit(&url, commit, &dest, &capped)
                .await
                .unwrap_err();
            assert!(
                matches!(err, GitError::TooLarge { max, .. } if max == 2 << 20),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("larger than"), "{err}");
            assert!(!dest.exists(), "{name} left a partial checkout");
        }
        // The cap is not a refusal of everything.
        let url = format!("git://127.0.0.1:{}/small.git", daemon.port);
        let dest = dir.path().join("fetch-small");
        git::fetch_commit(&url, &small, &dest, &capped)
            .await
            .unwrap();
        assert_eq!(run_git(&dest, &["rev-parse", "HEAD"]), small);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_past_its_time_limit_is_stopped() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // A server that accepts and then says nothing.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream);
            }
        });
        let policy = GitPolicy {
            timeout: Some(Duration::from_secs(2)),
            ..private()
        };
        let dest = dir.path().join("fetch");
        let started = std::time::Instant::now();
        let err = git::fetch_commit(
            &format!("git://127.0.0.1:{port}/app.git"),
            &"a".repeat(40),
            &dest,
            &policy,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, GitError::Timeout { secs: 2, .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(!dest.exists());
        held.abort();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_failures_reach_the_requester_as_a_short_reason() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("served");
        let commit = bare_repo(dir.path(), &root, "app");
        let daemon = git_daemon(&root).await;
        let http = http_server(&root, None).await;
        for url in [
            format!("git://127.0.0.1:{}/missing.git", daemon.port),
            format!("http://127.0.0.1:{}/missing.git", http.port),
        ] {
            let dest = dir.path().join("fetch");
            let err = git::fetch_commit(&url, &commit, &dest, &private())
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, GitError::Command { detail, .. }
                    if detail == "the server has no such repository"),
                "{url}: {text}"
            );
            // Neither git's words nor our machine's paths.
            assert!(!text.contains("fatal"), "{text}");
            assert!(!text.contains(root.to_str().unwrap()), "{text}");
            assert!(!dest.exists());
        }
        // A commit the server does not have.
        let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
        let dest = dir.path().join("fetch");
        let err = git::fetch_commit(&url, &"0".repeat(40), &dest, &private())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GitError::Command { .. } | GitError::NoSuchCommit { .. }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("fatal"), "{err}");
        assert!(!dest.exists());
    })
    .await
    .unwrap();
}

/// A runner DVM fetching with `git`.
async fn runner(network: &Network, data: &Path, git: GitPolicy) -> Dvm {
    let keys = Keys::generate();
    let mut config = RunnerConfig::new(data.join("work"), vec![network.blossom.clone()]);
    config.git = git;
    let sandbox = quorum_sandbox::Bubblewrap::detect()
        .expect("bubblewrap is required for these tests: apt-get install bubblewrap");
    let runner = Runner::new(
        config,
        Arc::new(sandbox),
        quorum_blossom::BlossomClient::new(keys.clone()),
    );
    let config = DvmConfig::new(vec![network.relay.clone()], data.join("dvm"), "runner");
    Dvm::start(config, keys, runner).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_refuses_a_loopback_repository_unless_its_operator_allows_it() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let network = Network::start(dir.path()).await;
        let root = dir.path().join("served");
        let commit = bare_repo(dir.path(), &root, "app");
        let daemon = git_daemon(&root).await;
        let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
        let step = StepJob::new(&url, &commit, "cat message.txt");
        let client = network.client().await;

        let strict = runner(&network, &dir.path().join("strict"), GitPolicy::default()).await;
        let request = step.to_request().provider(strict.public_key());
        match client
            .run(&request, false, Duration::from_secs(30), &mut Quiet)
            .await
            .unwrap()
        {
            JobOutcome::Error { feedback, .. } => {
                let reason = feedback.extra.unwrap_or_default();
                assert!(
                    reason.contains("loopback, private or link-local")
                        && reason.contains("public addresses only"),
                    "{reason}"
                );
            }
            other => panic!("expected an error, got {other:?}"),
        }
        strict.shutdown().await;

        let open = runner(&network, &dir.path().join("open"), private()).await;
        let request = step.to_request().provider(open.public_key());
        match client
            .run(&request, false, Duration::from_secs(30), &mut Quiet)
            .await
            .unwrap()
        {
            JobOutcome::Result { content, .. } => {
                let report: StepReport = serde_json::from_str(&content).unwrap();
                assert!(report.succeeded(), "{report:?}");
                assert_eq!(report.commit, commit);
                assert!(report.log_tail.contains("quorum"), "{report:?}");
            }
            other => panic!("expected a result, got {other:?}"),
        }
        open.shutdown().await;
    })
    .await
    .unwrap();
}
