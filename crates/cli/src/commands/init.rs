//! `quorum init`: a first `.quorum/pipeline.yml` for the project in a directory.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use quorum_pipeline::init::{self, MANIFESTS};
use serde_json::json;

use crate::cli::InitArgs;

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let target = dir.join(quorum_pipeline::PIPELINE_PATH);
    if target.exists() && !args.force {
        bail!(
            "{} exists; pass --force to replace it (or check it with `quorum lint`)",
            target.display()
        );
    }
    let mut manifests = BTreeMap::new();
    for name in MANIFESTS {
        let path = dir.join(name);
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            manifests.insert(name.to_string(), text);
        }
    }
    let fallback = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".to_string());
    let project = init::detect(&manifests, &fallback);
    let branch = args.branch.clone().unwrap_or_else(|| {
        Command::new("git")
            .args(["symbolic-ref", "--quiet", "--short", "HEAD"])
            .current_dir(&dir)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_else(|| "main".to_string())
    });
    let text = init::pipeline(&project, &branch);
    // What we write must be what the linter accepts: a template bug is ours, not the user's.
    if let Err(diagnostics) = quorum_pipeline::parse(quorum_pipeline::PIPELINE_PATH, &text) {
        bail!(
            "the pipeline written for this {} project does not lint (a bug in quorum init):\n{diagnostics}",
            project.kind.as_str()
        );
    }
    let parent = target.parent().expect("the pipeline path has a directory");
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // Written beside and renamed, so that an interrupted init never leaves half a file.
    let partial = parent.join(".pipeline.yml.partial");
    std::fs::write(&partial, &text)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    if args.json {
        println!(
            "{}",
            json!({
                "path": target, "kind": project.kind, "name": project.name,
                "artifact": project.artifact, "branch": branch,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "wrote {} for a {} project: a test job and a 2-of-3 quorum build releasing {}",
        target.display(),
        project.kind.as_str(),
        project.artifact
    );
    println!("next:");
    println!(
        "  quorum lint {}          # check it (after your edits)",
        args.dir.display()
    );
    println!("  git add .quorum && git commit -m 'Quorum CI pipeline'");
    println!(
        "  quorum run {} --out dist   # run it on this machine; the released file lands in dist/",
        args.dir.display()
    );
    println!(
        "  quorum verify dist/{} --repo … --bundle …   # what `quorum run` prints",
        project.artifact.trim_start_matches("out/")
    );
    Ok(ExitCode::SUCCESS)
}
