//! Fetching exactly the requested commit with the git CLI, outside the sandbox.
//!
//! The repository URL comes from a stranger, so only network transports are allowed by default
//! (a `file://` URL or a bare path would let a request read repositories on the DVM's machine),
//! git's own config and credential helpers are ignored, and every command has a time limit.
//! After checkout, `HEAD` must be the requested commit, byte for byte.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("repository URL {0:?} is not allowed: use https://, http:// or git://")]
    UrlNotAllowed(String),
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
    #[error("{url} does not serve commit {commit}")]
    NoSuchCommit { url: String, commit: String },
    #[error("checked out {found}, not the requested commit {commit}")]
    WrongCommit { commit: String, found: String },
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
}

/// Which repositories a runner may fetch.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitPolicy {
    /// Allow `file://` URLs and local paths (the embedded network and tests only).
    pub allow_local: bool,
    /// Time limit per git command.
    pub timeout: Option<Duration>,
}

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

/// Clones `commit` of `url` into `dest` (which must not exist) and returns the commit time
/// (Unix seconds), the step's `SOURCE_DATE_EPOCH`.
pub async fn fetch_commit(
    url: &str,
    commit: &str,
    dest: &Path,
    policy: &GitPolicy,
) -> Result<i64, GitError> {
    check_url(url, policy)?;
    let shown = redact_url(url);
    let timeout = policy.timeout.unwrap_or(Duration::from_secs(600));
    std::fs::create_dir_all(dest).map_err(GitError::Spawn)?;
    git(dest, &["init", "--quiet"], "init", &shown, timeout).await?;
    git(
        dest,
        &["remote", "add", "origin", url],
        "remote add",
        &shown,
        timeout,
    )
    .await?;
    // Transports are allowed by name, the rest (ext::, fd::, ssh, …) never.
    let mut allow = vec![
        "protocol.allow=never",
        "protocol.https.allow=always",
        "protocol.http.allow=always",
        "protocol.git.allow=always",
    ];
    if policy.allow_local {
        allow.push("protocol.file.allow=always");
    }
    for setting in allow {
        let (key, value) = setting.split_once('=').expect("key=value");
        git(dest, &["config", key, value], "config", &shown, timeout).await?;
    }
    // Most servers let a client fetch one commit by id (protocol v2); fall back to all refs.
    let shallow = git(
        dest,
        &[
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "origin",
            commit,
        ],
        "fetch",
        &shown,
        timeout,
    )
    .await;
    if let Err(err) = shallow {
        tracing::debug!("fetching {commit} by id failed ({err}); fetching all refs");
        git(
            dest,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "origin",
                "+refs/*:refs/remotes/origin/*",
            ],
            "fetch",
            &shown,
            timeout,
        )
        .await?;
    }
    let object = format!("{commit}^{{commit}}");
    if git(
        dest,
        &["cat-file", "-e", &object],
        "cat-file",
        &shown,
        timeout,
    )
    .await
    .is_err()
    {
        return Err(GitError::NoSuchCommit {
            url: shown,
            commit: commit.to_string(),
        });
    }
    git(
        dest,
        &["checkout", "--quiet", "--detach", commit],
        "checkout",
        &shown,
        timeout,
    )
    .await?;
    let head = git(dest, &["rev-parse", "HEAD"], "rev-parse", &shown, timeout).await?;
    if head.trim() != commit {
        return Err(GitError::WrongCommit {
            commit: commit.to_string(),
            found: head.trim().to_string(),
        });
    }
    let time = git(
        dest,
        &["show", "-s", "--format=%ct", "HEAD"],
        "show",
        &shown,
        timeout,
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
    check_url(url, policy)?;
    let shown = redact_url(url);
    let timeout = policy.timeout.unwrap_or(Duration::from_secs(600));
    let scratch = std::env::temp_dir();
    let mut allow = vec![
        "-c",
        "protocol.allow=never",
        "-c",
        "protocol.https.allow=always",
        "-c",
        "protocol.http.allow=always",
        "-c",
        "protocol.git.allow=always",
    ];
    if policy.allow_local {
        allow.extend(["-c", "protocol.file.allow=always"]);
    }
    allow.extend(["ls-remote", "--heads", "--tags", url]);
    let listing = git(&scratch, &allow, "ls-remote", &shown, timeout).await?;
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

async fn git(
    dir: &Path,
    args: &[&str],
    step: &'static str,
    shown_url: &str,
    timeout: Duration,
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
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Ok(output) => output.map_err(GitError::Spawn)?,
        Err(_) => {
            return Err(GitError::Timeout {
                step,
                url: shown_url.to_string(),
                secs: timeout.as_secs(),
            });
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail: String = stderr.trim().chars().take(500).collect();
        return Err(GitError::Command {
            step,
            url: shown_url.to_string(),
            detail,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
    let timeout = policy.timeout.unwrap_or(Duration::from_secs(600));
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
/// which are fetched from `url` with their history (the `ancestor` source rule).
pub async fn reaches(
    dir: &Path,
    url: &str,
    commit: &str,
    tips: &[String],
    policy: &GitPolicy,
) -> Result<bool, GitError> {
    check_url(url, policy)?;
    let shown = redact_url(url);
    let timeout = policy.timeout.unwrap_or(Duration::from_secs(600));
    for tip in tips {
        if tip == commit {
            return Ok(true);
        }
        if let Err(err) = git(
            dir,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--update-shallow",
                "origin",
                tip,
            ],
            "fetch",
            &shown,
            timeout,
        )
        .await
        {
            tracing::debug!("cannot fetch tip {tip}: {err}");
            continue;
        }
        let ancestor = git(
            dir,
            &["merge-base", "--is-ancestor", commit, tip],
            "merge-base",
            &shown,
            timeout,
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
            timeout: None,
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
    }
}
