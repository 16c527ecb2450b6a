//! A first pipeline for a project (`quorum init`): which build system a project uses, judged
//! from the manifests at its root, and a `.quorum/pipeline.yml` for it with a test job and a
//! 2-of-3 quorum build job that releases one file.
//!
//! Pure like the rest of the crate: the caller reads the files named in [`MANIFESTS`] and
//! passes their text; nothing here touches the disk. Every template lints clean (a test
//! checks each), and each build job leaves exactly the artifact it declares, so the file runs
//! as written; its comments say what to change.

use std::collections::BTreeMap;

/// The files [`detect`] looks at, relative to the project root, in order of precedence.
pub const MANIFESTS: &[&str] = &[
    "Cargo.toml",
    "go.mod",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "CMakeLists.txt",
    "GNUmakefile",
    "Makefile",
    "makefile",
];

/// The build systems `quorum init` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectKind {
    Cargo,
    Go,
    Npm,
    Python,
    CMake,
    Make,
    /// None of the above: the build job releases a reproducible tarball of the sources.
    Generic,
}

impl ProjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "cargo",
            ProjectKind::Go => "go",
            ProjectKind::Npm => "npm",
            ProjectKind::Python => "python",
            ProjectKind::CMake => "cmake",
            ProjectKind::Make => "make",
            ProjectKind::Generic => "generic",
        }
    }
}

/// What [`detect`] found: the kind, the project's name (for file names), and the one file
/// the build job releases.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Project {
    pub kind: ProjectKind,
    pub name: String,
    pub artifact: String,
}

/// Judges a project from its root manifests (`files`: name → text, only those of
/// [`MANIFESTS`] that exist). `fallback_name` (usually the directory's name) names the
/// project when no manifest does.
pub fn detect(files: &BTreeMap<String, String>, fallback_name: &str) -> Project {
    let file = |name: &str| files.get(name).map(String::as_str);
    let fallback = sanitize_name(fallback_name);
    let (kind, name) = if let Some(text) = file("Cargo.toml") {
        (ProjectKind::Cargo, toml_name(text, "package"))
    } else if let Some(text) = file("go.mod") {
        let module = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("module "))
            .map(|m| m.trim().trim_matches('"'));
        (
            ProjectKind::Go,
            module
                .and_then(|m| m.rsplit('/').next())
                .map(str::to_string),
        )
    } else if let Some(text) = file("package.json") {
        let name = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string));
        (ProjectKind::Npm, name)
    } else if let Some(text) = file("pyproject.toml") {
        (ProjectKind::Python, toml_name(text, "project"))
    } else if file("setup.py").is_some() {
        (ProjectKind::Python, None)
    } else if let Some(text) = file("CMakeLists.txt") {
        let name = text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("project(")?;
            rest.split(|c: char| c.is_whitespace() || c == ')')
                .next()
                .map(str::to_string)
        });
        (ProjectKind::CMake, name)
    } else if ["GNUmakefile", "Makefile", "makefile"]
        .iter()
        .any(|m| file(m).is_some())
    {
        (ProjectKind::Make, None)
    } else {
        (ProjectKind::Generic, None)
    };
    let name = name
        .map(|n| sanitize_name(&n))
        .filter(|n| !n.is_empty())
        .unwrap_or(fallback);
    let artifact = match kind {
        ProjectKind::Cargo if !cargo_has_binary(file("Cargo.toml").unwrap_or_default()) => {
            format!("out/{name}.crate")
        }
        ProjectKind::Cargo | ProjectKind::Go => format!("out/{name}"),
        ProjectKind::Npm => format!("out/{name}.tgz"),
        ProjectKind::Python => format!("out/{name}-dist.tar"),
        ProjectKind::CMake | ProjectKind::Make | ProjectKind::Generic => {
            format!("out/{name}.tar")
        }
    };
    Project {
        kind,
        name,
        artifact,
    }
}

/// `name = "…"` in the `[section]` of a TOML manifest (enough for Cargo.toml and
/// pyproject.toml; a missing name falls back to the directory's).
fn toml_name(text: &str, section: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches(['"', '\'']).to_string());
        }
    }
    None
}

/// Whether a Cargo package builds a binary of its name: a `[[bin]]` section, or no
/// `[lib]` section (then `src/main.rs` is the convention `cargo init` follows).
fn cargo_has_binary(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[[bin]]") || !text.lines().any(|l| l.trim() == "[lib]")
}

/// A name safe in a file name and a shell word: letters, digits, `.`, `_`, `-`.
fn sanitize_name(name: &str) -> String {
    let name = name.rsplit('/').next().unwrap_or(name);
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches(['-', '.'])
        .to_string()
}

/// The shell lines that pack `DIR` into the artifact as a tarball that is the same bytes on
/// every builder: sorted names, fixed times and owners.
fn reproducible_tar(artifact: &str, dir: &str, exclude: &[&str]) -> String {
    let excludes: String = exclude.iter().map(|e| format!(" --exclude={e}")).collect();
    format!(
        "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu{excludes} \
         -cf {artifact}.tmp -C {dir} . && mv {artifact}.tmp {artifact}"
    )
}

/// The pipeline for `project`, triggered by pushes to `branch` and tags `v*` and by hand.
pub fn pipeline(project: &Project, branch: &str) -> String {
    let Project {
        kind,
        name,
        artifact,
    } = project;
    let branch = if branch.is_empty() { "main" } else { branch };
    // (test script, build script, whether the jobs fetch dependencies).
    let (test, build, network) = match kind {
        ProjectKind::Cargo => {
            let release = if artifact.ends_with(".crate") {
                format!(
                    "cargo package --locked --no-verify --allow-dirty\n\
                     cp target/package/{name}-*.crate {artifact}"
                )
            } else {
                format!("cargo build --release --locked\ncp target/release/{name} {artifact}")
            };
            ("cargo test --locked".to_string(), release, true)
        }
        ProjectKind::Go => (
            "go test ./...".to_string(),
            format!("CGO_ENABLED=0 go build -trimpath -buildvcs=false -o {artifact} ."),
            true,
        ),
        ProjectKind::Npm => (
            "npm ci\nnpm test".to_string(),
            format!(
                "npm ci\nnpm pack --pack-destination out\n\
                 for f in out/*.tgz; do [ \"$f\" = {artifact} ] || mv \"$f\" {artifact}; done"
            ),
            true,
        ),
        ProjectKind::Python => (
            "if python3 -m pytest --version >/dev/null 2>&1; then python3 -m pytest\n\
             else python3 -m unittest discover; fi"
                .to_string(),
            format!(
                "python3 -m pip wheel --no-deps --wheel-dir dist .\n{}",
                reproducible_tar(artifact, "dist", &[])
            ),
            true,
        ),
        ProjectKind::CMake => (
            "cmake -S . -B build -DCMAKE_BUILD_TYPE=Release\ncmake --build build\n\
             ctest --test-dir build --output-on-failure"
                .to_string(),
            format!(
                "cmake -S . -B build -DCMAKE_BUILD_TYPE=Release\ncmake --build build\n\
                 cmake --install build --prefix \"$PWD/stage\"\n{}",
                reproducible_tar(artifact, "stage", &[])
            ),
            false,
        ),
        ProjectKind::Make => (
            "make\nif make -n check >/dev/null 2>&1; then make check; \
             elif make -n test >/dev/null 2>&1; then make test; fi"
                .to_string(),
            format!(
                "make\nif make -n install >/dev/null 2>&1; then\n  \
                 make install DESTDIR=\"$PWD/stage\" PREFIX=/usr\n  {}\nelse\n  {}\nfi",
                reproducible_tar(artifact, "stage", &[]),
                reproducible_tar(artifact, ".", &["./.git", "./out"])
            ),
            false,
        ),
        ProjectKind::Generic => (
            "ls -la".to_string(),
            reproducible_tar(artifact, ".", &["./.git", "./out"]),
            false,
        ),
    };
    let indent = |script: &str| -> String {
        script
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    let network_note = if network {
        "    # Fetches the dependencies your lock file pins; runners allow this only when their\n    \
         # operator does (`--allow-network`). Vendor them and set `false` to build offline.\n    \
         network: true\n"
    } else {
        "    network: false\n"
    };
    let what = match kind {
        ProjectKind::Generic => "A reproducible tarball of the sources (replace with your build)",
        _ => "The build's output",
    };
    format!(
        "# The Quorum CI pipeline of {name} ({kind} project), written by `quorum init`.\n\
         # Reference: docs/pipeline.md of Quorum CI, or `quorum lint --reference`.\n\
         # Check it with `quorum lint`, run it on this machine with `quorum run`.\n\
         name: {name}\n\
         \n\
         on:\n  \
           push:\n    \
             branches: [{branch}]\n    \
             tags: [\"v*\"]\n  \
           manual: {{}}\n\
         \n\
         jobs:\n  \
           test:\n    \
             name: Tests\n    \
             run: |\n{test_script}{network_note}    \
             timeout: 30m\n\
         \n  \
           # {what}, built by 3 independent runners; it succeeds only when 2 of them\n  \
           # produced byte-identical files and their quorum key signed them.\n  \
           build:\n    \
             name: Reproducible build\n    \
             needs: test\n    \
             run: |\n      \
               mkdir -p out\n{build_script}    \
             artifacts: [{artifact}]\n{network_note}    \
             timeout: 1h\n    \
             mode: quorum\n    \
             replicas: 3\n    \
             threshold: 2\n    \
             release: true\n",
        kind = kind.as_str(),
        test_script = indent(&test),
        build_script = indent(&build),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_kind_is_detected_and_its_pipeline_lints_clean() {
        let cases = [
            (
                files(&[("Cargo.toml", "[package]\nname = \"hello-rs\"\n")]),
                ProjectKind::Cargo,
                "out/hello-rs",
            ),
            (
                files(&[("Cargo.toml", "[package]\nname = \"lib\"\n[lib]\n")]),
                ProjectKind::Cargo,
                "out/lib.crate",
            ),
            (
                files(&[("go.mod", "module example.com/x/tool\n\ngo 1.22\n")]),
                ProjectKind::Go,
                "out/tool",
            ),
            (
                files(&[(
                    "package.json",
                    r#"{"name": "@scope/web", "version": "1.0.0"}"#,
                )]),
                ProjectKind::Npm,
                "out/web.tgz",
            ),
            (
                files(&[("pyproject.toml", "[project]\nname = 'pkg'\n")]),
                ProjectKind::Python,
                "out/pkg-dist.tar",
            ),
            (
                files(&[(
                    "CMakeLists.txt",
                    "cmake_minimum_required(VERSION 3.10)\nproject(zlib C)\n",
                )]),
                ProjectKind::CMake,
                "out/zlib.tar",
            ),
            (
                files(&[("Makefile", "all:\n\tcc -o app app.c\n")]),
                ProjectKind::Make,
                "out/my-dir.tar",
            ),
            (files(&[]), ProjectKind::Generic, "out/my-dir.tar"),
        ];
        for (manifests, kind, artifact) in cases {
            let project = detect(&manifests, "my dir");
            assert_eq!(project.kind, kind, "{manifests:?}");
            assert_eq!(project.artifact, artifact, "{manifests:?}");
            let text = pipeline(&project, "trunk");
            let plan = crate::parse(crate::PIPELINE_PATH, &text)
                .unwrap_or_else(|e| panic!("{kind:?}:\n{text}\n{e}"));
            assert_eq!(plan.jobs.len(), 2);
            assert!(text.contains("branches: [trunk]"), "{text}");
        }
    }

    #[test]
    fn cargo_outranks_a_makefile_and_names_are_made_safe() {
        let project = detect(
            &files(&[
                ("Cargo.toml", "[package]\nname = \"a b;rm\"\n"),
                ("Makefile", "all:\n"),
            ]),
            "x",
        );
        assert_eq!(project.kind, ProjectKind::Cargo);
        assert_eq!(project.name, "a-b-rm");
    }
}
