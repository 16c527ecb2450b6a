//! `quorum lint`: a pipeline file checked without running it, and the pipeline reference.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::LintArgs;

/// The pipeline reference, built into the binary so that it is at hand offline and always
/// describes this version's linter (a test checks the file against the linter).
pub(crate) const REFERENCE: &str = include_str!("../../../../docs/pipeline.md");

/// Where to read the reference, for the end of every lint failure.
pub(crate) const REFERENCE_HINT: &str =
    "the pipeline reference: `quorum lint --reference` (docs/pipeline.md)";

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    if args.reference {
        print!("{REFERENCE}");
        return Ok(ExitCode::SUCCESS);
    }
    let (path, shown) = pipeline_file(&args.file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the pipeline {}", path.display()))?;
    let result = quorum_pipeline::parse_with_warnings(&shown, &text);
    if let Ok((_, warnings)) = &result
        && !warnings.is_empty()
        && !args.json
    {
        eprintln!("{warnings}");
    }
    let result = result.map(|(plan, _)| plan);
    if args.json {
        let value = match &result {
            Ok(plan) => json!({
                "file": shown, "ok": true, "errors": [],
                "plan_hash": plan.plan_hash(),
                "jobs": plan.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            }),
            Err(diagnostics) => json!({
                "file": shown, "ok": false, "errors": diagnostics.diagnostics,
            }),
        };
        println!("{value}");
    } else {
        match &result {
            Ok(plan) => println!(
                "{shown}: ok, {} job(s), plan {}",
                plan.jobs.len(),
                &plan.plan_hash()[..16]
            ),
            Err(diagnostics) => {
                eprintln!("{diagnostics}");
                eprintln!("{REFERENCE_HINT}");
            }
        }
    }
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The file to read and the name diagnostics give it: a directory means its
/// `.quorum/pipeline.yml`, named as `quorum run` names it, so both print the same lines.
fn pipeline_file(given: &Path) -> (PathBuf, String) {
    if given.is_dir() {
        (
            given.join(quorum_pipeline::PIPELINE_PATH),
            quorum_pipeline::PIPELINE_PATH.to_string(),
        )
    } else {
        (given.to_path_buf(), given.display().to_string())
    }
}
