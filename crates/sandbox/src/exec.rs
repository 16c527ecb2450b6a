//! The part both backends share: spawn a prepared command, stream and cap its output, enforce
//! the timeout, and make sure nothing it started survives the step.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cgroup::RunCgroup;
use crate::log::{LineSplitter, LogGate, RawLine, Redactor};
use crate::net::NetLaunch;
use crate::{LogSink, SandboxError, StepOutcome, StepSpec, Stream};

/// How long we keep reading after the step ended or was killed, for output still in the pipes.
/// Only an unsandboxed step whose stray processes escaped every kill can hold the pipes open
/// that long; under bubblewrap the pid namespace dies with the step and EOF is immediate.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A resource limit to set in the child before `exec`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rlimit {
    /// Largest file written (`RLIMIT_FSIZE`).
    FileSize(u64),
    /// Processes of the real uid (`RLIMIT_NPROC`); ignored by the kernel for root.
    Processes(u64),
    /// Address space per process (`RLIMIT_AS`), only when there is no memory cgroup.
    AddressSpace(u64),
    /// CPU seconds per process (`RLIMIT_CPU`).
    Cpu(u64),
    /// No core dumps: they would land in the work dir and may hold secrets.
    NoCore,
}

/// Everything a backend decided; `execute` does the rest.
pub(crate) struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The complete environment of the spawned process (it starts empty).
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Descriptors the child must inherit (their close-on-exec flag is cleared after fork).
    pub inherit_fds: Vec<RawFd>,
    /// Our ends of those descriptors' counterparts, closed right after spawn.
    pub close_after_spawn: Vec<OwnedFd>,
    /// Read end of bwrap's `--json-status-fd`: its `exit-code` record is the step's status,
    /// and its absence means bwrap failed before the step started.
    pub bwrap_status: Option<OwnedFd>,
    pub rlimits: Vec<Rlimit>,
    pub cgroup: Option<RunCgroup>,
    /// Become this uid/gid (no supplementary groups) right before `exec`: set when the DVM
    /// runs as root, so that nothing of the step is ever host uid 0.
    pub drop_to: Option<(u32, u32)>,
    /// Host directories to show bwrap under a staging dir (see [`Stage`]).
    pub stage: Option<Stage>,
    /// The step's own network, attached once bwrap has made its namespaces.
    pub network: Option<NetLaunch>,
}

/// Directories bwrap must bind although the unprivileged build user cannot reach their host
/// paths (a root DVM's data dir is usually `0700`): in the child, before dropping root, a
/// private mount namespace gets a small tmpfs at `dir` with each directory bound at
/// `dir/<i>`. It all disappears with the child; the host never sees these mounts.
pub(crate) struct Stage {
    pub dir: CString,
    /// `(host directory, where it appears)`
    pub binds: Vec<(CString, CString)>,
}

/// `setgroups([])`, `setresgid`, `setresuid`: drop every root id for good. Async-signal-safe.
pub(crate) fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The staging mounts; runs in the child between fork and exec (async-signal-safe calls only).
fn stage_mounts(stage: &Stage) -> std::io::Result<()> {
    let err = || Err(std::io::Error::last_os_error());
    // SAFETY: plain syscalls on NUL-terminated strings prepared before the fork.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return err();
        }
        // Nothing we mount here may propagate back to the host.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return err();
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            stage.dir.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            c"mode=0755,size=64k".as_ptr().cast(),
        ) != 0
        {
            return err();
        }
        for (source, target) in &stage.binds {
            if libc::mkdir(target.as_ptr(), 0o755) != 0
                || libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
            {
                return err();
            }
        }
    }
    Ok(())
}

/// Kills what is left if the run future is dropped half way.
struct Guard {
    pgid: Option<i32>,
    cgroup: Option<RunCgroup>,
}

impl Guard {
    fn kill_now(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: plain syscall. The group leader is our child; see `execute` on reuse.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
        if let Some(cg) = &self.cgroup {
            cg.kill_once();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_now();
        // Dropping the cgroup kills the rest and removes it.
    }
}

pub(crate) async fn execute(
    launch: Launch,
    spec: &StepSpec,
    sink: &mut dyn LogSink,
) -> Result<StepOutcome, SandboxError> {
    let start = Instant::now();
    let Launch {
        program,
        args,
        env,
        cwd,
        inherit_fds,
        close_after_spawn,
        bwrap_status,
        rlimits,
        cgroup,
        drop_to,
        stage,
        network,
    } = launch;
    let bwrap_mode = bwrap_status.is_some();

    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so that the step's ordinary children can be killed as a group.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &cwd {
        cmd.current_dir(cwd);
    }
    let cg_fds = cgroup
        .as_ref()
        .map(RunCgroup::procs_fds)
        .unwrap_or_default();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (write, setrlimit, unshare, mount, mkdir, setres[ug]id, umask, fcntl) on values prepared
    // before the fork; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &cg_fds {
                // "0" means the writing process: join the run's cgroups before anything forks.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for limit in &rlimits {
                let (res, v) = match *limit {
                    Rlimit::FileSize(v) => (libc::RLIMIT_FSIZE, v),
                    Rlimit::Processes(v) => (libc::RLIMIT_NPROC, v),
                    Rlimit::AddressSpace(v) => (libc::RLIMIT_AS, v),
                    Rlimit::Cpu(v) => (libc::RLIMIT_CPU, v),
                    Rlimit::NoCore => (libc::RLIMIT_CORE, 0),
                };
                let r = libc::rlimit {
                    rlim_cur: v as libc::rlim_t,
                    rlim_max: v as libc::rlim_t,
                };
                if libc::setrlimit(res, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(stage) = &stage {
                stage_mounts(stage)?;
            }
            if let Some((uid, gid)) = drop_to {
                become_user(uid, gid)?;
            }
            libc::umask(0o022);
            for &fd in &inherit_fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        program: program.clone(),
        source,
    })?;
    // Our copies of the child's ends: close them, or EOF on the status pipe would never come.
    drop(close_after_spawn);
    let pid = child.id().map(|p| p as i32);
    let mut guard = Guard { pgid: pid, cgroup };
    // bwrap waits (--block-fd) until the step's network is attached.
    let _net = match network {
        Some(n) => Some(crate::net::attach(n).await?),
        None => None,
    };

    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut status_rx = match bwrap_status {
        Some(fd) => Some(
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| SandboxError::io("reading bwrap status", e))?,
        ),
        None => None,
    };

    let limits = &spec.limits;
    let mut gate = LogGate::new(
        sink,
        Redactor::new(spec.secrets.values()),
        limits.max_line_bytes,
        limits.max_log_bytes,
    );
    let mut split_out = LineSplitter::new(limits.max_line_bytes, gate.longest_secret());
    let mut split_err = LineSplitter::new(limits.max_line_bytes, gate.longest_secret());
    // Last stderr lines, for the error message if bwrap fails before the step starts.
    let mut err_tail: VecDeque<String> = VecDeque::new();
    let mut status_buf: Vec<u8> = Vec::new();

    let mut buf_out = vec![0u8; 64 << 10];
    let mut buf_err = vec![0u8; 64 << 10];
    let mut buf_status = [0u8; 4096];
    let (mut out_open, mut err_open) = (true, true);
    let mut status_open = status_rx.is_some();
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut exit: Option<ExitStatus> = None;
    let mut timed_out = false;

    loop {
        if exit.is_some() && !out_open && !err_open && !status_open {
            break;
        }
        tokio::select! {
            r = read(&mut stdout, &mut buf_out), if out_open => match r {
                // Past the cap, only count: no point splitting lines nobody will see.
                Some(n) if gate.truncated => gate.dropped += n as u64,
                Some(n) => split_out.push(&buf_out[..n], &mut |l| gate.emit(Stream::Stdout, l)),
                None => {
                    out_open = false;
                    split_out.finish(&mut |l| gate.emit(Stream::Stdout, l));
                }
            },
            r = read(&mut stderr, &mut buf_err), if err_open => {
                let truncated = gate.truncated;
                let mut on_line = |l: RawLine<'_>| {
                    if !l.bytes.is_empty() {
                        if err_tail.len() == 5 {
                            err_tail.pop_front();
                        }
                        let t = String::from_utf8_lossy(&l.bytes[..l.bytes.len().min(500)]);
                        err_tail.push_back(t.into_owned());
                    }
                    gate.emit(Stream::Stderr, l)
                };
                match r {
                    Some(n) if truncated => gate.dropped += n as u64,
                    Some(n) => split_err.push(&buf_err[..n], &mut on_line),
                    None => {
                        err_open = false;
                        split_err.finish(&mut on_line);
                    }
                }
            },
            r = read_opt(&mut status_rx, &mut buf_status), if status_open => match r {
                Some(n) if status_buf.len() < 64 << 10 => status_buf.extend_from_slice(&buf_status[..n]),
                Some(_) => {}
                None => status_open = false,
            },
            r = child.wait(), if exit.is_none() => {
                exit = Some(r.map_err(|e| SandboxError::io("waiting for the step", e))?);
                // The step's shell is done: anything it left running in the background goes
                // too. (The group leader was just reaped; its pgid cannot be reused while
                // members remain, and reuse of an empty group's id within microseconds would
                // need a full pid wrap-around.)
                guard.kill_now();
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
            },
            _ = tokio::time::sleep_until(deadline), if exit.is_none() && !timed_out => {
                timed_out = true;
                // SIGKILL at once: a build has no state worth a graceful stop, and a step that
                // traps SIGTERM must not extend its own deadline. Killing bwrap kills the
                // sandbox's pid 1 (--die-with-parent), which takes the whole pid namespace.
                let _ = child.start_kill();
                guard.kill_now();
            },
            _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => {
                gate.system("output pipes still open after the step ended; stopped reading".into());
                break;
            },
        }
    }
    drop((stdout, stderr, status_rx));
    let exit = match exit {
        Some(e) => e,
        None => child
            .wait()
            .await
            .map_err(|e| SandboxError::io("waiting for the step", e))?,
    };

    let (process_limit_hit, memory_limit_hit, cpu_throttled) =
        guard.cgroup.as_ref().map_or((false, false, false), |c| {
            (
                c.process_limit_hit(),
                c.memory_limit_hit(),
                c.cpu_throttled(),
            )
        });
    let disk_limit_hit = disk_full(&spec.work_dir);
    // Kill whatever is left and remove the cgroups; this can sleep briefly, so off the runtime.
    guard.pgid = None;
    let cg = guard.cgroup.take();
    let _ = tokio::task::spawn_blocking(move || drop(cg)).await;

    let (exit_code, signal) = if bwrap_mode {
        match bwrap_exit_code(&status_buf) {
            Some(code) => (Some(code), exit.signal()),
            None if timed_out => (None, exit.signal()),
            None => {
                let reason = if err_tail.is_empty() {
                    format!("bwrap exited with {exit} before starting the step")
                } else {
                    Vec::from(err_tail).join("; ")
                };
                return Err(SandboxError::Setup {
                    reason: gate.redact(&reason),
                });
            }
        }
    } else {
        (exit.code(), exit.signal())
    };

    if timed_out {
        gate.system(format!(
            "step timed out after {:?}; all its processes were killed",
            spec.timeout
        ));
    }
    if process_limit_hit {
        gate.system(format!(
            "process limit reached ({} processes); forks were refused",
            limits.max_processes
        ));
    }
    if memory_limit_hit {
        gate.system(format!(
            "memory limit reached ({} bytes); the OOM killer ran",
            limits.max_memory_bytes
        ));
    }
    if disk_limit_hit {
        gate.system("disk limit reached: the work dir's file system is full; writes failed".into());
    }
    if gate.truncated {
        gate.system(format!(
            "log truncated: {} bytes dropped after the {} byte limit",
            gate.dropped, limits.max_log_bytes
        ));
    }
    Ok(StepOutcome {
        exit_code,
        signal,
        timed_out,
        duration: start.elapsed(),
        log_truncated: gate.truncated,
        log_bytes: gate.used,
        log_dropped_bytes: gate.dropped,
        process_limit_hit,
        memory_limit_hit,
        cpu_throttled,
        disk_limit_hit,
    })
}

/// Whether the file system holding `dir` has less than 1 MiB left for unprivileged writers.
fn disk_full(dir: &std::path::Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statvfs is a valid out-parameter; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    (st.f_bavail as u128) * (st.f_frsize as u128) < (1 << 20)
}

/// The `exit-code` record bwrap writes once the sandboxed command has exited.
fn bwrap_exit_code(buf: &[u8]) -> Option<i32> {
    String::from_utf8_lossy(buf)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("exit-code").and_then(|c| c.as_i64()))
        .map(|c| c as i32)
}

/// One read; `None` at EOF or on error (a broken pipe ends the stream either way).
async fn read<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Option<usize> {
    match r.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

async fn read_opt<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match r {
        Some(r) => read(r, buf).await,
        None => None,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
