//! What to run: [`StepSpec`], [`ResourceLimits`], [`SecretString`], and the environment every
//! step gets (the reproducibility half of design section 7).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::SandboxError;

/// The fixed path at which the work dir appears inside the sandbox. Fixed so that paths baked
/// into artifacts (debug info, `file!()`) are the same on every builder.
pub const BUILD_DIR: &str = "/build";

/// Largest accepted script. The script is passed as one argv string and Linux caps a single
/// argument at 128 KiB; anything that large belongs in the repository anyway.
pub const MAX_SCRIPT_BYTES: usize = 100 * 1024;

/// Names the step may not set through [`StepSpec::env`] or [`StepSpec::secrets`]: they are
/// derived from the spec itself, and letting the step override them would defeat the fixed
/// build environment other builders rely on to agree.
const RESERVED: &[&str] = &["SOURCE_DATE_EPOCH", "PWD"];

/// A secret value (token, password) given to a step as an environment variable.
///
/// Its `Debug` output is `SecretString(***)`, the sandbox replaces its value by `***` in every
/// log line, and the bytes are overwritten when it is dropped (best effort: copies made by the
/// OS or by callers are out of reach).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret value. Named so that every use is easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString(value.to_owned())
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        // SAFETY: zero bytes are valid UTF-8, so the String stays valid until it is freed.
        let bytes = unsafe { self.0.as_mut_vec() };
        for b in bytes.iter_mut() {
            // Volatile so the compiler cannot drop the "dead" stores.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Caps on what one step may consume. `Default` suits an ordinary compile on a small builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Most processes/threads alive at once (pids cgroup; `RLIMIT_NPROC` as a fallback, which
    /// does nothing for root). Default 1024.
    pub max_processes: u64,
    /// Memory for the whole step including its `/tmp` (memory cgroup; without one, `RLIMIT_AS`
    /// per process). Default 4 GiB.
    pub max_memory_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`). Default 4 GiB.
    pub max_file_bytes: u64,
    /// Total log bytes delivered to the sink; later output is read and dropped, and the outcome
    /// says so. Default 16 MiB.
    pub max_log_bytes: u64,
    /// Longest log line; longer lines are cut and marked. Default 16 KiB.
    pub max_line_bytes: usize,
    /// Size of the private `/tmp` tmpfs. Default 1 GiB.
    pub tmp_bytes: u64,
    /// CPU seconds per process (`RLIMIT_CPU`); a backstop behind the wall-clock timeout.
    /// Default none.
    pub cpu_seconds: Option<u64>,
    /// CPU share of the whole step in thousandths of a core (cgroup `cpu.max`; 1500 = one and
    /// a half cores, however many threads it runs). Default: all cores but one (at least one
    /// core), so that a CPU hog leaves room for the DVM and other jobs.
    pub cpu_millicores: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            max_processes: 1024,
            max_memory_bytes: 4 << 30,
            max_file_bytes: 4 << 30,
            max_log_bytes: 16 << 20,
            max_line_bytes: 16 << 10,
            tmp_bytes: 1 << 30,
            cpu_seconds: None,
            cpu_millicores: default_cpu_millicores(),
        }
    }
}

fn default_cpu_millicores() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    cores.saturating_sub(1).max(1) * 1000
}

/// One build step to run.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Shell script, run as `/bin/sh -eu -c SCRIPT` with the work dir as current directory.
    pub script: String,
    /// Extra environment variables (public: they are on bwrap's command line).
    pub env: BTreeMap<String, String>,
    /// Secret environment variables, redacted from logs (see [`SecretString`]).
    pub secrets: BTreeMap<String, SecretString>,
    /// Host directory with the checkout; read-write at [`BUILD_DIR`] in the sandbox.
    pub work_dir: PathBuf,
    /// Whether the step may use the network. Off: a fresh network namespace with only `lo`.
    /// On (bubblewrap): its own network namespace with outbound IPv4 through a user-mode stack
    /// (pasta); the host's loopback, private, link-local and other local addresses stay
    /// unreachable (see [`bwrap`](crate::bwrap)).
    pub network: bool,
    /// Wall-clock limit; on expiry every process of the step is killed.
    pub timeout: Duration,
    /// Resource caps.
    pub limits: ResourceLimits,
    /// `SOURCE_DATE_EPOCH` for the step (the commit time), also the mtime of packed files.
    pub source_date_epoch: i64,
    /// A build image's unpacked root filesystem (host path): when set it is the step's `/`,
    /// read-only, instead of the host's toolchain (see [`bwrap`](crate::bwrap)).
    pub rootfs: Option<PathBuf>,
}

impl StepSpec {
    /// A spec with no env, no secrets, no network, a 30 minute timeout, default limits and
    /// `SOURCE_DATE_EPOCH=0`.
    pub fn new(script: impl Into<String>, work_dir: impl Into<PathBuf>) -> Self {
        StepSpec {
            script: script.into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            work_dir: work_dir.into(),
            network: false,
            timeout: Duration::from_secs(30 * 60),
            limits: ResourceLimits::default(),
            source_date_epoch: 0,
            rootfs: None,
        }
    }

    /// Check what can be checked before spawning anything.
    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        let bad = |m: String| Err(SandboxError::InvalidSpec(m));
        if self.script.len() > MAX_SCRIPT_BYTES {
            return bad(format!(
                "script is {} bytes, more than {MAX_SCRIPT_BYTES}; put it in the repository",
                self.script.len()
            ));
        }
        if self.script.contains('\0') {
            return bad("script contains a NUL byte".into());
        }
        if !self.work_dir.is_absolute() {
            return bad(format!(
                "work dir {} is not absolute",
                self.work_dir.display()
            ));
        }
        if !self.work_dir.is_dir() {
            return bad(format!(
                "work dir {} is not a directory",
                self.work_dir.display()
            ));
        }
        if let Some(root) = &self.rootfs
            && (!root.is_absolute() || !root.is_dir())
        {
            return bad(format!(
                "image root {} is not an absolute directory",
                root.display()
            ));
        }
        if self.timeout.is_zero() {
            return bad("timeout is zero".into());
        }
        for (name, value) in &self.env {
            check_name(name)?;
            if value.contains('\0') {
                return bad(format!("env {name} contains a NUL byte"));
            }
        }
        for (name, value) in &self.secrets {
            check_name(name)?;
            if self.env.contains_key(name) {
                return bad(format!("{name} is both an env var and a secret"));
            }
            if value.expose().contains('\0') {
                return bad(format!("secret {name} contains a NUL byte"));
            }
        }
        Ok(())
    }

    /// The public environment of the step (no secrets), given where the build dir and a
    /// private home are. Later entries win; the step's `env` may override the defaults except
    /// the reserved names.
    pub(crate) fn public_env(&self, build_dir: &Path, home: &Path) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        set("HOME", home.display().to_string());
        set("TMPDIR", "/tmp".into());
        set("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string());
        set("TZ", "UTC".into());
        set("LANG", locale().into());
        set("LC_ALL", locale().into());
        set("PWD", build_dir.display().to_string());
        set("CI", "true".into());
        for (k, v) in &self.env {
            env.insert(k.clone(), v.clone());
        }
        env.into_iter().collect()
    }
}

fn check_name(name: &str) -> Result<(), SandboxError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !ok {
        return Err(SandboxError::InvalidSpec(format!(
            "env name {name:?} is not [A-Za-z_][A-Za-z0-9_]*"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(SandboxError::InvalidSpec(format!(
            "{name} is set by the sandbox and cannot be overridden"
        )));
    }
    Ok(())
}

/// `C.UTF-8` when the system has it (Debian ships it in libc-bin; glibc 2.35+ builds it in),
/// else plain `C`, so that tools never warn about a missing locale and sort the same way.
pub(crate) fn locale() -> &'static str {
    static LOCALE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    LOCALE.get_or_init(|| {
        let dirs = ["/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8"];
        if dirs.iter().any(|d| Path::new(d).is_dir()) {
            "C.UTF-8"
        } else {
            "C"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let mut spec = StepSpec::new("true", "/");
        spec.secrets.insert("TOKEN".into(), "hunter2".into());
        let dbg = format!("{spec:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("SecretString(***)"));
    }

    #[test]
    fn names_are_checked() {
        let mut spec = StepSpec::new("true", "/");
        spec.env.insert("A=B".into(), "x".into());
        assert!(spec.validate().is_err());
        let mut spec = StepSpec::new("true", "/");
        spec.env.insert("SOURCE_DATE_EPOCH".into(), "1".into());
        assert!(spec.validate().is_err());
        let mut spec = StepSpec::new("true", "/");
        spec.env.insert("T".into(), "1".into());
        spec.secrets.insert("T".into(), "1".into());
        assert!(spec.validate().is_err());
        assert!(StepSpec::new("true", "relative").validate().is_err());
        assert!(StepSpec::new("true", "/").validate().is_ok());
    }
}
