//! Errors of the sandbox itself. A failing build step is not an error: it is a
//! [`StepOutcome`](crate::StepOutcome) with a non-zero exit code.

use std::io;
use std::path::PathBuf;

/// Why a step could not be run (as opposed to: it ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The isolation tool is missing or cannot create a sandbox on this machine. `reason` tells
    /// the operator what to install or enable.
    #[error("sandbox unavailable: {reason}")]
    Unavailable {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The step spec is not acceptable (bad env name, script too large, missing work dir, ...).
    #[error("invalid step: {0}")]
    InvalidSpec(String),
    /// The sandbox started but failed to set itself up before the step ran (bwrap's own error).
    #[error("sandbox setup failed before the step started: {reason}")]
    Setup {
        /// bwrap's message (its last stderr lines).
        reason: String,
    },
    /// Spawning the child process failed.
    #[error("cannot spawn {program}: {source}")]
    Spawn {
        /// The program we tried to run.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Creating, limiting or cleaning up the per-run control group failed.
    #[error("control group {path}: {source}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Any other I/O failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
