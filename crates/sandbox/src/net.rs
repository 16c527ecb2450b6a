//! Networks that are the step's own: what `network: true` means under bubblewrap.
//!
//! The step never shares the host's network namespace. bwrap makes a fresh one (as for a step
//! without network) and stops before running the step (`--info-fd`/`--block-fd`); we then
//!
//! 1. start `pasta` (Debian package `passt`) on that namespace: a user-mode TCP/UDP/ICMP stack
//!    that turns the step's packets into ordinary sockets of the (unprivileged) pasta process
//!    on the host. IPv4 only; no port forwarding in either direction (`-t/-u/-T/-U none`, so
//!    nothing of the host's loopback is mapped in), and the gateway is not mapped to the host
//!    (`--no-map-gw`). DNS sent to [`DNS_ADDR`] goes to the host's resolver (`--dns-forward`).
//! 2. configure the namespace with `ip` (as root, or inside the step's user namespace): the
//!    address, a default route straight onto pasta's interface, and an `unreachable` route
//!    for every destination the step must not reach: loopback, RFC 1918, CGNAT, link-local
//!    (with 169.254.169.254, cloud metadata), the other reserved ranges, and every network the
//!    host itself has an address in. The step has no capabilities, so it cannot change them.
//!    Ranges the operator allows ([`Ipv4Cidr`], `quorum dvm runner --allow-network-to`) get a
//!    route of their own and stay reachable.
//! 3. let bwrap go on. pasta is killed when the step ends.
//!
//! So a step with network reaches the internet, but not the runner's relay, Blossom server or
//! databases on 127.0.0.1, not the LAN, not the metadata service.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::SandboxError;

/// The step's own address (a /32: no subnet of it is on-link).
pub(crate) const STEP_ADDR: &str = "10.0.2.100";
/// Where the step sends DNS queries: pasta forwards port 53 there to the host's resolver.
/// Link-local, so that other traffic to it goes nowhere useful.
pub const DNS_ADDR: &str = "169.254.0.53";
/// The interface pasta creates in the step's namespace.
const IFACE: &str = "eth0";

/// Destinations no step reaches unless the operator allows them: this host's loopback, the
/// private and shared ranges (RFC 1918, RFC 6598), link-local (RFC 3927, which holds the
/// 169.254.169.254 metadata service), and the special-purpose ranges of RFC 6890 that are not
/// the internet.
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// An IPv4 network, `a.b.c.d/n` (a bare address means /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let mask = mask(prefix);
        Ipv4Cidr {
            addr: u32::from(addr) & mask,
            prefix,
        }
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && (other.addr & mask(self.prefix)) == self.addr
    }

    /// Whether the address is inside this network.
    pub fn contains_addr(&self, addr: Ipv4Addr) -> bool {
        self.contains(&Ipv4Cidr::new(addr, 32))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IPv4 network (a.b.c.d/n)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        if prefix > 32 {
            return Err(bad());
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        Ok(Ipv4Cidr::new(addr, prefix))
    }
}

/// The destinations a step with network cannot reach on this host now: the fixed ranges plus
/// the networks of the host's own addresses, minus what `allow` covers.
pub(crate) fn blocked(allow: &[Ipv4Cidr]) -> Vec<Ipv4Cidr> {
    let mut out: Vec<Ipv4Cidr> = BLOCKED.iter().map(|b| b.parse().expect("valid")).collect();
    out.extend(host_networks());
    out.sort();
    out.dedup();
    out.retain(|b| !allow.iter().any(|a| a.contains(b)));
    out
}

/// Networks of the host's IPv4 addresses (its LAN, docker bridges, VPNs, ...).
fn host_networks() -> Vec<Ipv4Cidr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is a valid sockaddr; we read the family before casting.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: both are sockaddr_in for AF_INET entries.
        let (addr, netmask) = unsafe {
            (
                *(ifa.ifa_addr as *const libc::sockaddr_in),
                *(ifa.ifa_netmask as *const libc::sockaddr_in),
            )
        };
        let addr = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        let prefix = u32::from_be(netmask.sin_addr.s_addr).count_ones() as u8;
        out.push(Ipv4Cidr::new(addr, prefix));
        // The address itself too, in case its network is a wide one the operator allowed.
        out.push(Ipv4Cidr::new(addr, 32));
    }
    // SAFETY: ifap came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// The `ip -batch` script that configures the step's namespace.
pub(crate) fn ip_script(allow: &[Ipv4Cidr]) -> String {
    let mut s = format!(
        "link set {IFACE} up\naddr add {STEP_ADDR}/32 dev {IFACE}\n\
         route replace default dev {IFACE}\n"
    );
    for b in blocked(allow) {
        s.push_str(&format!("route replace unreachable {b}\n"));
    }
    // More specific than any block above, so these stay reachable.
    for a in allow {
        s.push_str(&format!("route replace {a} dev {IFACE}\n"));
    }
    s.push_str(&format!("route replace {DNS_ADDR}/32 dev {IFACE}\n"));
    s
}

/// The tools a step's network needs, found at start-up.
#[derive(Debug, Clone)]
pub(crate) struct NetPlan {
    pub pasta: PathBuf,
    pub nsenter: PathBuf,
    pub ip: PathBuf,
    pub allow: Vec<Ipv4Cidr>,
}

impl NetPlan {
    /// Find pasta, nsenter and ip; `build_uid` is who pasta will run as.
    pub(crate) fn detect(build_uid: Option<u32>) -> Result<NetPlan, String> {
        let pasta = which("pasta").ok_or(
            "pasta not found: install it (Debian/Ubuntu: apt-get install passt) to give steps \
             a network of their own",
        )?;
        let nsenter = which("nsenter").ok_or("nsenter not found (package util-linux)")?;
        let ip = which("ip").ok_or("ip not found (package iproute2)")?;
        // SAFETY: geteuid has no preconditions.
        tun_usable(build_uid.is_some() || unsafe { libc::geteuid() } != 0)?;
        Ok(NetPlan {
            pasta,
            nsenter,
            ip,
            allow: Vec::new(),
        })
    }
}

/// Whether pasta can open `/dev/net/tun`. pasta opens it as itself; as a non-root user
/// (`unprivileged`: a non-root DVM, or a root DVM's build user) that needs the device to be
/// world read-writable, which is the distributions' default (creating an interface still needs
/// CAP_NET_ADMIN in a namespace).
pub(crate) fn tun_usable(unprivileged: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/net/tun")
        .map(|m| m.permissions().mode())
        .map_err(|e| format!("/dev/net/tun: {e} (modprobe tun)"))?;
    if unprivileged && mode & 0o006 != 0o006 {
        return Err(format!(
            "/dev/net/tun is mode {:o}: pasta runs unprivileged and needs it \
             read-writable for all (chmod 0666 /dev/net/tun, the usual default)",
            mode & 0o777
        ));
    }
    Ok(())
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the launcher needs to give a started bwrap its network.
pub(crate) struct NetLaunch {
    pub plan: NetPlan,
    /// Read end of bwrap's `--info-fd` (its `child-pid`).
    pub info: OwnedFd,
    /// Write end of bwrap's `--block-fd`: one byte lets the step start.
    pub block: OwnedFd,
    /// Run pasta (and, when not root, `ip`) as this uid/gid.
    pub ids: Option<(u32, u32)>,
}

/// pasta for one step; dropping it kills pasta.
pub(crate) struct NetGuard {
    _pasta: tokio::process::Child,
}

/// Wait for bwrap's namespace, attach pasta, configure routes and release the step.
pub(crate) async fn attach(n: NetLaunch) -> Result<NetGuard, SandboxError> {
    let setup = |reason: String| SandboxError::Setup { reason };
    let NetLaunch {
        plan,
        info,
        block,
        ids,
    } = n;
    let mut info = tokio::net::unix::pipe::Receiver::from_owned_fd(info)
        .map_err(|e| SandboxError::io("reading bwrap's info", e))?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), info.read_to_string(&mut text))
        .await
        .map_err(|_| setup("bwrap did not report its namespace within 10 s".into()))?
        .map_err(|e| SandboxError::io("reading bwrap's info", e))?;
    let pid = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("child-pid").and_then(|p| p.as_i64()))
        .ok_or_else(|| setup(format!("bwrap ended before setting up the step ({text:?})")))?;
    let netns = open(&format!("/proc/{pid}/ns/net"))?;
    // The namespace's owner: the user namespace bwrap made first. The step's own process sits
    // in a nested one (--disable-userns), which has no say over this network namespace.
    // SAFETY: plain ioctl on a namespace fd we own.
    let userns = unsafe { libc::ioctl(netns.as_raw_fd(), libc::NS_GET_USERNS) };
    if userns < 0 {
        return Err(SandboxError::io(
            "finding the step's user namespace",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the ioctl returned a fresh descriptor.
    let userns = unsafe { OwnedFd::from_raw_fd(userns) };
    let (n_fd, u_fd) = (netns.as_raw_fd(), userns.as_raw_fd());
    let root = unsafe { libc::geteuid() } == 0;
    let ns_args = |c: &mut tokio::process::Command, pasta: bool| {
        if pasta {
            c.args(["--userns", &format!("/proc/self/fd/{u_fd}")]);
            c.args(["--netns", &format!("/proc/self/fd/{n_fd}")]);
        } else {
            c.arg(format!("--net=/proc/self/fd/{n_fd}"));
        }
    };

    let mut pasta = tokio::process::Command::new(&plan.pasta);
    pasta.args([
        "-q",
        "-f",
        "-4",
        "--no-map-gw",
        "--no-dhcp",
        "--no-ndp",
        "--no-dhcpv6",
        "--no-ra",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "-I",
        IFACE,
        "-a",
        STEP_ADDR,
        "-n",
        "24",
        "-g",
        "10.0.2.2",
        "--dns-forward",
        DNS_ADDR,
    ]);
    ns_args(&mut pasta, true);
    pasta
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    prepare_child(&mut pasta, vec![n_fd, u_fd], ids);
    let mut pasta = pasta.spawn().map_err(|source| SandboxError::Spawn {
        program: plan.pasta.clone(),
        source,
    })?;

    // pasta has no readiness signal in the foreground: its interface appearing in the
    // namespace is the one.
    let dev = format!("/proc/{pid}/net/dev");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if std::fs::read_to_string(&dev).is_ok_and(|d| d.contains(&format!("{IFACE}:"))) {
            break;
        }
        if let Ok(Some(status)) = pasta.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = pasta.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            return Err(setup(format!(
                "pasta exited ({status}) before the step's network was up: {}",
                last_lines(&err)
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(setup(
                "pasta did not bring the step's network up in 10 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let mut ip = tokio::process::Command::new(&plan.nsenter);
    ns_args(&mut ip, false);
    if !root {
        ip.arg(format!("--user=/proc/self/fd/{u_fd}"))
            .arg("--preserve-credentials");
    }
    ip.arg("--")
        .arg(&plan.ip)
        .args(["-batch", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    prepare_child(&mut ip, vec![n_fd, u_fd], None);
    let mut child = ip.spawn().map_err(|source| SandboxError::Spawn {
        program: plan.nsenter.clone(),
        source,
    })?;
    let script = ip_script(&plan.allow);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| SandboxError::io("configuring the step's network", e))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| setup("configuring the step's network took over 10 s".into()))?
        .map_err(|e| SandboxError::io("configuring the step's network", e))?;
    if !out.status.success() {
        return Err(setup(format!(
            "configuring the step's network failed: {}",
            last_lines(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    drop((netns, userns));

    // SAFETY: writing one byte to a pipe we own.
    let w = unsafe { libc::write(block.as_raw_fd(), b"n".as_ptr().cast(), 1) };
    if w != 1 {
        return Err(SandboxError::io(
            "starting the step",
            std::io::Error::last_os_error(),
        ));
    }
    drop(block);
    Ok(NetGuard { _pasta: pasta })
}

fn open(path: &str) -> Result<OwnedFd, SandboxError> {
    let c = std::ffi::CString::new(path).expect("no NUL");
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(SandboxError::io(
            format!("opening {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Let the child inherit `fds` and, if given, become `ids` (no supplementary groups).
fn prepare_child(cmd: &mut tokio::process::Command, fds: Vec<RawFd>, ids: Option<(u32, u32)>) {
    // SAFETY: only async-signal-safe syscalls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = ids {
                crate::exec::become_user(uid, gid)?;
            }
            Ok(())
        });
    }
}

fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Failed to send"))
        .collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// The resolver configuration steps with network see.
pub(crate) fn resolv_conf() -> String {
    format!("nameserver {DNS_ADDR}\noptions edns0 trust-ad\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let ten: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(ten.contains(&"10.213.7.2".parse().unwrap()));
        assert!(!ten.contains(&"11.0.0.1".parse().unwrap()));
        assert_eq!(
            "192.168.1.7/16".parse::<Ipv4Cidr>().unwrap().to_string(),
            "192.168.0.0/16"
        );
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("example.com".parse::<Ipv4Cidr>().is_err());
        let link_local: Ipv4Cidr = "169.254.0.0/16".parse().unwrap();
        assert!(link_local.contains_addr("169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn the_host_and_private_ranges_are_blocked_unless_allowed() {
        let b = blocked(&[]);
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
        ] {
            let a: Ipv4Addr = addr.parse().unwrap();
            assert!(b.iter().any(|c| c.contains_addr(a)), "{addr} not blocked");
        }
        assert!(
            !b.iter()
                .any(|c| c.contains_addr("198.51.100.2".parse().unwrap()))
        );
        let allowed = blocked(&["10.0.0.0/8".parse().unwrap()]);
        assert!(
            !allowed
                .iter()
                .any(|c| c.contains_addr("10.1.2.3".parse().unwrap()))
        );
        let script = ip_script(&["10.9.0.0/16".parse().unwrap()]);
        assert!(
            script.contains("route replace unreachable 10.0.0.0/8"),
            "{script}"
        );
        assert!(
            script.contains("route replace 10.9.0.0/16 dev eth0"),
            "{script}"
        );
    }
}
