//! The bubblewrap backend: each step in fresh namespaces with a minimal, read-only root.
//!
//! The sandbox's root is an empty tmpfs (remounted read-only once set up) holding only:
//!
//! | path | what |
//! |---|---|
//! | `/usr`, `/bin`, `/sbin`, `/lib*` | the host toolchain, read-only (symlinks kept as symlinks) |
//! | `/etc/{passwd,group,hosts,ssl,alternatives,ld.so.cache,...}` | read-only, only what ordinary tools read; `resolv.conf` only with network |
//! | configured toolchain dirs | read-only at their host paths (e.g. `/root/.rustup`) |
//! | `/proc`, `/dev` | fresh, for the new pid namespace; minimal devices |
//! | `/tmp` (and `/var/tmp` → `/tmp`) | private tmpfs of [`ResourceLimits::tmp_bytes`](crate::ResourceLimits), gone afterwards |
//! | `/build` | the work dir, read-write, current directory |
//! | `/run/quorum/secrets` | only with secrets: the step's secrets, read-only |
//!
//! Nothing else of the host is visible: not `/root`, `/home`, `/var`, `/run`, `/sys`, nor the
//! DVM's key and data dirs. We deliberately never `--ro-bind / /`.
//!
//! Namespaces: all of them (`--unshare-all`, so user, pid, net, ipc, uts, cgroup), with the
//! network shared only when the step asks for it; no capabilities (`--cap-drop ALL`); no nested
//! user namespaces (`--disable-userns`); `--die-with-parent` and `--new-session` (no TIOCSTI
//! into our terminal). Killing bwrap kills the pid namespace's init and with it every process of
//! the step, however it daemonised.
//!
//! Limits: a per-run control group caps processes (`pids.max`) and memory, and lets us kill
//! every process of the step. `RLIMIT_NPROC` is no substitute when the DVM runs as root: the
//! kernel skips that check for the root user, and bwrap maps the sandbox uid onto the invoking
//! uid, so a fork bomb under `prlimit --nproc=20` still spawns hundreds of processes (measured).
//! Without a writable cgroup we fall back to rlimits (effective for a non-root DVM) and say so
//! in [`SandboxInfo::notes`](crate::SandboxInfo::notes). `RLIMIT_FSIZE` and `RLIMIT_CORE=0`
//! always apply; the private `/tmp` is a size-limited tmpfs.
//!
//! After the step, setuid/setgid bits are cleared in the work dir: the step runs as the DVM's
//! uid, and a `chmod 4755` by a root DVM's step would otherwise leave a setuid-root file on the
//! host.
//!
//! Environment and secrets: bwrap itself runs with an *empty* environment. The public
//! environment is given with `--setenv` (it is public data anyway); secrets never go on a
//! command line (visible in `ps`) nor in bwrap's own environment (a secret named `LD_PRELOAD`
//! would then run code in bwrap, outside the sandbox). They travel in a memfd that bwrap mounts
//! at `/run/quorum/secrets`, which a two-line prelude sources before `exec`ing the step's shell.

use std::ffi::OsString;
use std::fs;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup::CgroupPlan;
use crate::exec::{self, Launch, Rlimit};
use crate::{
    BUILD_DIR, BoxFuture, LogSink, Sandbox, SandboxError, SandboxInfo, StepOutcome, StepSpec,
};

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
}

impl Bubblewrap {
    /// Find `bwrap` on `PATH` and check that a sandbox really starts on this machine.
    ///
    /// Blocking (it runs bwrap a few times, some tens of milliseconds): call it once at start-up.
    /// Also probes for a writable pids/memory cgroup; what is missing is logged as a warning
    /// and listed in [`SandboxInfo::notes`].
    pub fn detect() -> Result<Self, SandboxError> {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join("bwrap"))
            .find(|p| p.is_file());
        match found {
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
        let (cgroups, mut notes) = CgroupPlan::detect();
        let mut me = Bubblewrap {
            bwrap,
            version,
            toolchain: Vec::new(),
            cgroups,
            disable_userns: help.contains("--disable-userns"),
            tmp_size: help.contains("--size"),
            notes: Vec::new(),
        };
        if let Err(first) = me.trial() {
            if !me.disable_userns {
                return Err(unavailable(first));
            }
            // Some kernels refuse the sysctl write behind --disable-userns; run without it.
            me.disable_userns = false;
            me.trial().map_err(|_| unavailable(first))?;
            notes.push("nested user namespaces are not disabled (--disable-userns failed)".into());
        }
        if !me.tmp_size {
            notes.push(format!(
                "bwrap {} has no --size: /tmp is not size-limited (bubblewrap 0.8+ needed)",
                me.version
            ));
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !me.cgroups.has_pids() {
            notes.push(if root {
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
        for n in &notes {
            tracing::warn!("bubblewrap sandbox: {n}");
        }
        me.notes = notes;
        Ok(me)
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

    /// Start `true` in a sandbox exactly like a step; explain what to fix if it fails.
    fn trial(&self) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let mut spec = StepSpec::new("true", dir.path());
        spec.limits.tmp_bytes = 1 << 20;
        let env = self.env(&spec);
        let mut child = Command::new(&self.bwrap)
            .args(self.args(&spec, dir.path(), &env, None, None))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bwrap.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("a trial sandbox did not finish within 10 s".into());
                }
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        Err(format!(
            "bwrap cannot start a sandbox here ({status}): {}. bwrap needs user namespaces: as \
             non-root enable unprivileged ones (sysctl kernel.unprivileged_userns_clone=1 and \
             user.max_user_namespaces>0; on Ubuntu 24.04+ also \
             kernel.apparmor_restrict_unprivileged_userns=0), in a container allow \
             unshare/CLONE_NEWUSER (seccomp/AppArmor profile), or run the DVM as root",
            err.trim()
        ))
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
        work_dir: &Path,
        env: &[(String, String)],
        status_fd: Option<RawFd>,
        secrets_fd: Option<RawFd>,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        push(&[&"--unshare-all", &"--unshare-user"]);
        if spec.network {
            push(&[&"--share-net"]);
        }
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
        let mut etc: Vec<&str> = ETC.to_vec();
        if spec.network {
            etc.push("resolv.conf");
        }
        for e in etc {
            let p = Path::new("/etc").join(e);
            push(&[&"--ro-bind-try", &p, &p]);
        }
        // TZ=UTC is set too; this is for tools that read /etc/localtime directly.
        push(&[&"--symlink", &"/usr/share/zoneinfo/UTC", &"/etc/localtime"]);
        push(&[&"--proc", &"/proc", &"--dev", &"/dev"]);
        let tmp_size = spec.limits.tmp_bytes.to_string();
        if self.tmp_size {
            push(&[&"--size", &tmp_size]);
        }
        push(&[&"--tmpfs", &"/tmp"]);
        push(&[&"--dir", &"/var", &"--symlink", &"../tmp", &"/var/tmp"]);
        // After /tmp, so that a toolchain living under /tmp is not hidden by the tmpfs.
        for t in &self.toolchain {
            push(&[&"--ro-bind", t, t]);
        }
        push(&[&"--bind", &work_dir, &BUILD_DIR]);
        let secrets_fd = secrets_fd.map(|fd| fd.to_string());
        if let Some(fd) = &secrets_fd {
            push(&[&"--perms", &"0400", &"--ro-bind-data", fd, &SECRETS_PATH]);
        }
        // The root tmpfs would otherwise be writable: an unbounded, unaccounted place to write.
        push(&[&"--remount-ro", &"/", &"--chdir", &BUILD_DIR]);
        push(&[&"--clearenv"]);
        for (k, v) in env {
            push(&[&"--setenv", k, v]);
        }
        let status_fd = status_fd.map(|fd| fd.to_string());
        if let Some(fd) = &status_fd {
            push(&[&"--json-status-fd", fd]);
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

    async fn run_step(
        &self,
        spec: &StepSpec,
        log: &mut dyn LogSink,
    ) -> Result<StepOutcome, SandboxError> {
        spec.validate()?;
        let work_dir = spec
            .work_dir
            .canonicalize()
            .map_err(|e| SandboxError::io(format!("work dir {}", spec.work_dir.display()), e))?;
        let (status_r, status_w) = pipe()?;
        let mut inherit_fds = vec![status_w.as_raw_fd()];
        let mut close_after_spawn = vec![status_w];
        let secrets_fd = if spec.secrets.is_empty() {
            None
        } else {
            let fd = secrets_memfd(spec)?;
            inherit_fds.push(fd.as_raw_fd());
            let raw = fd.as_raw_fd();
            close_after_spawn.push(fd);
            Some(raw)
        };
        let env = self.env(spec);
        let args = self.args(spec, &work_dir, &env, Some(inherit_fds[0]), secrets_fd);
        let cgroup = if self.cgroups.has_pids() || self.cgroups.has_memory() {
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
