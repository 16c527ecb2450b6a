//! What a maintainer publishes to set everything in motion (`quorum repo announce` and
//! `quorum repo push`): the NIP-34 announcement (30617) of a local git repository, and after a
//! push, the state (30618) of the refs the remote now really holds.
//!
//! The state is read back from the remote (`git ls-remote`), not from the local refs: it is
//! what a watcher will fetch, and a state naming a commit the server does not serve would
//! start nothing. Tags are given as the commit they peel to, which is what runners check out.
//! A state event replaces the previous one, so it lists every branch and tag of the remote,
//! not only those just pushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use quorum_proto::nip34::{Nip34Error, RepositoryAnnouncement, RepositoryState};
use quorum_proto::nostr::{PublicKey, RelayUrl};

#[derive(Debug, thiserror::Error)]
pub enum MaintainerError {
    #[error("cannot run git {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("git {args} failed in {dir}: {stderr}")]
    Git {
        args: String,
        dir: PathBuf,
        stderr: String,
    },
    #[error("{0} is not a git repository with a commit")]
    NotARepository(PathBuf),
    #[error(
        "the repository has no remote to announce as a clone URL: add one (`git remote add \
         origin URL`) or pass --clone URL"
    )]
    NoCloneUrl,
    #[error("the remote {remote} has no branch or tag to publish")]
    EmptyRemote { remote: String },
    #[error("a ref of the remote is not valid in a NIP-34 state: {0}")]
    Ref(#[from] Nip34Error),
}

/// A git repository on this machine, the maintainer's working copy.
#[derive(Debug, Clone)]
pub struct LocalRepository {
    dir: PathBuf,
}

/// What the announcement says besides what the repository itself tells.
#[derive(Debug, Clone, Default)]
pub struct AnnouncementOptions {
    pub identifier: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Clone URLs; empty: the repository's remotes' fetch URLs.
    pub clone: Vec<String>,
    pub web: Vec<String>,
    /// Relays the repository is followed on (CI status, patches, releases).
    pub relays: Vec<RelayUrl>,
    /// Maintainers besides the author.
    pub maintainers: Vec<PublicKey>,
}

impl LocalRepository {
    /// The repository at `dir` (its work tree or any directory inside it).
    pub fn open(dir: &Path) -> Result<Self, MaintainerError> {
        let repo = LocalRepository {
            dir: dir.to_path_buf(),
        };
        repo.git(&["rev-parse", "--verify", "--quiet", "HEAD"])
            .map_err(|_| MaintainerError::NotARepository(dir.to_path_buf()))?;
        Ok(repo)
    }

    /// The directory's name: the default repository identifier.
    pub fn default_identifier(&self) -> String {
        let top = self
            .git(&["rev-parse", "--show-toplevel"])
            .map(PathBuf::from)
            .unwrap_or_else(|_| self.dir.clone());
        top.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "repository".to_string())
    }

    /// The earliest unique commit: the root commit of HEAD (the oldest, when there are
    /// several), which groups mirrors of one repository and tells forks apart.
    pub fn earliest_unique_commit(&self) -> Result<String, MaintainerError> {
        let roots = self.git(&["rev-list", "--max-parents=0", "HEAD"])?;
        Ok(roots.lines().last().unwrap_or_default().to_string())
    }

    /// The fetch URLs of the repository's remotes, `origin` first, without repeats.
    pub fn remote_urls(&self) -> Result<Vec<String>, MaintainerError> {
        let names = self.git(&["remote"])?;
        let mut names: Vec<&str> = names.lines().collect();
        names.sort_by_key(|name| (*name != "origin", name.to_string()));
        let mut urls = Vec::new();
        for name in names {
            let url = self.git(&["remote", "get-url", name])?;
            if !url.is_empty() && !urls.contains(&url) {
                urls.push(url);
            }
        }
        Ok(urls)
    }

    /// The announcement of this repository.
    pub fn announcement(
        &self,
        options: &AnnouncementOptions,
    ) -> Result<RepositoryAnnouncement, MaintainerError> {
        let mut announcement = RepositoryAnnouncement::new(options.identifier.clone());
        announcement.name = options.name.clone();
        announcement.description = options.description.clone();
        announcement.clone = if options.clone.is_empty() {
            self.remote_urls()?
        } else {
            options.clone.clone()
        };
        if announcement.clone.is_empty() {
            return Err(MaintainerError::NoCloneUrl);
        }
        announcement.web = options.web.clone();
        announcement.relays = options.relays.clone();
        announcement.maintainers = options.maintainers.clone();
        announcement.earliest_unique_commit = Some(self.earliest_unique_commit()?);
        Ok(announcement)
    }

    /// Pushes `refspecs` (none: the current branch, to the branch of the same name) to
    /// `remote`, with git's own output on this process's stderr (credential prompts included).
    pub fn push(&self, remote: &str, refspecs: &[String]) -> Result<(), MaintainerError> {
        let mut args = vec!["push".to_string(), remote.to_string()];
        if refspecs.is_empty() {
            args.push("HEAD".to_string());
        }
        args.extend(refspecs.iter().cloned());
        let status = Command::new("git")
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|source| MaintainerError::Spawn {
                args: args.join(" "),
                source,
            })?;
        if !status.success() {
            return Err(MaintainerError::Git {
                args: args.join(" "),
                dir: self.dir.clone(),
                stderr: format!("git push exited with {status}"),
            });
        }
        Ok(())
    }

    /// The state of `remote` as it is now: every branch and tag it holds (tags as the commit
    /// they peel to) and where its HEAD points.
    pub fn remote_state(
        &self,
        remote: &str,
        identifier: &str,
    ) -> Result<RepositoryState, MaintainerError> {
        let listing = self.git(&["ls-remote", "--symref", remote])?;
        let mut refs: BTreeMap<String, String> = BTreeMap::new();
        let mut peeled: BTreeMap<String, String> = BTreeMap::new();
        let mut head = None;
        for line in listing.lines() {
            if let Some(symref) = line.strip_prefix("ref: ") {
                // `ref: refs/heads/main\tHEAD`
                if let Some((target, "HEAD")) = symref.split_once('\t') {
                    head = Some(target.to_string());
                }
                continue;
            }
            let Some((id, name)) = line.split_once('\t') else {
                continue;
            };
            if let Some(tag) = name.strip_suffix("^{}") {
                peeled.insert(tag.to_string(), id.to_string());
            } else if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
                refs.insert(name.to_string(), id.to_string());
            }
        }
        refs.extend(peeled);
        if refs.is_empty() {
            return Err(MaintainerError::EmptyRemote {
                remote: remote.to_string(),
            });
        }
        let mut state = RepositoryState::new(identifier);
        for (name, id) in refs {
            state = state.with_ref(name, id)?;
        }
        if let Some(head) = head.filter(|h| state.refs.contains_key(h)) {
            state = state.with_head(head)?;
        }
        Ok(state)
    }

    fn git(&self, args: &[&str]) -> Result<String, MaintainerError> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| MaintainerError::Spawn {
                args: args.join(" "),
                source,
            })?;
        if !out.status.success() {
            return Err(MaintainerError::Git {
                args: args.join(" "),
                dir: self.dir.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}
