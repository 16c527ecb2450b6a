//! What the sandbox needs from this machine, one question at a time, for operator checks
//! (`quorum doctor`, a runner's start-up).
//!
//! [`Bubblewrap::detect`](crate::Bubblewrap::detect) answers "can a step run here?" as a whole
//! and stops at the first missing piece. These probes ask the same questions separately, with
//! the very code the backend uses (how bwrap is found, the build user looked up, the cgroup
//! trial groups, the `/dev/net/tun` rule), so that a report can name every missing piece at
//! once without a second implementation that could disagree with the backend.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The bwrap binary [`Bubblewrap::detect`](crate::Bubblewrap::detect) would use: on `PATH`,
/// else `/usr/bin/bwrap`.
pub fn bwrap() -> Option<PathBuf> {
    crate::bwrap::find_bwrap()
}

/// Whether this process is root (then steps run as [`BUILD_USER`](crate::bwrap::BUILD_USER)).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `user` (the build user), if it exists.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    crate::bwrap::lookup_user(user)
}

/// A program on `PATH` or in the usual system directories, as the sandbox looks for its
/// helpers (`pasta`, `nsenter`, `ip`).
pub fn tool(name: &str) -> Option<PathBuf> {
    crate::net::which(name)
}

/// Exit code of the trial child when it could not become the build user (so that this is not
/// mistaken for the kernel refusing the namespace).
const CANNOT_SWITCH: i32 = 125;

/// Create a user namespace in a child process, as `as_user` (uid, gid) when given: what bwrap
/// does first. `Err` carries the kernel's answer (typically `EPERM` when unprivileged user
/// namespaces are disabled, `ENOSPC` when `user.max_user_namespaces` is 0).
pub fn user_namespaces(as_user: Option<(u32, u32)>) -> Result<(), std::io::Error> {
    let program = tool("true").unwrap_or_else(|| PathBuf::from("/bin/true"));
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe syscalls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = as_user
                && crate::exec::become_user(uid, gid).is_err()
            {
                libc::_exit(CANNOT_SWITCH);
            }
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // A failing pre_exec makes spawn return its error, so the kernel's answer comes back here.
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else if status.code() == Some(CANNOT_SWITCH)
        && let Some((uid, gid)) = as_user
    {
        Err(std::io::Error::other(format!(
            "this process cannot switch to uid {uid}, gid {gid} (not really root?)"
        )))
    } else {
        Err(std::io::Error::other(format!(
            "the trial process in a new user namespace ended with {status}"
        )))
    }
}

/// One cgroup controller the sandbox caps steps with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// `pids`, `memory` or `cpu`.
    pub name: &'static str,
    /// `Ok` if a run group with this controller can be made here; else why not.
    pub usable: Result<(), String>,
}

/// The pids, memory and cpu controllers, each tried as the backend tries them (a trial child
/// group is created and removed).
pub fn cgroup_controllers() -> Vec<Controller> {
    crate::cgroup::probe_all()
        .into_iter()
        .map(|(name, found)| Controller {
            name,
            usable: found.map(|_| ()),
        })
        .collect()
}

/// Whether pasta can open `/dev/net/tun`; `unprivileged` when pasta will not run as root (a
/// non-root DVM, or a root DVM's build user).
pub fn tun(unprivileged: bool) -> Result<(), String> {
    crate::net::tun_usable(unprivileged)
}
