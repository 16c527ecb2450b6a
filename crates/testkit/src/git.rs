//! Small git repositories made by tests with the real git CLI.

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
