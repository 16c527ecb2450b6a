//! Small git repositories made by tests with the real git CLI, and `git daemon` serving them
//! over git:// on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The commit time of every sample commit: 2026-01-02T03:04:05Z.
pub const SAMPLE_COMMIT_TIME: i64 = 1_767_323_045;

/// Runs git in `dir` with fixed author and committer dates; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("git printed UTF-8")
        .trim()
        .to_string()
}

/// A small project under `dir/sample` whose `build.sh` writes `out/hello.txt` and a directory
/// `out/dist` (with a timestamp taken from `SOURCE_DATE_EPOCH` and an executable file), and
/// prints `build finished`. Returns the repository path and the commit id.
pub fn sample_repo(dir: &Path) -> (PathBuf, String) {
    let repo = dir.join("sample");
    std::fs::create_dir_all(&repo).expect("creating the sample repo");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    git(&repo, &["config", "user.name", "Maintainer"]);
    git(
        &repo,
        &["config", "user.email", "maintainer@example.invalid"],
    );
    std::fs::write(
        repo.join("build.sh"),
        "set -eu\n\
         mkdir -p out/dist/docs\n\
         printf 'hello from %s\\n' \"$(cat message.txt)\" > out/hello.txt\n\
         date -u -d \"@$SOURCE_DATE_EPOCH\" +%Y-%m-%dT%H:%M:%SZ > out/dist/built-at\n\
         echo manual > out/dist/docs/README\n\
         chmod +x out/dist/docs/README\n\
         echo build finished\n",
    )
    .expect("writing build.sh");
    std::fs::write(repo.join("message.txt"), "quorum").expect("writing message.txt");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "sample"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

/// Writes `text` to `file` (relative to `repo`, directories made), commits everything with
/// `message` and returns the new commit id.
pub fn commit_file(repo: &Path, file: &str, text: &str, message: &str) -> String {
    let path = repo.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("creating the file's directory");
    }
    std::fs::write(&path, text).expect("writing the file");
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// A bare clone of `repo` at `root/NAME` (e.g. `app.git`), the way a git host keeps it; the
/// maintainer pushes to it with [`push`]. Returns its path.
pub fn bare_clone(repo: &Path, root: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(root).expect("creating the served directory");
    let bare = root.join(name);
    git(
        root,
        &[
            "clone",
            "--quiet",
            "--bare",
            repo.to_str().expect("a UTF-8 path"),
            bare.to_str().expect("a UTF-8 path"),
        ],
    );
    bare
}

/// Pushes `refspec` (e.g. `main`, or `HEAD:refs/heads/other`) of `repo` to the bare repository
/// `bare`.
pub fn push(repo: &Path, bare: &Path, refspec: &str) {
    git(
        repo,
        &[
            "push",
            "--quiet",
            "--force",
            bare.to_str().expect("a UTF-8 path"),
            refspec,
        ],
    );
}

/// `git daemon` serving every repository under a directory over git:// on 127.0.0.1 (read
/// only, `--export-all`), on a free port. Killed when dropped.
pub struct GitDaemon {
    pub port: u16,
    _daemon: crate::daemon::Daemon,
}

impl GitDaemon {
    /// Starts the daemon for `root` and waits (up to 10 s) until it accepts connections.
    pub fn start(root: &Path) -> GitDaemon {
        GitDaemon::serve(root, false)
    }

    /// [`GitDaemon::start`] that also takes pushes (`receive-pack`), as a maintainer's git
    /// server does for tools that push over git:// (ngit).
    pub fn start_writable(root: &Path) -> GitDaemon {
        GitDaemon::serve(root, true)
    }

    fn serve(root: &Path, writable: bool) -> GitDaemon {
        std::fs::create_dir_all(root).expect("creating the served directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        // `git daemon` runs `git-daemon` as a child that would outlive a kill of `git`: start
        // the daemon itself, so that dropping it stops it.
        let exec_path = git(root, &["--exec-path"]);
        let base_path = format!("--base-path={}", root.display());
        let port_arg = format!("--port={port}");
        let mut args = vec!["--reuseaddr", "--export-all"];
        if writable {
            args.push("--enable=receive-pack");
        }
        args.extend([
            base_path.as_str(),
            "--listen=127.0.0.1",
            port_arg.as_str(),
            root.to_str().expect("a UTF-8 path"),
        ]);
        let daemon = crate::daemon::Daemon::spawn(&format!("{exec_path}/git-daemon"), &args);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        GitDaemon {
            port,
            _daemon: daemon,
        }
    }

    /// The git:// URL of the repository `name` (a path under the served directory).
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}
