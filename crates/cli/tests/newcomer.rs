//! A newcomer's first hour, as processes: `quorum init` on projects of every kind it knows,
//! `quorum lint` (saying exactly what `quorum run` says), `quorum run --out` leaving verified
//! files (an image as an OCI layout) and a bundle that verifies offline, the reference and
//! shell completions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum_testkit::daemon::{run, run_with_env};
use quorum_testkit::git::git;
use quorum_testkit::oci::MAKE_OCI_LAYOUT;
use quorum_testkit::third_party::skopeo_ok;
use serde_json::Value;
use sha2::{Digest, Sha256};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
const QUICK: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn quorum(args: &[&str]) -> (i32, String, String) {
    let out = run(QUORUM, args, QUICK);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A project directory with `files` (path → text), a git repository on `main`.
fn project(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(&dir, &["init", "--quiet", "--initial-branch=main"]);
    git(&dir, &["config", "user.name", "Newcomer"]);
    git(&dir, &["config", "user.email", "newcomer@example.invalid"]);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "--quiet", "--allow-empty", "-m", "start"]);
    dir
}

const C_PROGRAM: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";
const MAKEFILE: &str = "all: hello\nhello: hello.c\n\tcc -O2 -o hello hello.c\ncheck: hello\n\t./hello\n\
                        install: hello\n\tinstall -D -m 0755 hello $(DESTDIR)$(PREFIX)/bin/hello\n";

/// A project kind init should find: its name, its files, the artifact its build releases.
type Kind<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn init_writes_a_pipeline_that_lints_clean_for_every_kind_of_project_and_never_overwrites() {
    let root = tempfile::tempdir().unwrap();
    let kinds: [Kind; 8] = [
        (
            "cargo",
            &[
                (
                    "Cargo.toml",
                    "[package]\nname = \"app\"\nversion = \"0.1.0\"\n",
                ),
                ("src/main.rs", "fn main() {}\n"),
            ],
            "out/app",
        ),
        (
            "go",
            &[("go.mod", "module example.com/me/tool\n\ngo 1.22\n")],
            "out/tool",
        ),
        (
            "npm",
            &[("package.json", r#"{"name":"web","version":"1.0.0"}"#)],
            "out/web.tgz",
        ),
        (
            "python",
            &[("pyproject.toml", "[project]\nname = \"pkg\"\n")],
            "out/pkg-dist.tar",
        ),
        (
            "python",
            &[("setup.py", "from setuptools import setup\nsetup()\n")],
            "out/setup-py-dist.tar",
        ),
        (
            "cmake",
            &[("CMakeLists.txt", "project(zlib C)\n")],
            "out/zlib.tar",
        ),
        (
            "make",
            &[("Makefile", MAKEFILE), ("hello.c", C_PROGRAM)],
            "out/make.tar",
        ),
        ("generic", &[("README", "words\n")], "out/generic.tar"),
    ];
    for (index, (kind, files, artifact)) in kinds.iter().enumerate() {
        let name = match *kind {
            "python" if index == 4 => "setup-py",
            other => other,
        };
        let dir = project(root.path(), name, files);
        let dir_arg = dir.to_str().unwrap();
        let (code, stdout, stderr) = quorum(&["init", dir_arg, "--json"]);
        assert_eq!(code, 0, "{kind}: {stderr}");
        let written: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(written["kind"], *kind, "{written}");
        assert_eq!(written["artifact"], *artifact, "{written}");
        assert!(dir.join(".quorum/pipeline.yml").is_file());

        let (code, stdout, stderr) = quorum(&["lint", dir_arg, "--json"]);
        assert_eq!(code, 0, "{kind}: {stdout}{stderr}");
        let lint: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(lint["ok"], true, "{lint}");
        assert_eq!(lint["jobs"], serde_json::json!(["test", "build"]), "{lint}");

        // A second init leaves the user's (possibly edited) file alone.
        std::fs::write(dir.join(".quorum/pipeline.yml"), "# mine\n").unwrap();
        let (code, _, stderr) = quorum(&["init", dir_arg]);
        assert_eq!(code, 1);
        assert!(stderr.contains("--force"), "{stderr}");
        assert_eq!(
            std::fs::read_to_string(dir.join(".quorum/pipeline.yml")).unwrap(),
            "# mine\n"
        );
        let (code, stdout, _) = quorum(&["init", dir_arg, "--force"]);
        assert_eq!(code, 0);
        assert!(
            stdout.contains("quorum run"),
            "prints what to do next: {stdout}"
        );
    }
}

/// `quorum lint` prints exactly the diagnostics `quorum run` prints, for every broken fixture
/// of the linter's own tests, and `--json` carries the same positions.
#[test]
fn lint_reports_each_broken_pipeline_exactly_as_run_does() {
    let root = tempfile::tempdir().unwrap();
    let dir = project(root.path(), "broken", &[("README", "x\n")]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/fixtures/bad");
    let mut checked = 0;
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        std::fs::create_dir_all(dir.join(".quorum")).unwrap();
        std::fs::copy(&path, dir.join(".quorum/pipeline.yml")).unwrap();
        git(&dir, &["add", "."]);
        git(
            &dir,
            &["commit", "--quiet", "--allow-empty", "-m", "broken"],
        );
        let dir_arg = dir.to_str().unwrap();
        let (lint_code, _, lint_err) = quorum(&["lint", dir_arg]);
        let (run_code, _, run_err) = quorum(&["run", dir_arg, "--data", "/nonexistent/never"]);
        assert_eq!(lint_code, 1, "{}: {lint_err}", path.display());
        assert_eq!(run_code, 1, "{}: {run_err}", path.display());
        assert!(
            lint_err.contains("quorum lint --reference"),
            "the reference is named: {lint_err}"
        );
        assert!(
            run_err.starts_with(&lint_err),
            "{}:\nlint says\n{lint_err}\nrun says\n{run_err}",
            path.display()
        );
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        assert!(lint_err.starts_with(&expected), "{}", path.display());

        let (_, stdout, _) = quorum(&["lint", dir_arg, "--json"]);
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["ok"], false);
        let first = &report["errors"][0];
        let line = format!(
            "{}:{}:{}: error: {}",
            first["file"].as_str().unwrap(),
            first["line"],
            first["column"],
            first["message"].as_str().unwrap()
        );
        assert!(expected.starts_with(&line), "{line}\n{expected}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures");

    let (code, _, stderr) = quorum(&["lint", root.path().join("missing.yml").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read the pipeline"), "{stderr}");
}

/// A C project with a Makefile, from `quorum init` to a release: the pipeline init wrote runs
/// on the embedded network (a test job, then a 2-of-3 quorum build); `--out` leaves the released
/// file and the verification bundle, whose sha256 match the run's JSON, and the file verifies
/// offline from the bundle for the repository the run names. The run's data stays in the
/// directory it prints under XDG_DATA_HOME.
#[test]
fn an_initialised_make_project_runs_and_out_leaves_files_that_verify_offline() {
    let root = tempfile::tempdir().unwrap();
    let dir = project(
        root.path(),
        "hello",
        &[("Makefile", MAKEFILE), ("hello.c", C_PROGRAM)],
    );
    let dir_arg = dir.to_str().unwrap();
    assert_eq!(quorum(&["init", dir_arg]).0, 0);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "--quiet", "-m", "Quorum CI pipeline"]);

    let out = root.path().join("dist");
    let xdg = root.path().join("xdg");
    let config = root.path().join("config");
    let output = run_with_env(
        QUORUM,
        &["run", dir_arg, "--out", out.to_str().unwrap(), "--json"],
        &[("XDG_DATA_HOME", &xdg), ("XDG_CONFIG_HOME", &config)],
        RUN_TIMEOUT,
    );
    // The run signed with the identity it made in the config directory, readable by its owner.
    let identity = config.join("quorum/run.nsec");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&identity).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", identity.display());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let artifact = &report["artifacts"][0];
    assert_eq!(artifact["name"], "out/hello.tar", "{report}");
    let saved = std::fs::read(out.join("hello.tar")).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&saved)),
        artifact["sha256"].as_str().unwrap()
    );
    let bundle = out.join("verification-bundle.json");
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&bundle).unwrap())),
        report["bundle"]["sha256"].as_str().unwrap()
    );
    let files = report["out"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{report}");
    assert!(files.iter().all(|f| f["error"].is_null()), "{report}");

    // The released tarball is the install tree of the project, the same bytes on every
    // builder (sorted, fixed times and owners).
    let listing = std::process::Command::new("tar")
        .arg("tvf")
        .arg(out.join("hello.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.contains("./usr/bin/hello"), "{listing}");
    assert!(listing.contains("0/0"), "{listing}");

    // The run's data stays in one directory per run under XDG_DATA_HOME.
    let runs: Vec<PathBuf> = std::fs::read_dir(xdg.join("quorum/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "one data directory per run: {runs:?}");
    assert!(runs[0].join("local-maintainer.nsec").is_file(), "{runs:?}");

    // With no relay at all, the file verifies from the bundle for the repository the run
    // names; for another repository it does not.
    let repository = report["repository"]
        .as_str()
        .expect("the run names its repository");
    let file = out.join("hello.tar");
    let verify = |repo: &str| {
        quorum(&[
            "verify",
            file.to_str().unwrap(),
            "--repo",
            repo,
            "--bundle",
            bundle.to_str().unwrap(),
        ])
    };
    let (code, stdout, stderr) = verify(repository);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    let other = format!("{}:other", repository.rsplit_once(':').unwrap().0);
    assert_eq!(
        verify(&other).0,
        1,
        "another repository's release does not verify"
    );
}

/// A quorum releases an image (`artifacts: [{ oci: img }]`); `quorum run --out` saves it as
/// the OCI image layout `img`, which skopeo reads and which verifies offline from the bundle
/// as the released image.
#[test]
fn an_image_artifact_is_saved_as_a_layout_that_verifies_offline() {
    let root = tempfile::tempdir().unwrap();
    let pipeline = "on: push\njobs:\n  image:\n    run: sh mkimage.sh\n    artifacts:\n      \
                    - { oci: img }\n    network: false\n    mode: quorum\n    replicas: 3\n    \
                    threshold: 2\n    release: true\n";
    let dir = project(
        root.path(),
        "imaged",
        &[
            ("mkimage.sh", MAKE_OCI_LAYOUT),
            (".quorum/pipeline.yml", pipeline),
        ],
    );
    let out = root.path().join("dist");
    let output = run_with_env(
        QUORUM,
        &[
            "run",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[
            ("XDG_DATA_HOME", &root.path().join("xdg")),
            ("XDG_CONFIG_HOME", &root.path().join("config")),
        ],
        RUN_TIMEOUT,
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let artifact = &report["artifacts"][0];
    assert_eq!(artifact["name"], "oci:img", "{report}");
    let digest = artifact["sha256"].as_str().unwrap();
    let layout = out.join("img");
    assert!(layout.join("oci-layout").is_file(), "{stderr}");
    let saved = &report["out"][0];
    assert_eq!(saved["what"], "image", "{report}");
    assert!(saved["error"].is_null(), "{report}");
    let manifest = std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&manifest)), digest);
    let layout_ref = format!("oci:{}", layout.display());
    assert_eq!(skopeo_ok(&["inspect", "--raw", &layout_ref]), manifest);

    let repository = report["repository"].as_str().unwrap();
    let bundle = out.join("verification-bundle.json");
    let (code, stdout, stderr) = quorum(&[
        "verify",
        layout.to_str().unwrap(),
        "--repo",
        repository,
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(digest), "{stdout}");
}

#[test]
fn the_reference_and_shell_completions_come_with_the_binary() {
    let (code, stdout, _) = quorum(&["lint", "--reference"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline.md")
        )
        .unwrap()
    );
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, stderr) = quorum(&["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("verify") && stdout.contains("min-operators"),
            "{shell} completes commands and flags"
        );
    }
    let (code, _, stderr) = quorum(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("tcsh"), "{stderr}");
}
