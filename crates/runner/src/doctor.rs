//! The operator's checks of a machine that runs build steps: what `quorum doctor` prints and
//! what `quorum dvm runner` checks before it starts.
//!
//! Each [`Check`] has a stable name, a [`Status`], one line of detail and, when something is
//! wrong, the command that fixes it. The machine checks ([`check_machine`]) ask the sandbox
//! crate's own probes ([`quorum_sandbox::probe`]) and run a real trial step through
//! [`Bubblewrap::detect_at`], so that a green report means what the runner will find:
//!
//! | name | what |
//! |---|---|
//! | `bubblewrap` | bwrap found where the sandbox looks, and a trial step ran in it |
//! | `build-user` | as root: the unprivileged build user steps run as exists (skipped otherwise) |
//! | `user-namespaces` | a user namespace can be made as the user bwrap runs as |
//! | `cgroups` | the pids, memory and cpu controllers can hold a run group |
//! | `pasta` | pasta, nsenter and ip for steps with network (and the trial step with network) |
//! | `tun` | `/dev/net/tun` usable by an unprivileged pasta |
//! | `git` | git runs, and its version |
//! | `disk` | free space on the file system of the data directory |
//! | `relay` | each `--relay` answers its NIP-11 document over HTTP within the timeout |
//! | `clock` | this clock against each reachable relay's |
//! | `blossom` | each `--blossom` server answers a blob lookup within the timeout |
//!
//! The clock is compared with the HTTP `Date` header of the relay's NIP-11 answer, taken at
//! the midpoint of the round trip. That header is the server's own clock (a second's
//! resolution), unlike the `created_at` of stored events, which is whatever their authors'
//! clocks said. Nothing is published.
//!
//! A check that fails what a runner truly needs is [`Status::Fail`]; one that only narrows
//! what it can offer (no cgroup limits, no network for steps) is [`Status::Warn`]. What is
//! needed depends on how the runner is set up ([`Needs`]): without a sandbox, bubblewrap is a
//! warning; with `--allow-network`, pasta and the tun device are failures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use quorum_sandbox::bwrap::BUILD_USER;
use quorum_sandbox::{Bubblewrap, Sandbox, probe};
use serde::Serialize;

/// Check names, stable for scripts reading `--json`.
pub const BUBBLEWRAP: &str = "bubblewrap";
pub const BUILD_USER_CHECK: &str = "build-user";
pub const USER_NAMESPACES: &str = "user-namespaces";
pub const CGROUPS: &str = "cgroups";
pub const PASTA: &str = "pasta";
pub const TUN: &str = "tun";
pub const GIT: &str = "git";
pub const DISK: &str = "disk";
pub const RELAY: &str = "relay";
pub const CLOCK: &str = "clock";
pub const BLOSSOM: &str = "blossom";
/// Only if the machine checks themselves crashed (a bug): reported, not hidden.
pub const MACHINE: &str = "machine";

/// Below this much free space on the data directory's file system: a warning (one large
/// checkout with its build output can take that).
pub const DISK_WARN_BYTES: u64 = 2 << 30;
/// Below this: a failure, since a job's checkout, log and packed artifacts would not fit.
pub const DISK_FAIL_BYTES: u64 = 256 << 20;

/// Clock difference (seconds) up to which nothing is said; the measurement itself is only good
/// to about a second.
pub const SKEW_WARN_SECS: f64 = 10.0;
/// Beyond this the runner's uploads fail: Blossom servers refuse upload tokens dated more
/// than 30 s ahead (`quorum_proto::blossom::DEFAULT_CLOCK_SKEW_SECS`), and requests a slow
/// clock sees as from the future are ignored.
pub const SKEW_FAIL_SECS: f64 = 30.0;

/// How long each relay or Blossom server gets to answer.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes of a NIP-11 document read (real ones are a few KiB).
const MAX_NIP11_BYTES: usize = 64 << 10;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but with less than the runner could offer (or a risk the operator should know).
    Warn,
    /// Something runs need is missing.
    Fail,
    /// Not applicable here (e.g. the build user when not root), or nothing to check.
    Skipped,
}

impl Status {
    /// A short lowercase word, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// One of the names above ([`BUBBLEWRAP`], [`RELAY`], …).
    pub name: &'static str,
    /// What was checked when a name is checked several times: the relay or Blossom URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub status: Status,
    /// One line: what was found.
    pub detail: String,
    /// For a warning or failure: the command (or the one step) that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name,
            target: None,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail)
    }

    fn skipped(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Skipped, detail)
    }

    /// A problem: a failure if `needed`, else a warning.
    fn problem(
        name: &'static str,
        needed: bool,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        let status = if needed { Status::Fail } else { Status::Warn };
        Self::new(name, status, detail).with_fix(fix)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// `target` is a URL as given, except that a password in it is masked: reports are
    /// printed and logged.
    fn with_target(mut self, target: &str) -> Self {
        let masked = url::Url::parse(target).ok().and_then(|mut url| {
            url.password().is_some().then(|| {
                let _ = url.set_password(Some("***"));
                url.to_string()
            })
        });
        self.target = Some(masked.unwrap_or_else(|| target.to_owned()));
        self
    }

    /// The name, with the target if there is one (`relay ws://…`).
    pub fn label(&self) -> String {
        match &self.target {
            Some(target) => format!("{} {target}", self.name),
            None => self.name.to_owned(),
        }
    }
}

/// Every check of one run, and whether none failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No check failed (warnings do not count).
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Self {
        Report {
            ok: !checks.iter().any(|c| c.status == Status::Fail),
            checks,
        }
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

/// What the runner being checked needs, which decides whether a missing piece fails or warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Steps run under bubblewrap (everything but `--unsandboxed`).
    pub sandbox: bool,
    /// Steps may ask for network (`--allow-network`).
    pub network: bool,
}

impl Default for Needs {
    /// A sandboxed runner that gives steps no network, the default `quorum dvm runner`.
    fn default() -> Self {
        Needs {
            sandbox: true,
            network: false,
        }
    }
}

/// What [`run`] checks.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where runs keep their data (work dirs); its file system's free space is checked.
    pub data: PathBuf,
    /// Relay URLs (`ws://`, `wss://`) to reach and compare clocks with.
    pub relays: Vec<String>,
    /// Blossom server URLs to reach.
    pub blossom: Vec<String>,
    pub needs: Needs,
    /// Per relay or server.
    pub timeout: Duration,
}

/// All checks: the machine's (on a blocking thread) and the endpoints', at the same time.
pub async fn run(options: &Options) -> Report {
    let (data, needs) = (options.data.clone(), options.needs);
    let machine = tokio::task::spawn_blocking(move || check_machine(&data, needs));
    let endpoints = check_endpoints(&options.relays, &options.blossom, options.timeout);
    let (machine, endpoints) = tokio::join!(machine, endpoints);
    let mut checks = match machine {
        Ok(machine) => machine.checks,
        Err(err) => vec![Check::new(
            MACHINE,
            Status::Fail,
            format!("the machine checks crashed: {err}"),
        )],
    };
    checks.extend(endpoints);
    Report::new(checks)
}

/// The machine checks and, when the trial step ran, the sandbox they found, so that a runner
/// can use it without probing again.
pub struct Machine {
    pub checks: Vec<Check>,
    pub bubblewrap: Option<Bubblewrap>,
}

/// Everything about this machine, in table order (see the module docs). Blocking: it runs
/// trial sandboxes, `git --version` and cgroup trials, some tens of milliseconds in all.
pub fn check_machine(data: &Path, needs: Needs) -> Machine {
    let root = probe::is_root();
    let mut checks = Vec::new();

    // Who bwrap runs as: this user, or as root the build user.
    let build_user = if root {
        match probe::user_ids(BUILD_USER) {
            Some((uid, gid)) if uid != 0 && gid != 0 => {
                checks.push(Check::ok(
                    BUILD_USER_CHECK,
                    format!("running as root; steps run as {BUILD_USER} (uid {uid}, gid {gid})"),
                ));
                Some((uid, gid))
            }
            Some(_) => {
                checks.push(Check::problem(
                    BUILD_USER_CHECK,
                    needs.sandbox,
                    format!(
                        "the build user {BUILD_USER} has uid or gid 0; it must be unprivileged"
                    ),
                    format!("userdel {BUILD_USER} && {}", useradd()),
                ));
                None
            }
            None => {
                checks.push(Check::problem(
                    BUILD_USER_CHECK,
                    needs.sandbox,
                    format!(
                        "running as root, and the build user {BUILD_USER} does not exist: the \
                         sandbox never runs steps as host root"
                    ),
                    useradd(),
                ));
                None
            }
        }
    } else {
        checks.push(Check::skipped(
            BUILD_USER_CHECK,
            format!(
                "not root: steps run as this user (uid {})",
                rustix::process::geteuid().as_raw()
            ),
        ));
        None
    };

    let userns = if root && build_user.is_none() {
        Check::skipped(
            USER_NAMESPACES,
            format!("not tried: bwrap would run as {BUILD_USER}, who is missing"),
        )
    } else {
        let who = match build_user {
            Some((uid, _)) => format!("{BUILD_USER} (uid {uid})"),
            None => format!("uid {}", rustix::process::geteuid().as_raw()),
        };
        match probe::user_namespaces(build_user) {
            Ok(()) => Check::ok(
                USER_NAMESPACES,
                format!("{who} can create a user namespace"),
            ),
            Err(err) => Check::problem(
                USER_NAMESPACES,
                needs.sandbox,
                format!("{who} cannot create a user namespace: {err}"),
                userns_fix(&UsernsSysctls::read()),
            ),
        }
    };

    let (bwrap_check, bubblewrap) = check_bubblewrap(needs, root, build_user, &userns);
    checks.insert(0, bwrap_check);
    checks.push(userns);
    checks.push(check_cgroups());
    checks.push(check_pasta(needs, bubblewrap.as_ref()));
    checks.push(check_tun(needs, !root || build_user.is_some()));
    checks.push(check_git());
    checks.push(check_disk(data));
    Machine { checks, bubblewrap }
}

fn useradd() -> String {
    format!(
        "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
         {BUILD_USER}"
    )
}

fn check_bubblewrap(
    needs: Needs,
    root: bool,
    build_user: Option<(u32, u32)>,
    userns: &Check,
) -> (Check, Option<Bubblewrap>) {
    let Some(path) = probe::bwrap() else {
        let check = Check::problem(
            BUBBLEWRAP,
            needs.sandbox,
            "bwrap not found on PATH nor in /usr/bin",
            "apt-get install bubblewrap (Fedora: dnf install bubblewrap)",
        );
        return (check, None);
    };
    match Bubblewrap::detect_at(&path) {
        Ok(bwrap) => {
            let check = Check::ok(
                BUBBLEWRAP,
                format!(
                    "bubblewrap {} at {}: a trial step ran in the sandbox",
                    bwrap.describe().version,
                    path.display()
                ),
            );
            (check, Some(bwrap))
        }
        Err(err) => {
            // The most likely cause first: the pieces checked on their own below.
            let fix = if root && build_user.is_none() {
                useradd()
            } else if userns.status != Status::Ok {
                userns.fix.clone().unwrap_or_default()
            } else if err.to_string().contains("0.5 or newer") {
                "apt-get install --only-upgrade bubblewrap".into()
            } else {
                format!(
                    "{} --unshare-all --ro-bind / / true   # shows bwrap's own error",
                    path.display()
                )
            };
            (
                Check::problem(BUBBLEWRAP, needs.sandbox, err.to_string(), fix),
                None,
            )
        }
    }
}

fn check_cgroups() -> Check {
    let controllers = probe::cgroup_controllers();
    let missing: Vec<String> = controllers
        .iter()
        .filter_map(|c| c.usable.as_ref().err().cloned())
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = controllers.iter().map(|c| c.name).collect();
        return Check::ok(
            CGROUPS,
            format!("{} usable: steps get per-run limits", names.join(", ")),
        );
    }
    // Steps still run; the limits fall back to rlimits (see quorum_sandbox::bwrap).
    Check::problem(
        CGROUPS,
        false,
        format!("limits fall back to rlimits: {}", missing.join("; ")),
        "run the DVM with a delegated cgroup, e.g. systemd-run --scope -p Delegate=yes -- \
         quorum dvm runner …",
    )
}

fn check_pasta(needs: Needs, bubblewrap: Option<&Bubblewrap>) -> Check {
    let needed = needs.sandbox && needs.network;
    let tools = [
        ("pasta", "passt"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ];
    let missing: Vec<(&str, &str)> = tools
        .into_iter()
        .filter(|(tool, _)| probe::tool(tool).is_none())
        .collect();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(tool, _)| *tool).collect();
        let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
        return Check::problem(
            PASTA,
            needed,
            format!(
                "{} not found: steps cannot have network (`network: true`)",
                names.join(", ")
            ),
            format!("apt-get install {}", packages.join(" ")),
        );
    }
    let pasta = probe::tool("pasta").unwrap_or_default();
    match bubblewrap {
        Some(bwrap) if !bwrap.network_available() => Check::problem(
            PASTA,
            needed,
            format!(
                "a trial step with network failed: {}",
                bwrap
                    .network_unavailable_reason()
                    .unwrap_or("no reason given")
            ),
            format!(
                "{} --version && ls -l /dev/net/tun   # then fix what the trial reports",
                pasta.display()
            ),
        ),
        Some(_) => Check::ok(
            PASTA,
            format!(
                "{}: a trial step with network of its own ran",
                pasta.display()
            ),
        ),
        None => Check::ok(
            PASTA,
            format!(
                "{}, nsenter and ip found (not tried: no sandbox)",
                pasta.display()
            ),
        ),
    }
}

fn check_tun(needs: Needs, unprivileged: bool) -> Check {
    match probe::tun(unprivileged) {
        Ok(()) => Check::ok(TUN, "/dev/net/tun is usable by pasta"),
        Err(why) => {
            let fix = if why.contains("mode") {
                "chmod 0666 /dev/net/tun"
            } else {
                "modprobe tun (in a container: pass the device, e.g. docker run --device \
                 /dev/net/tun)"
            };
            Check::problem(TUN, needs.sandbox && needs.network, why, fix)
        }
    }
}

fn check_git() -> Check {
    // The runner runs `git` from PATH (see `git.rs`), so this does too.
    match std::process::Command::new("git").arg("--version").output() {
        Ok(out) if out.status.success() => {
            Check::ok(GIT, String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => Check::problem(
            GIT,
            true,
            format!(
                "git --version failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "apt-get install --reinstall git",
        ),
        Err(err) => Check::problem(
            GIT,
            true,
            format!("cannot run git: {err}"),
            "apt-get install git",
        ),
    }
}

fn check_disk(data: &Path) -> Check {
    // The data dir may not exist yet: its file system is that of its nearest existing parent.
    let absolute = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
    let Some(dir) = absolute.ancestors().find(|d| d.exists()) else {
        return Check::skipped(DISK, format!("{} does not exist", data.display()));
    };
    let free = match rustix::fs::statvfs(dir) {
        Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
        Err(err) => {
            return Check::problem(
                DISK,
                false,
                format!("cannot read the free space of {}: {err}", dir.display()),
                format!("df -h {}", dir.display()),
            );
        }
    };
    let detail = format!(
        "{} free on the file system of {}",
        human(free),
        dir.display()
    );
    match classify_disk(free) {
        Status::Ok => Check::ok(DISK, detail),
        status => Check::new(DISK, status, format!("only {detail}")).with_fix(format!(
            "free space there (du -xh {} | sort -h | tail shows what uses it) or use a --data \
             directory on a larger file system",
            dir.display()
        )),
    }
}

/// [`Status::Fail`] under [`DISK_FAIL_BYTES`] free, [`Status::Warn`] under
/// [`DISK_WARN_BYTES`], else [`Status::Ok`].
pub fn classify_disk(free_bytes: u64) -> Status {
    if free_bytes < DISK_FAIL_BYTES {
        Status::Fail
    } else if free_bytes < DISK_WARN_BYTES {
        Status::Warn
    } else {
        Status::Ok
    }
}

/// Bytes as people read them: `512 MiB`, `1.5 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The sysctls that decide whether unprivileged users may create user namespaces; `None`
/// where this kernel has no such knob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsernsSysctls {
    /// `kernel.unprivileged_userns_clone` (Debian and Ubuntu kernels).
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 24.04+).
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
}

impl UsernsSysctls {
    pub fn read() -> Self {
        let read = |name: &str| {
            std::fs::read_to_string(Path::new("/proc/sys").join(name))
                .ok()
                .and_then(|v| v.trim().parse().ok())
        };
        UsernsSysctls {
            unprivileged_userns_clone: read("kernel/unprivileged_userns_clone"),
            max_user_namespaces: read("user/max_user_namespaces"),
            apparmor_restrict_unprivileged_userns: read(
                "kernel/apparmor_restrict_unprivileged_userns",
            ),
        }
    }
}

/// The commands that let unprivileged users create user namespaces, given which knob is off;
/// with none off, what is left is a container's own policy.
pub fn userns_fix(sysctls: &UsernsSysctls) -> String {
    let mut commands = Vec::new();
    if sysctls.unprivileged_userns_clone == Some(0) {
        commands.push("sysctl -w kernel.unprivileged_userns_clone=1");
    }
    if sysctls.max_user_namespaces == Some(0) {
        commands.push("sysctl -w user.max_user_namespaces=15000");
    }
    if sysctls.apparmor_restrict_unprivileged_userns == Some(1) {
        commands.push("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0");
    }
    if commands.is_empty() {
        return "in a container, allow unshare(CLONE_NEWUSER): e.g. docker run --security-opt \
                seccomp=unconfined --security-opt apparmor=unconfined"
            .into();
    }
    commands.join(" && ")
}

/// [`Status::Ok`] within [`SKEW_WARN_SECS`] either way, [`Status::Warn`] within
/// [`SKEW_FAIL_SECS`], else [`Status::Fail`].
pub fn classify_skew(skew_secs: f64) -> Status {
    let off = skew_secs.abs();
    if off <= SKEW_WARN_SECS {
        Status::Ok
    } else if off <= SKEW_FAIL_SECS {
        Status::Warn
    } else {
        Status::Fail
    }
}

/// This clock minus the server's, in seconds, from a `Date` header (whole seconds, truncated)
/// received in a round trip that started at `sent` (this clock) and took `rtt`; and how far
/// off that estimate can be. The server wrote the header at some point of the round trip.
pub fn estimate_skew(sent: SystemTime, rtt: Duration, date: SystemTime) -> (f64, f64) {
    let secs = |t: SystemTime| match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let local = secs(sent) + rtt.as_secs_f64() / 2.0;
    let server = secs(date) + 0.5;
    (local - server, rtt.as_secs_f64() / 2.0 + 0.5)
}

/// Reachability of every relay (with a clock comparison each) and Blossom server, all at once,
/// each bounded by `timeout`. With none given, one skipped check per kind says so.
pub async fn check_endpoints(
    relays: &[String],
    blossom: &[String],
    timeout: Duration,
) -> Vec<Check> {
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect is an answer worth reporting, not following.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            return vec![Check::new(
                RELAY,
                Status::Fail,
                format!("cannot make an HTTP client: {err}"),
            )];
        }
    };
    let relay_checks =
        futures_util::future::join_all(relays.iter().map(|url| check_relay(&client, url, timeout)));
    let blossom_checks = futures_util::future::join_all(
        blossom
            .iter()
            .map(|url| check_blossom(&client, url, timeout)),
    );
    let (relay_checks, blossom_checks) = tokio::join!(relay_checks, blossom_checks);
    let mut checks = Vec::new();
    if relays.is_empty() {
        checks.push(Check::skipped(RELAY, "no --relay given"));
        checks.push(Check::skipped(CLOCK, "no --relay given to compare with"));
    }
    for (reach, clock) in relay_checks {
        checks.push(reach);
        checks.push(clock);
    }
    if blossom.is_empty() {
        checks.push(Check::skipped(BLOSSOM, "no --blossom given"));
    }
    checks.extend(blossom_checks);
    checks
}

/// The relay's NIP-11 document over HTTP: reachability, and its `Date` header for the clock.
async fn check_relay(client: &reqwest::Client, url: &str, timeout: Duration) -> (Check, Check) {
    let clock_skipped = |why: &str| Check::skipped(CLOCK, why).with_target(url);
    let http = match url::Url::parse(url) {
        Ok(mut parsed) if matches!(parsed.scheme(), "ws" | "wss") && parsed.has_host() => {
            let scheme = if parsed.scheme() == "ws" {
                "http"
            } else {
                "https"
            };
            // Infallible between these special schemes; keep the ws URL if it ever is not.
            let _ = parsed.set_scheme(scheme);
            parsed
        }
        _ => {
            let check = Check::new(RELAY, Status::Fail, "not a ws:// or wss:// URL")
                .with_target(url)
                .with_fix("give the relay as ws://HOST[:PORT] or wss://HOST");
            return (check, clock_skipped("not a relay URL"));
        }
    };
    let mut shown = http.clone();
    // The fix line is printed: no password of a URL in it.
    let _ = shown.set_password(None);
    let curl = format!("curl -sS -H 'Accept: application/nostr+json' {shown}");
    let sent = SystemTime::now();
    let started = Instant::now();
    let response = client
        .get(http.clone())
        .header(reqwest::header::ACCEPT, "application/nostr+json")
        .send()
        .await;
    let rtt = started.elapsed();
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            let check = Check::new(RELAY, Status::Fail, unreachable(&err, timeout))
                .with_target(url)
                .with_fix(format!("check the URL and that the relay runs: {curl}"));
            return (check, clock_skipped("relay unreachable"));
        }
    };
    let date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let status = response.status();
    let body = read_limited(response, MAX_NIP11_BYTES).await;
    let is_nip11 = status.is_success()
        && body.as_deref().is_some_and(|b| {
            serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| v.is_object())
        });
    let reach = if is_nip11 {
        Check::ok(
            RELAY,
            format!(
                "answered its NIP-11 document in {} ms",
                rtt.as_millis()
            ),
        )
    } else {
        Check::new(
            RELAY,
            Status::Warn,
            format!("reachable, but answered HTTP {status} without a NIP-11 document: is it a Nostr relay?"),
        )
        .with_fix(format!("check the URL: {curl}"))
    }
    .with_target(url);
    let clock = match date {
        Some(date) => clock_check(sent, rtt, date).with_target(url),
        None => clock_skipped("its answer had no Date header to compare with"),
    };
    (reach, clock)
}

fn clock_check(sent: SystemTime, rtt: Duration, date: SystemTime) -> Check {
    let (skew, error) = estimate_skew(sent, rtt, date);
    let direction = if skew >= 0.0 { "ahead of" } else { "behind" };
    let detail = format!(
        "this clock is {:.1} s {direction} the relay's (±{error:.1} s, from the Date header of \
         its NIP-11 answer)",
        skew.abs()
    );
    match classify_skew(skew) {
        Status::Ok => Check::ok(CLOCK, detail),
        status => Check::new(
            CLOCK,
            status,
            format!("{detail}; Blossom servers refuse upload tokens over {SKEW_FAIL_SECS} s ahead"),
        )
        .with_fix("timedatectl set-ntp true (or: chronyc makestep)"),
    }
}

/// A blob lookup (`HEAD /<sha256>` of an absent blob): a Blossom server answers 404.
async fn check_blossom(client: &reqwest::Client, url: &str, timeout: Duration) -> Check {
    let base = match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => parsed,
        _ => {
            return Check::new(BLOSSOM, Status::Fail, "not an http:// or https:// URL")
                .with_target(url)
                .with_fix("give the server as http://HOST[:PORT] or https://HOST");
        }
    };
    let mut shown = base.clone();
    // The fix line is printed: no password of a URL in it.
    let _ = shown.set_password(None);
    let lookup = format!("{}/{}", base.as_str().trim_end_matches('/'), "0".repeat(64));
    let curl = format!(
        "curl -sSI {}/{}",
        shown.as_str().trim_end_matches('/'),
        "0".repeat(64)
    );
    let started = Instant::now();
    match client.head(&lookup).send().await {
        Ok(response) if matches!(response.status().as_u16(), 200 | 404) => Check::ok(
            BLOSSOM,
            format!(
                "answered a blob lookup (HTTP {}) in {} ms",
                response.status().as_u16(),
                started.elapsed().as_millis()
            ),
        ),
        Ok(response) => Check::new(
            BLOSSOM,
            Status::Warn,
            format!(
                "reachable, but answered a blob lookup with HTTP {}: is it a Blossom server?",
                response.status()
            ),
        )
        .with_fix(format!("check the URL: {curl}")),
        Err(err) => Check::new(BLOSSOM, Status::Fail, unreachable(&err, timeout))
            .with_fix(format!("check the URL and that the server runs: {curl}")),
    }
    .with_target(url)
}

/// Why a request got no answer, with the causes reqwest keeps in its source chain.
fn unreachable(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("unreachable: no answer within {} s", timeout.as_secs());
    }
    let mut text = String::from("unreachable");
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut last = None;
    while let Some(cause) = source {
        last = Some(cause.to_string());
        source = cause.source();
    }
    text.push_str(": ");
    text.push_str(&last.unwrap_or_else(|| err.to_string()));
    text
}

/// The body, or `None` past `limit` bytes or on a read error.
async fn read_limited(response: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_fails_under_the_floor_and_warns_under_two_gib() {
        assert_eq!(classify_disk(0), Status::Fail);
        assert_eq!(classify_disk(DISK_FAIL_BYTES - 1), Status::Fail);
        assert_eq!(classify_disk(DISK_FAIL_BYTES), Status::Warn);
        assert_eq!(classify_disk(DISK_WARN_BYTES - 1), Status::Warn);
        assert_eq!(classify_disk(DISK_WARN_BYTES), Status::Ok);
        assert_eq!(classify_disk(u64::MAX), Status::Ok);
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(17), "17 B");
    }

    #[test]
    fn clock_skew_is_judged_either_way() {
        assert_eq!(classify_skew(0.0), Status::Ok);
        assert_eq!(classify_skew(-SKEW_WARN_SECS), Status::Ok);
        assert_eq!(classify_skew(11.0), Status::Warn);
        assert_eq!(classify_skew(-29.0), Status::Warn);
        assert_eq!(classify_skew(31.0), Status::Fail);
        assert_eq!(classify_skew(-3600.0), Status::Fail);
    }

    #[test]
    fn skew_is_measured_from_the_middle_of_the_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Sent at t, answered in 2 s, the server's clock read t+1.x: in step.
        let (skew, error) = estimate_skew(t, Duration::from_secs(2), t + Duration::from_secs(1));
        assert!(skew.abs() < 1.0, "{skew}");
        assert!((error - 1.5).abs() < 1e-9, "{error}");
        // The server says an hour earlier: this clock is an hour ahead.
        let (skew, _) = estimate_skew(t, Duration::ZERO, t - Duration::from_secs(3600));
        assert!((skew - 3599.5).abs() < 1e-9, "{skew}");
        assert_eq!(
            clock_check(t, Duration::ZERO, t - Duration::from_secs(3600)).status,
            Status::Fail
        );
        let behind = clock_check(t, Duration::ZERO, t + Duration::from_secs(20));
        assert_eq!(behind.status, Status::Warn);
        assert!(behind.detail.contains("behind"), "{}", behind.detail);
        assert!(behind.fix.is_some());
    }

    #[test]
    fn the_userns_fix_names_the_knob_that_is_off() {
        let debian = UsernsSysctls {
            unprivileged_userns_clone: Some(0),
            max_user_namespaces: Some(63000),
            apparmor_restrict_unprivileged_userns: None,
        };
        assert_eq!(
            userns_fix(&debian),
            "sysctl -w kernel.unprivileged_userns_clone=1"
        );
        let ubuntu = UsernsSysctls {
            apparmor_restrict_unprivileged_userns: Some(1),
            max_user_namespaces: Some(0),
            ..UsernsSysctls::default()
        };
        assert_eq!(
            userns_fix(&ubuntu),
            "sysctl -w user.max_user_namespaces=15000 && \
             sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
        );
        assert!(userns_fix(&UsernsSysctls::default()).contains("container"));
    }

    #[test]
    fn a_report_fails_only_on_failures() {
        let warn = Check::problem(CGROUPS, false, "x", "y");
        assert_eq!(warn.status, Status::Warn);
        assert!(Report::new(vec![warn.clone(), Check::skipped(RELAY, "none")]).ok);
        let fail = Check::problem(GIT, true, "no git", "apt-get install git");
        let report = Report::new(vec![warn, fail]);
        assert!(!report.ok);
        assert_eq!(report.failures().map(|c| c.name).collect::<Vec<_>>(), [GIT]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "fail");
        assert_eq!(json["checks"][1]["fix"], "apt-get install git");
        assert!(json["checks"][0].get("target").is_none());
    }

    #[tokio::test]
    async fn endpoints_with_bad_urls_fail_without_any_request() {
        let checks = check_endpoints(
            &["http://not-a-relay".into()],
            &["ftp://x".into()],
            ENDPOINT_TIMEOUT,
        )
        .await;
        let statuses: Vec<(&str, Status)> = checks.iter().map(|c| (c.name, c.status)).collect();
        assert_eq!(
            statuses,
            [
                (RELAY, Status::Fail),
                (CLOCK, Status::Skipped),
                (BLOSSOM, Status::Fail)
            ]
        );
        assert_eq!(checks[0].target.as_deref(), Some("http://not-a-relay"));
        let masked = Check::skipped(RELAY, "x").with_target("wss://me:hunter2@relay.example");
        assert_eq!(
            masked.target.as_deref(),
            Some("wss://me:***@relay.example/")
        );
    }
}
