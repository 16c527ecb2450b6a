//! The development-only backend: the step as a plain child process of the DVM.
//!
//! Same environment (except that the work dir is not at `/build`), timeout, limits and log
//! handling as [`Bubblewrap`](crate::Bubblewrap), and the same per-run cgroup when one can be
//! made, but **no isolation**: the step can read the DVM's keys, reach the network and write
//! anywhere the DVM can. It warns on construction and on every run.

use std::path::Path;

use crate::cgroup::CgroupPlan;
use crate::exec::{self, Launch};
use crate::{BoxFuture, LogSink, Sandbox, SandboxError, SandboxInfo, StepOutcome, StepSpec};

const WARNING: &str = "UNSANDBOXED: build steps can read this machine's keys, use its network \
                       and write outside their work dir; use only for development";

/// Runs steps without isolation. For development only.
#[derive(Debug, Clone)]
pub struct Unsandboxed {
    cgroups: CgroupPlan,
}

impl Unsandboxed {
    /// Create the backend (and log a loud warning).
    pub fn new() -> Self {
        tracing::warn!("{WARNING}");
        let (cgroups, _) = CgroupPlan::detect();
        Unsandboxed { cgroups }
    }

    async fn run_step(
        &self,
        spec: &StepSpec,
        log: &mut dyn LogSink,
    ) -> Result<StepOutcome, SandboxError> {
        tracing::warn!("{WARNING}");
        spec.validate()?;
        if spec.rootfs.is_some() {
            return Err(SandboxError::Unavailable {
                reason:
                    "the unsandboxed backend cannot run a step in a build image; use bubblewrap"
                        .into(),
            });
        }
        let work_dir = spec
            .work_dir
            .canonicalize()
            .map_err(|e| SandboxError::io(format!("work dir {}", spec.work_dir.display()), e))?;
        // A private HOME/TMPDIR per run, so the step does not write into the DVM's home.
        let home = tempfile::Builder::new()
            .prefix("quorum-unsandboxed-")
            .tempdir()
            .map_err(|e| SandboxError::io("creating a temp home", e))?;
        let mut env = spec.public_env(&work_dir, home.path());
        for (k, v) in &mut env {
            if k == "TMPDIR" {
                *v = home.path().display().to_string();
            }
        }
        for (k, v) in &spec.secrets {
            env.push((k.clone(), v.expose().to_owned()));
        }
        let cgroup =
            if self.cgroups.has_pids() || self.cgroups.has_memory() || self.cgroups.has_cpu() {
                Some(self.cgroups.create(&spec.limits)?)
            } else {
                None
            };
        let launch = Launch {
            program: Path::new("/bin/sh").to_owned(),
            args: vec![
                "-eu".into(),
                "-c".into(),
                spec.script.clone().into(),
                "quorum-step".into(),
            ],
            env,
            cwd: Some(work_dir),
            inherit_fds: Vec::new(),
            close_after_spawn: Vec::new(),
            bwrap_status: None,
            rlimits: crate::bwrap::rlimits(spec, &self.cgroups),
            cgroup,
            drop_to: None,
            stage: None,
            network: None,
        };
        let outcome = exec::execute(launch, spec, log).await;
        drop(home);
        outcome
    }
}

impl Default for Unsandboxed {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox for Unsandboxed {
    fn describe(&self) -> SandboxInfo {
        SandboxInfo {
            name: "unsandboxed".into(),
            isolated: false,
            version: env!("CARGO_PKG_VERSION").into(),
            network: true,
            notes: vec![WARNING.into()],
        }
    }

    fn run<'a>(
        &'a self,
        spec: &'a StepSpec,
        log: &'a mut dyn LogSink,
    ) -> BoxFuture<'a, Result<StepOutcome, SandboxError>> {
        Box::pin(self.run_step(spec, log))
    }
}
