//! Running one Quorum CI build step in isolation, reproducibly, and packing what it produced.
//!
//! A runner DVM clones the requested commit into a private work dir and hands this crate a
//! [`StepSpec`]: the script, its environment and secrets, network on or off, a timeout and
//! [`ResourceLimits`]. A [`Sandbox`] runs it and streams redacted log lines into a [`LogSink`];
//! [`pack::collect_artifacts`] then turns the declared artifact paths into files to upload, with
//! directories packed into byte-for-byte reproducible tar files.
//!
//! Two backends implement [`Sandbox`]:
//!
//! - [`Bubblewrap`] (the default, design section 7): a read-only view of the system toolchain,
//!   the work dir read-write at the fixed path `/build`, a private size-limited `/tmp`, new
//!   user/pid/net/ipc/uts/cgroup namespaces, never host root (a root DVM runs steps as the
//!   build user), no capabilities, a seccomp filter, and no view of the DVM's keys, config,
//!   `/root`, `/home`, `/run` or `/sys`. A step with network gets a network namespace of its
//!   own behind a user-mode stack, which reaches the internet but not the host's loopback or
//!   private networks. Processes, memory and CPU are capped with a per-run control group where
//!   one can be created; the work dir's size with a [`volume::WorkVolume`].
//! - [`Unsandboxed`]: a plain child process with the same environment, timeout and log handling,
//!   for development only; it says so loudly on construction and on every run.
//!
//! Nothing here speaks Nostr; this is local process execution only.

mod cgroup;
mod error;
mod exec;
mod log;
mod net;
mod seccomp;
mod spec;

pub mod bwrap;
pub mod pack;
pub mod probe;
pub mod unsandboxed;
pub mod volume;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use bwrap::Bubblewrap;
pub use error::SandboxError;
pub use log::{FnSink, LogLine, LogSink, Stream};
pub use net::{DNS_ADDR, Ipv4Cidr};
pub use spec::{BUILD_DIR, MAX_SCRIPT_BYTES, ResourceLimits, SecretString, StepSpec};
pub use unsandboxed::Unsandboxed;

/// A boxed, sendable future: what [`Sandbox::run`] returns so that `dyn Sandbox` works (native
/// `async fn` in traits is not object safe, and the runner picks its backend at run time).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend is, for logs, job feedback and operator checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Backend name: `"bubblewrap"` or `"unsandboxed"`.
    pub name: String,
    /// Whether build steps are isolated from the machine. `false` means a step can read the
    /// DVM's keys: never offer such a backend to strangers.
    pub isolated: bool,
    /// Version of the isolation tool (e.g. `"0.8.0"` for bwrap), or of this crate.
    pub version: String,
    /// Whether steps may ask for network here. For bubblewrap: a network namespace of the
    /// step's own with outbound access only (see [`bwrap`] and `net`).
    pub network: bool,
    /// Which limits are actually enforced here and anything degraded, one sentence each.
    pub notes: Vec<String>,
}

/// How a step ended. A non-zero exit is an `Ok` outcome, not an error: errors are reserved for
/// the sandbox itself failing (see [`SandboxError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// Exit status of the step's shell. Under bubblewrap a step killed by signal `n` reports
    /// `128 + n` here (bwrap's init folds signals into the exit code).
    pub exit_code: Option<i32>,
    /// Signal that ended the top process we spawned (bwrap itself, or the shell when
    /// unsandboxed), e.g. 9 after a timeout kill.
    pub signal: Option<i32>,
    /// The step hit [`StepSpec::timeout`] and everything it started was killed.
    pub timed_out: bool,
    /// Wall-clock time from spawn to the end of cleanup.
    pub duration: Duration,
    /// Output beyond [`ResourceLimits::max_log_bytes`] was dropped.
    pub log_truncated: bool,
    /// Bytes of log text delivered to the sink (after redaction and line truncation).
    pub log_bytes: u64,
    /// Bytes of output read but not delivered because the log cap was reached.
    pub log_dropped_bytes: u64,
    /// A fork failed because the process limit was reached (known only with a pids cgroup).
    pub process_limit_hit: bool,
    /// The memory limit triggered the OOM killer (known only with a memory cgroup).
    pub memory_limit_hit: bool,
    /// The CPU cap held the step back at least once (known only with a cpu cgroup).
    pub cpu_throttled: bool,
    /// The work dir's file system was full when the step ended: a write past the disk cap
    /// failed (known only where the work dir is on a size-capped [`volume`]).
    pub disk_limit_hit: bool,
}

impl StepOutcome {
    /// The step finished on its own with exit code 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

/// A way to run build steps. Implemented by [`Bubblewrap`] and [`Unsandboxed`].
pub trait Sandbox: Send + Sync {
    /// Name, isolation and enforced limits of this backend.
    fn describe(&self) -> SandboxInfo;

    /// Run one step to completion (or timeout), streaming its output into `log`.
    ///
    /// When the returned future resolves, no process of the step is left running. Dropping the
    /// future early also kills the step (best effort, synchronously).
    fn run<'a>(
        &'a self,
        spec: &'a StepSpec,
        log: &'a mut dyn LogSink,
    ) -> BoxFuture<'a, Result<StepOutcome, SandboxError>>;
}
