//! Fetching exactly the requested commit with the git CLI, outside the sandbox.
//!
//! The repository URL comes from a stranger, so:
//! - only network transports are allowed by default: a `file://` URL or a bare path would let
//!   a request read repositories on the DVM's machine;
//! - the host must resolve to public addresses only, unless the operator allows private ones
//!   ([`GitPolicy::allow_private`]): otherwise a request could make the DVM fetch from
//!   127.0.0.1, its LAN or the cloud metadata address 169.254.169.254 (SSRF). The check uses
//!   the SSRF guard of the Blossom mirror ([`quorum_blossom::address`]), and git connects to
//!   exactly the addresses checked: http(s) through curl's resolve list
//!   (`http.curloptResolve`), `git://` by putting the checked address in the URL. Redirects
//!   are never followed, and the operator's proxy variables are not used (a proxy would
//!   resolve the name itself);
//! - a fetch is bounded in time (all its git commands together) and in bytes: the `.git`
//!   directory and the checkout together are measured every 0.25 s while git runs and once
//!   after each command, and past [`GitPolicy::max_bytes`] git and its helpers (one process
//!   group) are killed. A failed fetch leaves nothing behind;
//! - git's own config and credential helpers are ignored, and what git prints goes to the
//!   operator's log only: the requester gets a short reason of ours ([`GitError::Command`]).
//!
//! After checkout, `HEAD` must be the requested commit, byte for byte.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use quorum_blossom::address::{self, AddressError};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("repository URL {0:?} is not allowed: use https://, http:// or git://")]
    UrlNotAllowed(String),
    #[error(
        "repository URL {url} is not allowed: {reason}; this DVM fetches from public addresses only"
    )]
    AddressNotAllowed { url: String, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("git {step} failed for {url}: {detail}")]
    Command {
        step: &'static str,
        url: String,
        detail: String,
    },
    #[error("git {step} took longer than {secs}s for {url}")]
    Timeout {
        step: &'static str,
        url: String,
        secs: u64,
    },
    #[error("{url} is larger than this DVM fetches (more than {max} bytes with the checkout)")]
    TooLarge { url: String, max: u64 },
    #[error("{url} does not serve commit {commit}")]
    NoSuchCommit { url: String, commit: String },
    #[error("checked out {found}, not the requested commit {commit}")]
    WrongCommit { commit: String, found: String },
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
}

/// Which repositories a runner may fetch, and how much.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitPolicy {
    /// Allow `file://` URLs and local paths (the embedded network and tests only).
    pub allow_local: bool,
    /// Allow hosts that resolve to loopback, private, link-local and other non-public
    /// addresses (the embedded network, tests, or a git server on the operator's own network).
    pub allow_private: bool,
    /// Time limit for a whole fetch (all its git commands) or listing; default 600 s.
    pub timeout: Option<Duration>,
    /// Most bytes a fetch may write, the `.git` directory and the checkout together; default
    /// [`DEFAULT_MAX_BYTES`].
    pub max_bytes: Option<u64>,
}

/// What a fetch may write when the policy does not say: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long resolving a repository's host may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a running fetch or checkout is measured against the size cap.
const SIZE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Most of git's stdout kept (a listing of many refs) and of its stderr (for the log); the
/// rest is read and dropped, so that a server cannot fill our memory through git.
const STDOUT_CAP: usize = 64 << 20;
const STDERR_CAP: usize = 64 << 10;
/// Variables of the DVM's environment that would redirect git (to another repository, another
/// config, or a proxy that resolves names itself): removed for every git command.
const SCRUBBED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_PROXY_COMMAND",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// The URL with any user:password part removed, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

fn check_url(url: &str, policy: &GitPolicy) -> Result<(), GitError> {
    let scheme = url::Url::parse(url).map(|u| u.scheme().to_string()).ok();
    let allowed = match scheme.as_deref() {
        Some("https" | "http" | "git") => true,
        Some("file") => policy.allow_local,
        // scp-like `host:path` and bare paths parse as no URL (or a one-letter scheme).
        _ => policy.allow_local && Path::new(url).is_absolute(),
    };
    if allowed {
        Ok(())
    } else {
        Err(GitError::UrlNotAllowed(redact_url(url)))
    }
}

/// How git reaches a checked URL: the URL to give git (for `git://`, with the checked address
/// in place of the name) and the `-c` settings that pin and restrict the transport.
struct Route {
    url: String,
    config: Vec<String>,
}

/// Checks `url` against the policy, resolves its host and refuses non-public addresses
/// (unless allowed), and pins what was checked.
async fn route(url: &str, policy: &GitPolicy) -> Result<Route, GitError> {
    check_url(url, policy)?;
    let shown = redact_url(url);
    let mut config: Vec<String> = [
        "protocol.allow=never",
        "protocol.https.allow=always",
        "protocol.http.allow=always",
        "protocol.git.allow=always",
        // A redirect would lead to a host nobody checked.
        "http.followRedirects=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if policy.allow_local {
        config.push("protocol.file.allow=always".into());
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https" | "git") => parsed,
        // A local repository: no network, nothing to resolve.
        _ => {
            return Ok(Route {
                url: url.to_string(),
                config,
            });
        }
    };
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| GitError::UrlNotAllowed(shown.clone()))?
        .to_string();
    let port = match parsed.scheme() {
        "git" => parsed.port().unwrap_or(9418),
        _ => parsed
            .port_or_known_default()
            .ok_or_else(|| GitError::UrlNotAllowed(shown.clone()))?,
    };
    let addrs = address::resolve_checked(&host, port, policy.allow_private, DNS_TIMEOUT)
        .await
        .map_err(|e| match e {
            AddressError::NotPublic { addr, .. } => {
                tracing::info!(url = %shown, %addr, "refused a repository on a non-public address");
                GitError::AddressNotAllowed {
                    url: shown.clone(),
                    reason: e.to_string(),
                }
            }
            other => GitError::Unreachable {
                url: shown.clone(),
                reason: other.to_string(),
            },
        })?;
    let literal = matches!(parsed.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
    if literal {
        return Ok(Route {
            url: url.to_string(),
            config,
        });
    }
    if parsed.scheme() == "git" {
        // git:// has no TLS and no name check: connecting to the checked address is the pin.
        // (The `host=` git sends is then that address; only virtual-hosting daemons care.)
        let mut pinned = parsed.clone();
        pinned
            .set_ip_host(addrs[0].ip())
            .map_err(|()| GitError::UrlNotAllowed(shown.clone()))?;
        return Ok(Route {
            url: pinned.to_string(),
            config,
        });
    }
    // http(s): the name stays in the URL (TLS checks it), curl connects to the checked
    // addresses only.
    let list: Vec<String> = addrs
        .iter()
        .map(|a| match a.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        })
        .collect();
    config.push(format!(
        "http.curloptResolve={host}:{port}:{}",
        list.join(",")
    ));
    Ok(Route {
        url: url.to_string(),
        config,
    })
}

/// `-c key=value` arguments for `config`.
fn config_args(config: &[String]) -> Vec<&str> {
    config.iter().flat_map(|c| ["-c", c.as_str()]).collect()
}

/// Clones `commit` of `url` into `dest` (which must not exist) and returns the commit time
/// (Unix seconds), the step's `SOURCE_DATE_EPOCH`. On failure `dest` is removed: nothing
/// half-fetched is left for anyone to build from.
pub async fn fetch_commit(
    url: &str,
    commit: &str,
    dest: &Path,
    policy: &GitPolicy,
) -> Result<i64, GitError> {
    let fetched = fetch_into(url, commit, dest, policy).await;
    if fetched.is_err()
        && let Err(err) = std::fs::remove_dir_all(dest)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(
            "cannot remove the failed checkout {}: {err}",
            dest.display()
        );
    }
    fetched
}

async fn fetch_into(
    url: &str,
    commit: &str,
    dest: &Path,
    policy: &GitPolicy,
) -> Result<i64, GitError> {
    let route = route(url, policy).await?;
    let shown = redact_url(url);
    let timeout = policy.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let limits = Limits {
        deadline: Instant::now() + timeout,
        secs: timeout.as_secs(),
        watch: Some((dest, policy.max_bytes.unwrap_or(DEFAULT_MAX_BYTES))),
    };
    std::fs::create_dir_all(dest).map_err(GitError::Spawn)?;
    run_git(dest, &["init", "--quiet"], "init", &shown, &limits).await?;
    run_git(
        dest,
        &["remote", "add", "origin", &route.url],
        "remote add",
        &shown,
        &limits,
    )
    .await?;
    let network = config_args(&route.config);
    // Most servers let a client fetch one commit by id (protocol v2); fall back to all refs.
    let mut shallow = network.clone();
    shallow.extend([
        "fetch",
        "--quiet",
        "--depth",
        "1",
        "--no-tags",
        "origin",
        commit,
    ]);
    match run_git(dest, &shallow, "fetch", &shown, &limits).await {
        Ok(_) => {}
        // Out of time or bytes: fetching more would not help.
        Err(err @ (GitError::Timeout { .. } | GitError::TooLarge { .. })) => return Err(err),
        Err(err) => {
            tracing::debug!("fetching {commit} by id failed ({err}); fetching all refs");
            let mut all = network.clone();
            all.extend([
                "fetch",
                "--quiet",
                "--no-tags",
                "origin",
                "+refs/*:refs/remotes/origin/*",
            ]);
            run_git(dest, &all, "fetch", &shown, &limits).await?;
        }
    }
    let object = format!("{commit}^{{commit}}");
    match run_git(
        dest,
        &["cat-file", "-e", &object],
        "cat-file",
        &shown,
        &limits,
    )
    .await
    {
        Ok(_) => {}
        Err(err @ (GitError::Timeout { .. } | GitError::TooLarge { .. })) => return Err(err),
        Err(_) => {
            return Err(GitError::NoSuchCommit {
                url: shown,
                commit: commit.to_string(),
            });
        }
    }
    // The checkout counts too: a small pack can unpack into a huge tree.
    run_git(
        dest,
        &["checkout", "--quiet", "--detach", commit],
        "checkout",
        &shown,
        &limits,
    )
    .await?;
    let head = run_git(dest, &["rev-parse", "HEAD"], "rev-parse", &shown, &limits).await?;
    if head.trim() != commit {
        return Err(GitError::WrongCommit {
            commit: commit.to_string(),
            found: head.trim().to_string(),
        });
    }
    let time = run_git(
        dest,
        &["show", "-s", "--format=%ct", "HEAD"],
        "show",
        &shown,
        &limits,
    )
    .await?;
    time.trim().parse().map_err(|_| GitError::Command {
        step: "show",
        url: shown,
        detail: format!("unexpected commit time {:?}", time.trim()),
    })
}

/// The branches and tags `url` serves, as `refs/heads/…`/`refs/tags/…` → commit id (annotated
/// tags resolved to the commit they point at).
pub async fn ls_remote(
    url: &str,
    policy: &GitPolicy,
) -> Result<std::collections::BTreeMap<String, String>, GitError> {
    let route = route(url, policy).await?;
    let shown = redact_url(url);
    let timeout = policy.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let scratch = std::env::temp_dir();
    let mut args = config_args(&route.config);
    args.extend(["ls-remote", "--heads", "--tags", route.url.as_str()]);
    let listing = git(&scratch, &args, "ls-remote", &shown, timeout).await?;
    let mut refs = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let Some((commit, name)) = line.split_once('\t') else {
            continue;
        };
        match name.strip_suffix("^{}") {
            // The peeled line of an annotated tag: the commit it points at wins.
            Some(tag) => {
                refs.insert(tag.to_string(), commit.to_string());
            }
            None => {
                refs.entry(name.to_string())
                    .or_insert_with(|| commit.to_string());
            }
        }
    }
    Ok(refs)
}

/// Runs one git command in `dir` with its own time limit and no size watch.
async fn git(
    dir: &Path,
    args: &[&str],
    step: &'static str,
    shown_url: &str,
    timeout: Duration,
) -> Result<String, GitError> {
    let limits = Limits {
        deadline: Instant::now() + timeout,
        secs: timeout.as_secs(),
        watch: None,
    };
    run_git(dir, args, step, shown_url, &limits).await
}

/// The bounds of one git command: a deadline (shared by the commands of one fetch), and
/// optionally a directory whose size must stay under a cap.
struct Limits<'a> {
    deadline: Instant,
    /// The whole budget, for the message.
    secs: u64,
    watch: Option<(&'a Path, u64)>,
}

/// Kills a process group when dropped: git runs its transport helpers (`git-remote-https`,
/// `index-pack`, …) as children, which must not go on writing after git was stopped.
struct ProcessGroup(Option<rustix::process::Pid>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // ESRCH (all gone already) is the usual, fine outcome.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

async fn run_git(
    dir: &Path,
    args: &[&str],
    step: &'static str,
    shown_url: &str,
    limits: &Limits<'_>,
) -> Result<String, GitError> {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        // Ignore the operator's and the system's git config: no credential helpers, no
        // URL rewrites, no hooks from anywhere.
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .args(["-c", "core.hooksPath=/dev/null"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own group, so that stopping it stops its helpers too.
        .process_group(0);
    for var in SCRUBBED_ENV {
        command.env_remove(var);
    }
    let mut child = command.spawn().map_err(GitError::Spawn)?;
    let _group = ProcessGroup(
        child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?)),
    );
    // Read both pipes while git runs: a git that fills a pipe nobody reads never exits.
    let stdout = tokio::spawn(read_capped(child.stdout.take(), STDOUT_CAP));
    let stderr = tokio::spawn(read_capped(child.stderr.take(), STDERR_CAP));
    let too_large = |max| GitError::TooLarge {
        url: shown_url.to_string(),
        max,
    };
    let timed_out = || GitError::Timeout {
        step,
        url: shown_url.to_string(),
        secs: limits.secs,
    };
    let mut tick = tokio::time::interval(SIZE_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(GitError::Spawn)?,
            () = tokio::time::sleep_until(limits.deadline) => return Err(timed_out()),
            _ = tick.tick(), if limits.watch.is_some() => {
                if let Some((path, max)) = limits.watch
                    && dir_size(path).await > max
                {
                    return Err(too_large(max));
                }
            }
        }
    };
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    let (stdout, stderr) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
    if let Some((path, max)) = limits.watch
        && dir_size(path).await > max
    {
        return Err(too_large(max));
    }
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        // The operator may read git's own words; the requester gets ours.
        tracing::info!(step, url = %shown_url, "git failed: {}", redact_text(stderr.trim()));
        return Err(GitError::Command {
            step,
            url: shown_url.to_string(),
            detail: reason(&stderr, status),
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Reads a pipe to its end, keeping at most `cap` bytes.
async fn read_capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Bytes of the files under `path` (symlinks not followed); what cannot be read counts 0.
async fn dir_size(path: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(path) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|entry| match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&entry.path()),
                Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => 0,
            })
            .sum()
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || walk(&path))
        .await
        .unwrap_or(0)
}

/// A short reason of ours for a failed git command, from what git printed: the requester
/// learns what went wrong, not the server's words or our machine's details.
fn reason(stderr: &str, status: std::process::ExitStatus) -> String {
    let text = stderr.to_ascii_lowercase();
    let known: &[(&[&str], &str)] = &[
        (
            &[
                "redirect",
                "error: 301",
                "error: 302",
                "error: 303",
                "error: 307",
                "error: 308",
            ],
            "the server answered with a redirect, which this DVM does not follow",
        ),
        (
            &[
                "error: 401",
                "error: 403",
                "authentication",
                "could not read username",
                "could not read password",
                "terminal prompts disabled",
            ],
            "the repository needs credentials",
        ),
        (
            &[
                "couldn't find remote ref",
                "not our ref",
                "unadvertised object",
                "no such remote ref",
            ],
            "the server does not offer that ref or commit",
        ),
        (
            &[
                "repository not found",
                "not found",
                "error: 404",
                "does not appear to be a git repository",
                "not exported",
                "no such repository",
            ],
            "the server has no such repository",
        ),
        (
            &["ssl", "tls", "certificate"],
            "the TLS connection to the server failed",
        ),
        (
            &["timed out", "timeout"],
            "the connection to the server timed out",
        ),
        (
            &[
                "connection refused",
                "failed to connect",
                "couldn't connect",
                "unable to connect",
                "could not resolve",
                "network is unreachable",
                "no route to host",
            ],
            "cannot connect to the server",
        ),
        (
            &[
                "hung up",
                "early eof",
                "unexpected disconnect",
                "broken pipe",
            ],
            "the server closed the connection early",
        ),
        (
            &["not allowed", "unsupported", "unknown protocol"],
            "the transport is not allowed",
        ),
        (
            &[
                "invalid",
                "corrupt",
                "bad object",
                "bad pack",
                "protocol error",
            ],
            "the server sent invalid data",
        ),
    ];
    known
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| text.contains(n)))
        .map(|(_, reason)| reason.to_string())
        .unwrap_or_else(|| match status.code() {
            Some(code) => format!("git exited with status {code}"),
            None => "git was killed".to_string(),
        })
}

/// `text` with the `user:password@` part of any URL in it removed (git may print the URL it
/// was given, credentials and all), for the operator's log.
fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(i) => out.push_str(&authority[i + 1..]),
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The content of `path` at `commit` in the checkout `dir` (read from git's objects, never from
/// the work tree, which a step may have changed), or `None` when the commit has no such file.
/// A file larger than `max_bytes` is an error.
pub async fn show_file(
    dir: &Path,
    commit: &str,
    path: &str,
    max_bytes: u64,
    policy: &GitPolicy,
) -> Result<Option<String>, GitError> {
    let timeout = policy.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let object = format!("{commit}:{path}");
    let shown = format!("{}", dir.display());
    if git(
        dir,
        &["cat-file", "-e", &object],
        "cat-file",
        &shown,
        timeout,
    )
    .await
    .is_err()
    {
        return Ok(None);
    }
    let size = git(
        dir,
        &["cat-file", "-s", &object],
        "cat-file",
        &shown,
        timeout,
    )
    .await?;
    let size: u64 = size.trim().parse().map_err(|_| GitError::Command {
        step: "cat-file",
        url: shown.clone(),
        detail: format!("unexpected size {:?}", size.trim()),
    })?;
    if size > max_bytes {
        return Err(GitError::Command {
            step: "cat-file",
            url: shown,
            detail: format!("{path} at {commit} is {size} bytes; at most {max_bytes} are read"),
        });
    }
    git(
        dir,
        &["cat-file", "blob", &object],
        "cat-file",
        &shown,
        timeout,
    )
    .await
    .map(Some)
}

/// Whether `commit` (already fetched into the checkout `dir`) is reachable from one of `tips`,
/// which are fetched from `url` with their history (the `ancestor` source rule), through the
/// same checked, pinned route as [`fetch_commit`] and within the same size and time bounds.
pub async fn reaches(
    dir: &Path,
    url: &str,
    commit: &str,
    tips: &[String],
    policy: &GitPolicy,
) -> Result<bool, GitError> {
    let route = route(url, policy).await?;
    let shown = redact_url(url);
    let timeout = policy.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let limits = Limits {
        deadline: Instant::now() + timeout,
        secs: timeout.as_secs(),
        watch: Some((dir, policy.max_bytes.unwrap_or(DEFAULT_MAX_BYTES))),
    };
    for tip in tips {
        if tip == commit {
            return Ok(true);
        }
        let mut fetch = config_args(&route.config);
        fetch.extend([
            "fetch",
            "--quiet",
            "--no-tags",
            "--update-shallow",
            route.url.as_str(),
            tip.as_str(),
        ]);
        match run_git(dir, &fetch, "fetch", &shown, &limits).await {
            Ok(_) => {}
            Err(err @ (GitError::Timeout { .. } | GitError::TooLarge { .. })) => return Err(err),
            Err(err) => {
                tracing::debug!("cannot fetch tip {tip}: {err}");
                continue;
            }
        }
        let ancestor = run_git(
            dir,
            &["merge-base", "--is-ancestor", commit, tip],
            "merge-base",
            &shown,
            &limits,
        )
        .await;
        if ancestor.is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_transports_by_default() {
        let strict = GitPolicy::default();
        for url in ["https://h/r.git", "http://127.0.0.1:1/r", "git://h/r"] {
            assert!(check_url(url, &strict).is_ok(), "{url}");
        }
        for url in [
            "file:///root/secrets",
            "/root/repo",
            "ext::sh -c evil",
            "h:repo",
            "ssh://h/r",
        ] {
            assert!(check_url(url, &strict).is_err(), "{url}");
        }
        let local = GitPolicy {
            allow_local: true,
            ..GitPolicy::default()
        };
        assert!(check_url("file:///tmp/r", &local).is_ok());
        assert!(check_url("/tmp/r", &local).is_ok());
        assert!(check_url("ext::sh -c evil", &local).is_err());
    }

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact_url("https://user:token@git.example/r.git"),
            "https://git.example/r.git"
        );
        let err = check_url("ssh://me:pw@h/r", &GitPolicy::default()).unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert_eq!(
            redact_text("fatal: unable to access 'https://me:pw@h/r/': 403"),
            "fatal: unable to access 'https://h/r/': 403"
        );
        assert_eq!(redact_text("git://h:9418/r a@b"), "git://h:9418/r a@b");
    }

    #[tokio::test]
    async fn routes_pin_what_was_checked() {
        let open = GitPolicy {
            allow_private: true,
            ..GitPolicy::default()
        };
        let git = route("git://localhost:9/r.git", &open).await.unwrap();
        assert!(git.url.starts_with("git://127.0.0.1:9/") || git.url.starts_with("git://[::1]:9/"));
        let http = route("http://localhost:8/r.git", &open).await.unwrap();
        assert_eq!(http.url, "http://localhost:8/r.git");
        assert!(
            http.config
                .iter()
                .any(|c| c.starts_with("http.curloptResolve=localhost:8:")),
            "{:?}",
            http.config
        );
        assert!(
            http.config
                .iter()
                .any(|c| c == "http.followRedirects=false")
        );
        for url in [
            "http://127.0.0.1:8/r",
            "git://localhost/r",
            "https://[::1]/r",
        ] {
            let err = route(url, &GitPolicy::default()).await.err().unwrap();
            assert!(
                matches!(err, GitError::AddressNotAllowed { .. }),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn reasons_are_ours() {
        let failed = std::process::ExitStatus::default();
        let cases = [
            (
                "fatal: unable to access 'http://h/r/': The requested URL returned error: 302",
                "redirect",
            ),
            (
                "fatal: remote error: access denied or repository not exported: /nope",
                "no such repository",
            ),
            ("fatal: couldn't find remote ref 0123", "does not offer"),
            (
                "fatal: unable to connect to h:\nh[0: 127.0.0.1]: errno=Connection refused",
                "cannot connect",
            ),
        ];
        for (stderr, expected) in cases {
            let text = reason(stderr, failed);
            assert!(text.contains(expected), "{stderr:?} -> {text:?}");
            assert!(!text.contains("fatal"), "{text}");
        }
        assert!(reason("something new", failed).starts_with("git exited"));
    }
}
