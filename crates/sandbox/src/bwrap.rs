//! The bubblewrap backend: each step in fresh namespaces with a minimal, read-only root.
//!
//! The sandbox's root is an empty tmpfs (remounted read-only once set up) holding only:
//!
//! | path | what |
//! |---|---|
//! | `/usr`, `/bin`, `/sbin`, `/lib*` | the host toolchain, read-only (symlinks kept as symlinks) |
//! | `/etc/{passwd,group,hosts,ssl,alternatives,ld.so.cache,...}` | read-only, only what ordinary tools read; with network a `resolv.conf` naming pasta's DNS forwarder |
//! | configured toolchain dirs | read-only at their host paths (e.g. `/root/.rustup`) |
//! | `/proc` | fresh, for the new pid namespace; `/proc/sys` read-only; `kcore`, `keys`, `timer_list` and other host-global files masked |
//! | `/dev` | minimal devices |
//! | `/tmp` (and `/var/tmp` → `/tmp`) | private tmpfs of [`ResourceLimits::tmp_bytes`](crate::ResourceLimits), gone afterwards |
//! | `/build` | the work dir, read-write, current directory |
//! | `/run/quorum/secrets` | only with secrets: the step's secrets, read-only |
//!
//! Nothing else of the host is visible: not `/root`, `/home`, `/var`, `/run`, `/sys`, nor the
//! DVM's key and data dirs. We deliberately never `--ro-bind / /`.
//!
//! **With a build image** ([`StepSpec::rootfs`](crate::StepSpec::rootfs)) the host's system is
//! not shown at all: every top-level directory, file and symlink of the image's root is bound
//! read-only in its place (its `/usr`, `/etc`, `/home`, `/opt`, `/var`, ...), except `/proc`,
//! `/dev`, `/tmp`, `/sys`, `/run` and `/build`, which the sandbox makes as above; configured
//! toolchain dirs are not bound either, and the image's `/var/tmp` is a private tmpfs. Every
//! other guarantee (namespaces, build user, seccomp, limits, secrets, network) is the same.
//!
//! **Never host root.** When the DVM runs as root, bwrap itself is started as the unprivileged
//! build user [`BUILD_USER`] (`setgroups`/`setresgid`/`setresuid` between fork and exec), so
//! the user namespace it makes maps the step onto that uid, not onto host uid 0: the kernel's
//! owner checks (sysctls, root-owned files bound in) then treat the step as a stranger. The
//! work dir is chowned to the build user before the step. Because the build user usually
//! cannot traverse a root DVM's data dir, the work dir and toolchain dirs are opened as root
//! and bound, in a private mount namespace of bwrap's parent process only, under
//! [`STAGE_DIR`]. [`Bubblewrap::detect`] refuses to work as root if the build user does not
//! exist, and says how to create it.
//!
//! Namespaces: all of them (`--unshare-all`, so user, pid, net, ipc, uts, cgroup); no
//! capabilities (`--cap-drop ALL`); no nested user namespaces (`--disable-userns` and the
//! seccomp filter); `--die-with-parent` and `--new-session` (no TIOCSTI into our terminal).
//! Killing bwrap kills the pid namespace's init and with it every process of the step,
//! however it daemonised. The [`seccomp`](crate::seccomp) filter denies mount, new user
//! namespaces, keyrings, bpf, perf, userfaultfd, io_uring, module and kexec calls and ptrace.
//!
//! Network: a step without network has a namespace with only `lo`. A step with network gets
//! its own namespace too, connected to the internet through pasta, with the host's loopback,
//! private, link-local and own networks unreachable: see [`net`](crate::net).
//!
//! Limits: a per-run control group caps processes (`pids.max`), memory and CPU (`cpu.max`),
//! and lets us kill every process of the step. `RLIMIT_NPROC` is no substitute when the DVM
//! runs as root without a build user: the kernel skips that check for root. Without a writable
//! cgroup we fall back to rlimits and say so in [`SandboxInfo::notes`](crate::SandboxInfo::notes).
//! `RLIMIT_FSIZE` and `RLIMIT_CORE=0` always apply; the private `/tmp` is a size-limited tmpfs;
//! the work dir is size-capped when it lives on a [`WorkVolume`](crate::volume::WorkVolume).
//!
//! After the step, setuid/setgid bits are cleared in the work dir, so that no file the step
//! made can be run with the build user's (or a non-root DVM's) ids by anyone else.
//!
//! Environment and secrets: bwrap itself runs with an *empty* environment. The public
//! environment is given with `--setenv` (it is public data anyway); secrets never go on a
//! command line (visible in `ps`) nor in bwrap's own environment (a secret named `LD_PRELOAD`
//! would then run code in bwrap, outside the sandbox). They travel in a memfd that bwrap mounts
//! at `/run/quorum/secrets`, which a two-line prelude sources before `exec`ing the step's shell.

use std::ffi::{CString, OsString};
use std::fs;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::CgroupPlan;
use crate::exec::{self, Launch, Rlimit, Stage};
use crate::net::{Ipv4Cidr, NetLaunch, NetPlan};
use crate::{
    BUILD_DIR, BoxFuture, LogSink, Sandbox, SandboxError, SandboxInfo, StepOutcome, StepSpec,
};

/// The unprivileged user a root DVM runs steps as.
pub const BUILD_USER: &str = "quorum-build";

/// Where a root DVM shows bwrap the directories it binds (in a private mount namespace; on the
/// host this stays an empty directory).
pub const STAGE_DIR: &str = "/run/quorum-sandbox";

/// `/proc` files that tell about or act on the whole host; masked with `/dev/null`.
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "kallsyms",
    "config.gz",
    "sysrq-trigger",
];

/// `/proc` directories of host hardware; hidden under an empty read-only tmpfs.
const PROC_HIDDEN: &[&str] = &["acpi", "scsi", "driver"];

/// Host name inside the sandbox, fixed so that it never ends up differing in artifacts.
pub const HOSTNAME: &str = "quorum-build";

/// Where the secrets file appears in the sandbox.
const SECRETS_PATH: &str = "/run/quorum/secrets";

/// Read-only `/etc` entries most tools need (name service, dynamic linker, TLS roots,
/// Debian alternatives). Missing ones are skipped (`--ro-bind-try`).
const ETC: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "networks",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "os-release",
    "debian_version",
    "mime.types",
    "shells",
];

/// Top-level system directories; on merged-/usr systems most are symlinks into `/usr`.
const SYSTEM_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The step's shell is started by this prelude: fixed umask, secrets loaded from the memfd
/// (exported by `set -a`), then `exec` so the step's shell is the one bwrap waits for.
const PRELUDE: &str = "umask 022
if [ -r /run/quorum/secrets ]; then set -a; . /run/quorum/secrets; set +a; fi
exec /bin/sh -eu -c \"$1\" quorum-step";

/// Runs steps under bubblewrap. Construct with [`Bubblewrap::detect`].
#[derive(Debug, Clone)]
pub struct Bubblewrap {
    bwrap: PathBuf,
    version: String,
    toolchain: Vec<PathBuf>,
    cgroups: CgroupPlan,
    disable_userns: bool,
    tmp_size: bool,
    notes: Vec<String>,
    /// The build user's uid and gid when the DVM is root.
    build_ids: Option<(u32, u32)>,
    /// Compiled seccomp programs (see [`crate::seccomp`]).
    seccomp: Arc<Vec<Vec<u8>>>,
    /// How steps with network get theirs; `None` with the reason in `network_off`.
    network: Option<NetPlan>,
    network_off: Option<String>,
    /// See [`Bubblewrap::unhardened_for_benchmarks`].
    unhardened: bool,
}

impl Bubblewrap {
    /// Find `bwrap` on `PATH` and check that a sandbox really starts on this machine.
    ///
    /// Blocking (it runs bwrap a few times, some tens of milliseconds): call it once at start-up.
    /// Also probes for a writable pids/memory cgroup; what is missing is logged as a warning
    /// and listed in [`SandboxInfo::notes`].
    pub fn detect() -> Result<Self, SandboxError> {
        match find_bwrap() {
            Some(p) => Self::detect_at(p),
            None => Err(SandboxError::Unavailable {
                reason: "bwrap not found on PATH; install bubblewrap \
                         (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
                    .into(),
            }),
        }
    }

    /// Like [`detect`](Self::detect) with an explicit bwrap binary.
    pub fn detect_at(bwrap: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        Self::detect_with(bwrap, BUILD_USER)
    }

    /// Like [`detect_at`](Self::detect_at) with another build user than [`BUILD_USER`] (used
    /// only when the DVM runs as root).
    pub fn detect_with(bwrap: impl Into<PathBuf>, build_user: &str) -> Result<Self, SandboxError> {
        let bwrap = bwrap.into();
        let unavailable = |reason: String| SandboxError::Unavailable { reason };
        let out = Command::new(&bwrap)
            .arg("--version")
            .output()
            .map_err(|e| unavailable(format!("cannot run {}: {e}", bwrap.display())))?;
        let version = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("bubblewrap")
            .trim()
            .to_owned();
        let help = Command::new(&bwrap)
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !help.contains("--add-seccomp-fd") || !help.contains("--block-fd") {
            return Err(unavailable(format!(
                "bwrap {version} lacks --add-seccomp-fd/--block-fd: bubblewrap 0.5 or newer needed"
            )));
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let build_ids = if root {
            let ids = lookup_user(build_user).ok_or_else(|| {
                unavailable(format!(
                    "the DVM runs as root and build steps must never run as host root, but the \
                     unprivileged build user {build_user:?} does not exist; create it with \
                     `useradd --system --no-create-home --home-dir /nonexistent --shell \
                     /usr/sbin/nologin {build_user}` (or run the DVM as an ordinary user)"
                ))
            })?;
            if ids.0 == 0 || ids.1 == 0 {
                return Err(unavailable(format!(
                    "the build user {build_user:?} has uid or gid 0; it must be unprivileged"
                )));
            }
            fs::create_dir_all(STAGE_DIR)
                .map_err(|e| unavailable(format!("cannot create {STAGE_DIR}: {e}")))?;
            Some(ids)
        } else {
            None
        };
        let seccomp = Arc::new(crate::seccomp::programs()?);
        let (cgroups, mut notes) = CgroupPlan::detect();
        let (network, network_off) = match NetPlan::detect(build_ids.map(|i| i.0)) {
            Ok(plan) => (Some(plan), None),
            Err(why) => (None, Some(why)),
        };
        let mut me = Bubblewrap {
            bwrap,
            version,
            toolchain: Vec::new(),
            cgroups,
            disable_userns: help.contains("--disable-userns"),
            tmp_size: help.contains("--size"),
            notes: Vec::new(),
            build_ids,
            seccomp,
            network,
            network_off,
            unhardened: false,
        };
        if let Err(first) = me.trial(false) {
            if !me.disable_userns {
                return Err(unavailable(first));
            }
            // Some kernels refuse the sysctl write behind --disable-userns; run without it
            // (the seccomp filter still refuses new user namespaces).
            me.disable_userns = false;
            me.trial(false).map_err(|_| unavailable(first))?;
            notes.push("--disable-userns failed; nested user namespaces are refused by the seccomp filter only".into());
        }
        if me.network.is_some()
            && let Err(why) = me.trial(true)
        {
            me.network = None;
            me.network_off = Some(why);
        }
        if let Some(why) = &me.network_off {
            notes.push(format!("steps cannot have network: {why}"));
        }
        if !me.tmp_size {
            notes.push(format!(
                "bwrap {} has no --size: /tmp is not size-limited (bubblewrap 0.8+ needed)",
                me.version
            ));
        }
        if !me.cgroups.has_pids() {
            notes.push(if root && me.build_ids.is_none() {
                "no pids cgroup and running as root: RLIMIT_NPROC does not bind root, so a fork \
                 bomb is stopped only by the timeout; give the DVM a writable pids cgroup"
                    .into()
            } else {
                "no pids cgroup: processes limited by RLIMIT_NPROC (counted per user)".into()
            });
        }
        if !me.cgroups.has_memory() {
            notes.push("no memory cgroup: memory limited per process by RLIMIT_AS".into());
        }
        if !me.cgroups.has_cpu() {
            notes.push("no cpu cgroup: a step's CPU use is not capped".into());
        }
        for n in &notes {
            tracing::warn!("bubblewrap sandbox: {n}");
        }
        me.notes = notes;
        Ok(me)
    }

    /// Steps with network may also reach these networks, which are otherwise unreachable
    /// (loopback, private, link-local and the host's own networks; see [`crate::net`]).
    pub fn with_network_allowed(mut self, allow: Vec<Ipv4Cidr>) -> Self {
        if let Some(plan) = &mut self.network {
            plan.allow = allow;
        }
        self
    }

    /// Benchmarks only: the flags this backend used before the hardening (steps as the DVM's
    /// own uid, so host root for a root DVM; no seccomp; `/proc/sys` and the host-global proc
    /// files as the kernel leaves them), so that `benches/startup.rs` can measure what the
    /// hardening costs in the same run. Never use it to run steps.
    #[doc(hidden)]
    pub fn unhardened_for_benchmarks(mut self) -> Self {
        self.build_ids = None;
        self.seccomp = Arc::new(Vec::new());
        self.unhardened = true;
        self
    }

    /// Whether steps may have network here (pasta and its tools were found and work).
    pub fn network_available(&self) -> bool {
        self.network.is_some()
    }

    /// Why steps cannot have network here, when they cannot.
    pub fn network_unavailable_reason(&self) -> Option<&str> {
        self.network_off.as_deref()
    }

    /// The bwrap binary in use.
    pub fn program(&self) -> &Path {
        &self.bwrap
    }

    /// The uid and gid steps run as on the host, when the DVM is root.
    pub fn build_ids(&self) -> Option<(u32, u32)> {
        self.build_ids
    }

    /// Also bind `path` read-only at the same path inside the sandbox (a toolchain such as
    /// `/root/.rustup` or `/opt/go`); if it has a `bin` subdirectory, that goes first on the
    /// default `PATH`. Do not bind a directory holding credentials (`~/.cargo` has
    /// `credentials.toml`: bind `~/.cargo/bin` and the registry cache instead).
    pub fn with_toolchain(mut self, path: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let path = path.into();
        let bad = |why: &str| {
            Err(SandboxError::InvalidSpec(format!(
                "toolchain path {}: {why}",
                path.display()
            )))
        };
        if !path.is_absolute() {
            return bad("not absolute");
        }
        if !path.exists() {
            return bad("does not exist");
        }
        let replaced = ["/", "/tmp", "/run", "/etc", "/var", "/usr"];
        let covered = [BUILD_DIR, "/proc", "/dev", "/run/quorum"];
        if replaced.iter().any(|r| path == Path::new(r))
            || covered.iter().any(|c| path.starts_with(c))
        {
            return bad("would replace or hide a directory the sandbox sets up itself");
        }
        self.toolchain.push(path);
        Ok(self)
    }

    /// The extra read-only binds.
    pub fn toolchain(&self) -> &[PathBuf] {
        &self.toolchain
    }

    /// Start `true` in a sandbox exactly like a step (with network if asked); explain what to
    /// fix if it fails.
    fn trial(&self, network: bool) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let mut spec = StepSpec::new("true", dir.path());
        spec.limits.tmp_bytes = 1 << 20;
        spec.network = network;
        spec.timeout = Duration::from_secs(10);
        // Its own thread and runtime: detect() may be called from inside a runtime.
        let me = self.clone();
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            let mut log: Vec<crate::LogLine> = Vec::new();
            rt.block_on(me.run_step(&spec, &mut log))
                .map_err(|e| e.to_string())
                .and_then(|out| {
                    if out.success() {
                        Ok(())
                    } else {
                        let text: Vec<String> = log.iter().map(|l| l.text.clone()).collect();
                        Err(format!(
                            "a trial step failed ({out:?}): {}",
                            text.join("; ")
                        ))
                    }
                })
        })
        .join()
        .map_err(|_| "the trial sandbox panicked".to_string())?;
        if network {
            return result.map_err(|e| format!("a trial step with network failed: {e}"));
        }
        result.map_err(|e| {
            format!(
                "bwrap cannot start a sandbox here: {e}. bwrap needs user namespaces for {}: \
                 enable unprivileged ones (sysctl kernel.unprivileged_userns_clone=1 and \
                 user.max_user_namespaces>0; on Ubuntu 24.04+ also \
                 kernel.apparmor_restrict_unprivileged_userns=0), or in a container allow \
                 unshare/CLONE_NEWUSER (seccomp/AppArmor profile)",
                match self.build_ids {
                    Some(_) => format!("the build user {BUILD_USER}"),
                    None => "this user".into(),
                }
            )
        })
    }

    /// The public environment plus the toolchain's `bin` dirs on `PATH`.
    fn env(&self, spec: &StepSpec) -> Vec<(String, String)> {
        let mut env = spec.public_env(Path::new(BUILD_DIR), Path::new("/tmp"));
        if !spec.env.contains_key("PATH") {
            let bins: Vec<String> = self
                .toolchain
                .iter()
                .map(|t| t.join("bin"))
                .filter(|b| b.is_dir())
                .map(|b| b.display().to_string())
                .collect();
            if let Some((_, path)) = env.iter_mut().find(|(k, _)| k == "PATH")
                && !bins.is_empty()
            {
                *path = format!("{}:{path}", bins.join(":"));
            }
        }
        env
    }

    fn args(
        &self,
        spec: &StepSpec,
        src: &Sources,
        env: &[(String, String)],
        fds: &RunFds,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        // Always a network namespace of its own; with network, pasta attaches to it.
        push(&[&"--unshare-all", &"--unshare-user"]);
        push(&[
            &"--die-with-parent",
            &"--new-session",
            &"--cap-drop",
            &"ALL",
        ]);
        if self.disable_userns {
            push(&[&"--disable-userns"]);
        }
        push(&[&"--hostname", &HOSTNAME]);
        let resolv = fds.resolv.map(|fd| fd.to_string());
        match (&spec.rootfs, &src.rootfs) {
            (Some(image), Some(from)) => image_root(&mut a, image, from, resolv.as_deref()),
            _ => host_root(&mut a, resolv.as_deref()),
        }
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        push(&[&"--proc", &"/proc"]);
        if !self.unhardened {
            self.proc_hardening(&mut a);
        }
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        push(&[&"--dev", &"/dev"]);
        let tmp_size = spec.limits.tmp_bytes.to_string();
        if self.tmp_size {
            push(&[&"--size", &tmp_size]);
        }
        push(&[&"--tmpfs", &"/tmp"]);
        if spec.rootfs.is_none() {
            push(&[&"--dir", &"/var", &"--symlink", &"../tmp", &"/var/tmp"]);
        } else if spec
            .rootfs
            .as_ref()
            .is_some_and(|r| real_dir(&r.join("var")) && real_dir(&r.join("var/tmp")))
        {
            // The image's /var is read-only; its /var/tmp is private scratch like /tmp.
            if self.tmp_size {
                push(&[&"--size", &tmp_size]);
            }
            push(&[&"--tmpfs", &"/var/tmp"]);
        }
        // After /tmp, so that a toolchain living under /tmp is not hidden by the tmpfs.
        // With an image nothing of the host's toolchain is shown (only the image is `/`).
        if spec.rootfs.is_none() {
            for (t, from) in self.toolchain.iter().zip(&src.toolchain) {
                push(&[&"--ro-bind", from, t]);
            }
        }
        push(&[&"--bind", &src.work, &BUILD_DIR]);
        let secrets_fd = fds.secrets.map(|fd| fd.to_string());
        if let Some(fd) = &secrets_fd {
            push(&[&"--perms", &"0400", &"--ro-bind-data", fd, &SECRETS_PATH]);
        }
        // The root tmpfs would otherwise be writable: an unbounded, unaccounted place to write.
        push(&[&"--remount-ro", &"/", &"--chdir", &BUILD_DIR]);
        push(&[&"--clearenv"]);
        for (k, v) in env {
            push(&[&"--setenv", k, v]);
        }
        let numbered: Vec<String> = fds.seccomp.iter().map(|fd| fd.to_string()).collect();
        for fd in &numbered {
            push(&[&"--add-seccomp-fd", fd]);
        }
        let status_fd = fds.status.map(|fd| fd.to_string());
        if let Some(fd) = &status_fd {
            push(&[&"--json-status-fd", fd]);
        }
        let info = fds.info.map(|fd| fd.to_string());
        let block = fds.block.map(|fd| fd.to_string());
        if let (Some(info), Some(block)) = (&info, &block) {
            push(&[&"--info-fd", info, &"--block-fd", block]);
        }
        push(&[
            &"--",
            &"/bin/sh",
            &"-c",
            &PRELUDE,
            &"quorum-prelude",
            &spec.script,
        ]);
        a
    }

    /// `/proc/sys` read-only and the host-global proc files masked.
    fn proc_hardening(&self, a: &mut Vec<OsString>) {
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        // bwrap covers /proc/sys only if it looks writable to it; as the build user it does
        // not, which is no reason to leave it to the kernel's owner checks alone.
        push(&[&"--ro-bind", &"/proc/sys", &"/proc/sys"]);
        for f in PROC_MASKED {
            let p = Path::new("/proc").join(f);
            if p.exists() {
                push(&[&"--ro-bind", &"/dev/null", &p]);
            }
        }
        for d in PROC_HIDDEN {
            let p = Path::new("/proc").join(d);
            if p.is_dir() {
                push(&[&"--perms", &"0555", &"--tmpfs", &p, &"--remount-ro", &p]);
            }
        }
    }

    async fn run_step(
        &self,
        spec: &StepSpec,
        log: &mut dyn LogSink,
    ) -> Result<StepOutcome, SandboxError> {
        spec.validate()?;
        if spec.network && self.network.is_none() {
            return Err(SandboxError::Unavailable {
                reason: format!(
                    "the step asks for network, which this sandbox cannot give: {}",
                    self.network_off.as_deref().unwrap_or("no network support")
                ),
            });
        }
        let work_dir = spec
            .work_dir
            .canonicalize()
            .map_err(|e| SandboxError::io(format!("work dir {}", spec.work_dir.display()), e))?;
        if let Some((uid, gid)) = self.build_ids {
            let dir = work_dir.clone();
            tokio::task::spawn_blocking(move || chown_tree(&dir, uid, gid))
                .await
                .map_err(|e| SandboxError::io("preparing the work dir", std::io::Error::other(e)))?
                .map_err(|e| {
                    SandboxError::io(format!("giving {} to {BUILD_USER}", work_dir.display()), e)
                })?;
        }
        let mut inherit_fds = Vec::new();
        let mut close_after_spawn = Vec::new();
        let mut keep = |fd: OwnedFd, inherit: &mut Vec<RawFd>| -> RawFd {
            let raw = fd.as_raw_fd();
            inherit.push(raw);
            close_after_spawn.push(fd);
            raw
        };
        let (status_r, status_w) = pipe()?;
        let mut fds = RunFds {
            status: Some(keep(status_w, &mut inherit_fds)),
            ..RunFds::default()
        };
        if !spec.secrets.is_empty() {
            fds.secrets = Some(keep(secrets_memfd(spec)?, &mut inherit_fds));
        }
        for program in self.seccomp.iter() {
            fds.seccomp
                .push(keep(memfd("quorum-seccomp", program)?, &mut inherit_fds));
        }
        let mut network = None;
        if let Some(plan) = &self.network
            && spec.network
        {
            fds.resolv = Some(keep(
                memfd("quorum-resolv", crate::net::resolv_conf().as_bytes())?,
                &mut inherit_fds,
            ));
            let (info_r, info_w) = pipe()?;
            let (block_r, block_w) = pipe()?;
            fds.info = Some(keep(info_w, &mut inherit_fds));
            fds.block = Some(keep(block_r, &mut inherit_fds));
            network = Some(NetLaunch {
                plan: plan.clone(),
                info: info_r,
                block: block_w,
                ids: self.build_ids,
            });
        }
        // As root: show bwrap the work dir and toolchains through the staging mounts.
        let (src, stage) = if self.build_ids.is_some() {
            let mut binds = Vec::new();
            let mut staged = Vec::new();
            for (i, dir) in std::iter::once(&work_dir)
                .chain(spec.rootfs.iter())
                .chain(&self.toolchain)
                .enumerate()
            {
                if !dir.is_dir() {
                    return Err(SandboxError::Setup {
                        reason: format!("{} is not a directory", dir.display()),
                    });
                }
                let target = Path::new(STAGE_DIR).join(i.to_string());
                binds.push((path_cstring(dir)?, path_cstring(&target)?));
                staged.push(target);
            }
            let work = staged.remove(0);
            let rootfs = spec.rootfs.as_ref().map(|_| staged.remove(0));
            (
                Sources {
                    work,
                    rootfs,
                    toolchain: staged,
                },
                Some(Stage {
                    dir: path_cstring(Path::new(STAGE_DIR))?,
                    binds,
                }),
            )
        } else {
            (
                Sources {
                    work: work_dir.clone(),
                    rootfs: spec.rootfs.clone(),
                    toolchain: self.toolchain.clone(),
                },
                None,
            )
        };
        let env = self.env(spec);
        let args = self.args(spec, &src, &env, &fds);
        let cgroup =
            if self.cgroups.has_pids() || self.cgroups.has_memory() || self.cgroups.has_cpu() {
                Some(self.cgroups.create(&spec.limits)?)
            } else {
                None
            };
        let launch = Launch {
            program: self.bwrap.clone(),
            args,
            // bwrap itself gets nothing: see the module docs.
            env: Vec::new(),
            cwd: None,
            inherit_fds,
            close_after_spawn,
            bwrap_status: Some(status_r),
            rlimits: rlimits(spec, &self.cgroups),
            cgroup,
            drop_to: self.build_ids,
            stage,
            network,
        };
        let outcome = exec::execute(launch, spec, log).await;
        // Every process of the step is dead now, so nothing can race this walk.
        let dir = work_dir.clone();
        tokio::task::spawn_blocking(move || strip_setid(&dir))
            .await
            .map_err(|e| SandboxError::io("checking the work dir", std::io::Error::other(e)))?
            .map_err(|e| SandboxError::io(format!("checking {}", work_dir.display()), e))?;
        outcome
    }
}

/// The host's toolchain as the sandbox's system: `/usr`, the top-level system dirs and the
/// few `/etc` files tools read.
fn host_root(a: &mut Vec<OsString>, resolv: Option<&str>) {
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
        a.extend(items.iter().map(|i| i.as_ref().to_owned()));
    };
    push(&[&"--ro-bind", &"/usr", &"/usr"]);
    for d in SYSTEM_DIRS {
        let host = Path::new("/").join(d);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(&host) {
                    push(&[&"--symlink", &target, &host]);
                }
            }
            Ok(m) if m.is_dir() => push(&[&"--ro-bind", &host, &host]),
            _ => {}
        }
    }
    for e in ETC {
        let p = Path::new("/etc").join(e);
        push(&[&"--ro-bind-try", &p, &p]);
    }
    if let Some(fd) = &resolv {
        push(&[
            &"--perms",
            &"0444",
            &"--ro-bind-data",
            fd,
            &"/etc/resolv.conf",
        ]);
    }
    // TZ=UTC is set too; this is for tools that read /etc/localtime directly.
    push(&[&"--symlink", &"/usr/share/zoneinfo/UTC", &"/etc/localtime"]);
}

/// A directory, not a symlink to one (which would be followed on the host).
fn real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Top-level names of an image that the sandbox provides itself (or never shows).
const IMAGE_SKIPPED: &[&str] = &["proc", "dev", "tmp", "sys", "run", "build"];

/// A build image as the sandbox's system: every top-level directory and symlink of the image
/// root, read-only. `image` is the root's real path (to list it), `from` where bwrap finds it
/// (the same, or its staged path for a root DVM).
fn image_root(a: &mut Vec<OsString>, image: &Path, from: &Path, resolv: Option<&str>) {
    let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
        a.extend(items.iter().map(|i| i.as_ref().to_owned()));
    };
    let mut names: Vec<OsString> = fs::read_dir(image)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    let etc_has_resolv =
        fs::symlink_metadata(image.join("etc/resolv.conf")).is_ok_and(|m| m.is_file());
    for name in names {
        if IMAGE_SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let inside = Path::new("/").join(&name);
        let host = image.join(&name);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = fs::read_link(&host) {
                    push(&[&"--symlink", &target, &inside]);
                }
            }
            Ok(m) if m.is_dir() && name == "etc" && resolv.is_some() && !etc_has_resolv => {
                // A file cannot be bound into a read-only directory that lacks it: show /etc
                // entry by entry, with pasta's resolv.conf beside them.
                push(&[&"--dir", &"/etc"]);
                let mut entries: Vec<OsString> = fs::read_dir(&host)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                entries.sort();
                for e in entries.into_iter().filter(|e| e != "resolv.conf") {
                    let p = Path::new("/etc").join(&e);
                    match fs::symlink_metadata(host.join(&e)) {
                        Ok(m) if m.file_type().is_symlink() => {
                            if let Ok(t) = fs::read_link(host.join(&e)) {
                                push(&[&"--symlink", &t, &p]);
                            }
                        }
                        Ok(_) => push(&[&"--ro-bind", &from.join("etc").join(&e), &p]),
                        Err(_) => {}
                    }
                }
            }
            Ok(m) if m.is_dir() || m.is_file() => push(&[&"--ro-bind", &from.join(&name), &inside]),
            _ => {}
        }
    }
    push(&[&"--dir", &"/run"]);
    if let Some(fd) = resolv {
        push(&[
            &"--perms",
            &"0444",
            &"--ro-bind-data",
            &fd,
            &"/etc/resolv.conf",
        ]);
    }
}

/// Where bwrap finds the host directories it binds.
struct Sources {
    work: PathBuf,
    /// The build image's root, when the step has one.
    rootfs: Option<PathBuf>,
    /// In the order of [`Bubblewrap::toolchain`].
    toolchain: Vec<PathBuf>,
}

/// Descriptors bwrap inherits for one run.
#[derive(Default)]
struct RunFds {
    status: Option<RawFd>,
    secrets: Option<RawFd>,
    seccomp: Vec<RawFd>,
    resolv: Option<RawFd>,
    info: Option<RawFd>,
    block: Option<RawFd>,
}

/// Give the work dir to the build user (symlinks themselves, never their targets), so that the
/// step can write its checkout.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Where [`Bubblewrap::detect`] finds bwrap: on `PATH`, else `/usr/bin` (a service's `PATH`
/// can be minimal).
pub(crate) fn find_bwrap() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

/// The uid and gid of a user, from the system's user database.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pw's strings.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

fn path_cstring(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| SandboxError::InvalidSpec(format!("{} contains a NUL byte", p.display())))
}

/// Clear setuid/setgid bits on regular files in the work dir.
///
/// Inside the sandbox such bits are inert (bwrap mounts binds `nosuid`), but the step runs as
/// the DVM's uid: as root, `chmod 4755` on a file it owns would leave a setuid-root binary in
/// the host's work dir for anyone who can reach it. Symlinks are not followed.
fn strip_setid(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            strip_setid(&entry.path())?;
        } else if meta.is_file() && meta.permissions().mode() & 0o6000 != 0 {
            let mode = meta.permissions().mode() & 0o1777;
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

impl Sandbox for Bubblewrap {
    fn describe(&self) -> SandboxInfo {
        SandboxInfo {
            name: "bubblewrap".into(),
            isolated: true,
            version: self.version.clone(),
            network: self.network.is_some(),
            notes: self.notes.clone(),
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

/// The rlimits for a step: always file size and no cores; process and address-space limits
/// only where no cgroup does the job better.
pub(crate) fn rlimits(spec: &StepSpec, cgroups: &CgroupPlan) -> Vec<Rlimit> {
    let l = &spec.limits;
    let mut r = vec![Rlimit::FileSize(l.max_file_bytes), Rlimit::NoCore];
    if let Some(cpu) = l.cpu_seconds {
        r.push(Rlimit::Cpu(cpu));
    }
    if !cgroups.has_pids() {
        r.push(Rlimit::Processes(l.max_processes));
    }
    if !cgroups.has_memory() {
        r.push(Rlimit::AddressSpace(l.max_memory_bytes));
    }
    r
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxError::io(
            "creating a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 just returned these two fresh descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `data` in an anonymous in-memory file, offset 0 (what bwrap reads from `--ro-bind-data` and
/// `--add-seccomp-fd`).
fn memfd(name: &str, data: &[u8]) -> Result<OwnedFd, SandboxError> {
    let err = |e| SandboxError::io(format!("creating the {name} memfd"), e);
    let cname = CString::new(name).expect("no NUL");
    // SAFETY: the name is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this fresh descriptor.
    let mut file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(data).map_err(err)?;
    file.rewind().map_err(err)?;
    Ok(OwnedFd::from(file))
}

/// The secrets as a shell file (`NAME='value'` lines) in an anonymous in-memory file, offset 0.
fn secrets_memfd(spec: &StepSpec) -> Result<OwnedFd, SandboxError> {
    let err = |e| SandboxError::io("creating the secrets memfd", e);
    // SAFETY: the name is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(c"quorum-secrets".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this fresh descriptor.
    let mut file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut text = String::new();
    for (k, v) in &spec.secrets {
        text.push_str(k);
        text.push_str("='");
        text.push_str(&v.expose().replace('\'', "'\\''"));
        text.push_str("'\n");
    }
    file.write_all(text.as_bytes()).map_err(err)?;
    // Overwrite our copy of the plaintext; the memfd itself dies with its last descriptor.
    // SAFETY: zero bytes keep the String valid UTF-8.
    unsafe { text.as_mut_vec().fill(0) };
    file.rewind().map_err(err)?;
    Ok(OwnedFd::from(file))
}
