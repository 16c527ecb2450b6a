//! Per-run control groups: the process and memory caps that actually hold.
//!
//! Why not just rlimits: `RLIMIT_NPROC` is checked against the *real* user, and the kernel skips
//! the check entirely for root (`INIT_USER`) and for holders of `CAP_SYS_RESOURCE`. bwrap maps
//! the sandbox uid onto the invoking uid, so when the DVM runs as root a fork bomb inside the
//! sandbox is not limited by `RLIMIT_NPROC` at all (measured here: 100 background processes
//! under `prlimit --nproc=20`, with and without `--uid 1000`). A pids cgroup counts every task
//! in the group whoever owns it, so we create one per run, write `pids.max` (and a memory
//! limit), and move the child into it between `fork` and `exec`, before it can fork anything.
//! The same group lets us kill every process of the step, even ones that escaped the process
//! group or session.
//!
//! Both cgroup v1 (a `pids`/`memory` hierarchy, as on this builder) and a v2 hierarchy with the
//! controllers delegated to our cgroup are supported. Where neither is writable (an
//! unprivileged DVM without delegation), the caller falls back to rlimits, which do work for
//! non-root users, and [`SandboxInfo::notes`](crate::SandboxInfo) says so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{ResourceLimits, SandboxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pids,
    Memory,
    Cpu,
}

#[derive(Debug, Clone)]
pub(crate) struct Controller {
    kind: Kind,
    /// Our own cgroup in this hierarchy; run groups are created below it.
    base: PathBuf,
    v2: bool,
}

/// Which hierarchies we can create run groups in, found once at backend construction.
#[derive(Debug, Clone, Default)]
pub(crate) struct CgroupPlan {
    controllers: Vec<Controller>,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The CFS period for the CPU cap (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Quota per period; at least 1 ms, the kernel's minimum.
fn cpu_quota_us(limits: &ResourceLimits) -> u64 {
    (limits.cpu_millicores * CPU_PERIOD_US / 1000).max(1000)
}

impl CgroupPlan {
    /// Probe: find our cgroups and check that a child group can be made with the right files.
    /// Returns the plan and one note per controller that is not available.
    pub(crate) fn detect() -> (CgroupPlan, Vec<String>) {
        let mut notes = Vec::new();
        let mut plan = CgroupPlan::default();
        for (_, found) in probe_all() {
            match found {
                Ok(c) => plan.controllers.push(c),
                Err(why) => notes.push(why),
            }
        }
        (plan, notes)
    }

    pub(crate) fn has_pids(&self) -> bool {
        self.controllers.iter().any(|c| c.kind == Kind::Pids)
    }

    pub(crate) fn has_memory(&self) -> bool {
        self.controllers.iter().any(|c| c.kind == Kind::Memory)
    }

    pub(crate) fn has_cpu(&self) -> bool {
        self.controllers.iter().any(|c| c.kind == Kind::Cpu)
    }

    /// Create the groups for one run and set their limits.
    pub(crate) fn create(&self, limits: &ResourceLimits) -> Result<RunCgroup, SandboxError> {
        let name = format!(
            "quorum-sandbox-{}-{}",
            std::process::id(),
            RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut run = RunCgroup {
            groups: Vec::new(),
            procs: Vec::new(),
        };
        for c in &self.controllers {
            let dir = c.base.join(&name);
            if dir.exists() {
                // Left over by a previous process with our pid that crashed: clean it.
                let stale = RunCgroup {
                    groups: vec![(c.clone(), dir.clone())],
                    procs: Vec::new(),
                };
                drop(stale);
            }
            fs::create_dir(&dir).map_err(|e| cg_err(&dir, e))?;
            run.groups.push((c.clone(), dir.clone()));
            match (c.kind, c.v2) {
                (Kind::Pids, _) => write(&dir.join("pids.max"), &limits.max_processes.to_string())?,
                (Kind::Memory, true) => {
                    write(
                        &dir.join("memory.max"),
                        &limits.max_memory_bytes.to_string(),
                    )?;
                    // No swap either, or the limit only slows the step down.
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                (Kind::Memory, false) => {
                    let bytes = limits.max_memory_bytes.to_string();
                    write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes)?;
                    }
                }
                // CPU time per period: `cpu_millicores` 1000 is one core's worth, however many
                // threads the step runs; the rest of the machine (the DVM, other jobs) keeps
                // the remainder.
                (Kind::Cpu, true) => write(
                    &dir.join("cpu.max"),
                    &format!("{} {CPU_PERIOD_US}", cpu_quota_us(limits)),
                )?,
                (Kind::Cpu, false) => {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(
                        &dir.join("cpu.cfs_quota_us"),
                        &cpu_quota_us(limits).to_string(),
                    )?;
                }
            }
            let procs = dir.join("cgroup.procs");
            let f = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| cg_err(&procs, e))?;
            run.procs.push(f);
        }
        Ok(run)
    }
}

/// Each controller we cap with (pids, memory, cpu, by name), found and tried: a trial child
/// group is made and removed. Shared by [`CgroupPlan::detect`] and [`crate::probe`].
pub(crate) fn probe_all() -> Vec<(&'static str, Result<Controller, String>)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    [Kind::Pids, Kind::Memory, Kind::Cpu]
        .into_iter()
        .map(|kind| {
            (
                kind_name(kind),
                find(kind, &mountinfo, &own).and_then(probe),
            )
        })
        .collect()
}

/// The groups of one run. Dropping it kills whatever is still inside and removes the groups.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    groups: Vec<(Controller, PathBuf)>,
    /// `cgroup.procs` of each group, opened before fork: the child writes "0" to each (which
    /// means "me") in `pre_exec`, where allocating or opening paths is not allowed.
    procs: Vec<File>,
}

impl RunCgroup {
    pub(crate) fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Whether a fork was refused for hitting `pids.max`.
    pub(crate) fn process_limit_hit(&self) -> bool {
        self.group(Kind::Pids)
            .is_some_and(|d| counter(&d.join("pids.events"), "max") > 0)
    }

    /// Whether the CPU cap held the step back at least once (`nr_throttled` > 0).
    pub(crate) fn cpu_throttled(&self) -> bool {
        self.group(Kind::Cpu)
            .is_some_and(|d| counter(&d.join("cpu.stat"), "nr_throttled") > 0)
    }

    /// Whether the OOM killer ran in the group.
    pub(crate) fn memory_limit_hit(&self) -> bool {
        self.groups.iter().any(|(c, d)| {
            c.kind == Kind::Memory && {
                let file = if c.v2 {
                    "memory.events"
                } else {
                    "memory.oom_control"
                };
                counter(&d.join(file), "oom_kill") > 0
            }
        })
    }

    fn group(&self, kind: Kind) -> Option<&Path> {
        self.groups
            .iter()
            .find(|(c, _)| c.kind == kind)
            .map(|(_, d)| d.as_path())
    }

    /// One pass of SIGKILL over everything in the groups, without waiting.
    pub(crate) fn kill_once(&self) {
        for (c, dir) in &self.groups {
            if c.v2 {
                // One write kills the whole subtree atomically (kernel 5.14+).
                let _ = fs::write(dir.join("cgroup.kill"), "1");
            }
            for pid in pids_in(dir) {
                // SAFETY: plain syscall; the pid is in our run group, so it is the step's.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// SIGKILL everything in the groups until they are empty (bounded wait).
    pub(crate) fn kill_all(&self) {
        self.kill_once();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut any = false;
            for (_, dir) in &self.groups {
                for pid in pids_in(dir) {
                    any = true;
                    // SAFETY: plain syscall; the pid is in our run group, so it is the step's.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if !any || Instant::now() > deadline {
                if any {
                    tracing::error!("processes of a build step survived SIGKILL for 5 s");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        self.kill_all();
        for (_, dir) in &self.groups {
            // rmdir can fail with EBUSY for a moment after the last task exits.
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn counter(file: &Path, key: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| cg_err(path, e))?;
    f.write_all(value.as_bytes()).map_err(|e| cg_err(path, e))
}

fn cg_err(path: &Path, source: io::Error) -> SandboxError {
    SandboxError::Cgroup {
        path: path.to_owned(),
        source,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Pids => "pids",
        Kind::Memory => "memory",
        Kind::Cpu => "cpu",
    }
}

/// Locate our cgroup for `kind`: a v1 hierarchy mounted with that controller, else the v2
/// hierarchy if the controller is available in it.
fn find(kind: Kind, mountinfo: &str, own: &str) -> Result<Controller, String> {
    let name = kind_name(kind);
    let mut v2_mount: Option<(PathBuf, String)> = None;
    for line in mountinfo.lines() {
        // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, mountpoint) = (unescape(l[3]), PathBuf::from(unescape(l[4])));
        match r[0] {
            "cgroup" if r[2].split(',').any(|o| o == name) => {
                let path = own
                    .lines()
                    .filter_map(|l| {
                        // hierarchy-id:controllers:path (the path may contain ':')
                        let mut it = l.splitn(3, ':');
                        let _id = it.next()?;
                        Some((it.next()?, it.next()?))
                    })
                    .find(|(ctrls, _)| ctrls.split(',').any(|c| c == name))
                    .map(|(_, p)| p.to_owned())
                    .ok_or_else(|| format!("{name} cgroup: not listed in /proc/self/cgroup"))?;
                return Ok(Controller {
                    kind,
                    base: join_rel(&mountpoint, &root, &path),
                    v2: false,
                });
            }
            "cgroup2" => v2_mount = Some((mountpoint, root)),
            _ => {}
        }
    }
    let (mountpoint, root) =
        v2_mount.ok_or_else(|| format!("{name} cgroup: no cgroup hierarchy mounted"))?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("{name} cgroup: no v2 entry in /proc/self/cgroup"))?;
    let base = join_rel(&mountpoint, &root, path);
    let available = fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == name) {
        return Err(format!(
            "{name} cgroup: controller not available in {} (not delegated)",
            base.display()
        ));
    }
    Ok(Controller {
        kind,
        base,
        v2: true,
    })
}

fn join_rel(mountpoint: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    mountpoint.join(rel.trim_start_matches('/'))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Make and remove a trial child group, enabling the controller for children on v2 if needed.
/// Returns the controller with the base its run groups go under.
fn probe(mut c: Controller) -> Result<Controller, String> {
    let name = kind_name(c.kind);
    let file = match (c.kind, c.v2) {
        (Kind::Pids, _) => "pids.max",
        (Kind::Memory, true) => "memory.max",
        (Kind::Memory, false) => "memory.limit_in_bytes",
        (Kind::Cpu, true) => "cpu.max",
        (Kind::Cpu, false) => "cpu.cfs_quota_us",
    };
    if c.v2 && !enabled_for_children(&c.base, name) {
        let ctl = c.base.join("cgroup.subtree_control");
        if let Err(e) = fs::write(&ctl, format!("+{name}")) {
            // EBUSY: our cgroup holds processes ("no internal processes" rule). A supervisor
            // that moved its processes into a leaf and enabled the controller one level up
            // (what `scripts/test` does on a bare cgroup v2 machine, and the usual shape of a
            // systemd `Delegate=yes` service) lets run groups be siblings of that leaf.
            match c.base.parent() {
                Some(parent) if enabled_for_children(parent, name) => {
                    c.base = parent.to_owned();
                }
                _ => {
                    return Err(format!(
                        "{name} cgroup: cannot enable it in {}: {e}; delegate a cgroup subtree \
                         to the DVM",
                        ctl.display()
                    ));
                }
            }
        }
    }
    let dir = c.base.join(format!("quorum-probe-{}", std::process::id()));
    let _ = fs::remove_dir(&dir);
    fs::create_dir(&dir).map_err(|e| {
        format!(
            "{name} cgroup: cannot create a group under {}: {e}",
            c.base.display()
        )
    })?;
    let ok = dir.join(file).exists();
    let _ = fs::remove_dir(&dir);
    if ok {
        Ok(c)
    } else {
        Err(format!(
            "{name} cgroup: {file} missing in a new group under {}",
            c.base.display()
        ))
    }
}

/// Whether a v2 cgroup passes `controller` on to its children.
fn enabled_for_children(dir: &Path, controller: &str) -> bool {
    fs::read_to_string(dir.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|x| x == controller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/pids rw,relatime shared:1 - cgroup cgroup rw,pids\n\
                  31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let own = "8:pids:/a/b\n0::/c\n";
        let c = find(Kind::Pids, mi, own).unwrap();
        assert_eq!(c.base, PathBuf::from("/sys/fs/cgroup/pids/a/b"));
        assert!(!c.v2);
        assert_eq!(unescape("a\\040b"), "a b");
    }
}
