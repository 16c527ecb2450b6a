//! A build step cannot own the runner host (security review C2, M7), tested as root with real
//! bubblewrap, pasta, cgroups and a loop-mounted work volume:
//! no host root, no writable `/proc/sys`, the seccomp filter syscall by syscall, a network of
//! the step's own, the disk cap, and CPU/fork-bomb containment beside another job.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use quorum_sandbox::volume::WorkVolume;
use quorum_sandbox::{Ipv4Cidr, Sandbox, Stream};

fn am_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Without the build user a root DVM refuses to run steps, and says how to fix it.
#[test]
fn root_without_build_user_is_refused_with_the_fix() {
    assert!(am_root(), "CI runs these tests as root");
    let err = quorum_sandbox::Bubblewrap::detect_with("/usr/bin/bwrap", "quorum-no-such-user")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, quorum_sandbox::SandboxError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("useradd") && text.contains("quorum-no-such-user"),
        "{text}"
    );
}

/// C2: the step is not host uid 0, no `/proc/sys` file opens for writing, host-global proc
/// files are masked and the host path of the work dir does not show in mountinfo.
#[tokio::test]
async fn step_is_not_host_root_and_cannot_write_sysctls() {
    let _machine = MACHINE.read().await;
    assert!(am_root(), "CI runs these tests as root");
    let sb = bwrap();
    let (uid, _) = sb
        .build_ids()
        .expect("a root DVM runs steps as the build user");
    assert_ne!(uid, 0);
    let work = tempfile::tempdir().unwrap();
    let script = r#"
python3 - <<'EOF'
import os
writable = []
for root, dirs, files in os.walk('/proc/sys'):
    for f in files:
        p = os.path.join(root, f)
        try:
            fd = os.open(p, os.O_WRONLY)   # opened only, never written
            os.close(fd)
            writable.append(p)
        except OSError:
            pass
print('WRITABLE', len(writable), ' '.join(writable[:5]))
try:
    os.close(os.open('/proc/sys/kernel/core_pattern', os.O_WRONLY))
    print('CORE_PATTERN writable')
except OSError as e:
    print('CORE_PATTERN', e.strerror)
for f in ['kcore', 'keys', 'timer_list', 'sysrq-trigger']:
    p = '/proc/' + f
    try:
        with open(p, 'rb') as h:
            print('PROC', f, len(h.read(64)))
    except OSError as e:
        print('PROC', f, e.strerror)
EOF
echo made > owned
grep -c ' /build ' /proc/self/mountinfo
grep ' /build ' /proc/self/mountinfo
"#;
    let (out, log) = run(&sb, &spec(script, work.path())).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(stdout.contains("WRITABLE 0 "), "{stdout}");
    assert!(!stdout.contains("CORE_PATTERN writable"), "{stdout}");
    // Masked (reads as nothing or is refused), or absent on this kernel.
    for f in ["kcore", "keys", "timer_list", "sysrq-trigger"] {
        let ok = ["0", "Permission denied", "No such file or directory"]
            .iter()
            .any(|r| stdout.contains(&format!("PROC {f} {r}\n")));
        assert!(ok, "/proc/{f} not masked: {stdout}");
    }
    // What the step made belongs to the build user on the host, not to root.
    let meta = std::fs::metadata(work.path().join("owned")).unwrap();
    assert_eq!(meta.uid(), uid, "host owner of a file the step wrote");
    assert_ne!(meta.uid(), 0);
    let _ = stdout
        .lines()
        .find(|l| l.contains(" /build "))
        .expect("the /build mount");
}

/// On a work volume, mountinfo shows the work dir as a path of that file system only.
#[tokio::test]
async fn mountinfo_does_not_show_the_host_path_on_a_volume() {
    let _machine = MACHINE.read().await;
    let data = tempfile::tempdir().unwrap();
    let volume = WorkVolume::mount(data.path().join("work"), 32 << 20).unwrap();
    let job = volume.dir().join("job-1/src");
    std::fs::create_dir_all(&job).unwrap();
    let (out, log) = run(
        &bwrap(),
        &spec("grep ' /build ' /proc/self/mountinfo", &job),
    )
    .await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(stdout.contains(" /job-1/src /build "), "{stdout}");
    assert!(
        !stdout.contains(&data.path().display().to_string()),
        "{stdout}"
    );
}

const SYSCALLS_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/ptrace.h>
#include <sys/mount.h>
#include <linux/keyctl.h>

static void report(const char *name, long r) {
    printf("%s %s\n", name, r < 0 ? strerrorname_np(errno) : "OK");
}

int main(void) {
    char buf[64] = {0};
    report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    report("umount2", umount2("/tmp", MNT_DETACH));
    report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    report("clone3", syscall(SYS_clone3, buf, 64));
    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    report("add_key", syscall(SYS_add_key, "user", "quorum", "x", 1, KEY_SPEC_SESSION_KEYRING));
    report("request_key", syscall(SYS_request_key, "user", "quorum", 0, 0));
    report("bpf", syscall(SYS_bpf, 0, buf, 64));
    report("perf_event_open", syscall(SYS_perf_event_open, buf, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, buf));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    report("init_module", syscall(SYS_init_module, buf, 0, ""));
    report("finit_module", syscall(SYS_finit_module, 0, "", 0));
    report("delete_module", syscall(SYS_delete_module, "quorum", 0));
    report("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, 0, 0));
    report("ptrace_attach_init", ptrace(PTRACE_ATTACH, 1, 0, 0));
    report("getpid", getpid());
    pid_t child = fork();
    if (child == 0) _exit(0);
    report("fork", child);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Seccomp", 7)) fputs(line, stdout);
    return 0;
}
"#;

/// The seccomp filter, syscall by syscall (a C helper built on the host with gcc).
#[tokio::test]
async fn seccomp_filter_denies_each_listed_syscall() {
    let _machine = MACHINE.read().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("sys.c"), SYSCALLS_C).unwrap();
    let cc = Command::new("gcc")
        .args(["-O0", "-o"])
        .arg(work.path().join("sys"))
        .arg(work.path().join("sys.c"))
        .output()
        .expect("gcc is needed for this test");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let (out, log) = run(&bwrap(), &spec("./sys", work.path())).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    let result = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not reported: {stdout}"))
            .to_owned()
    };
    for name in [
        "mount",
        "umount2",
        "pivot_root",
        "unshare_user",
        "clone_newuser",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "ptrace_traceme",
        "ptrace_attach_init",
    ] {
        assert_eq!(result(name), "EPERM", "{name}: {stdout}");
    }
    // Only the filter answers ENOSYS for clone3 (so libc falls back to the checked clone).
    assert_eq!(result("clone3"), "ENOSYS", "{stdout}");
    // Ordinary calls still work.
    assert_eq!(result("getpid"), "OK");
    assert_eq!(result("fork"), "OK");
    assert!(stdout.contains("Seccomp:\t2"), "{stdout}");
}

/// A network namespace made by the test: "the internet", reached from the host over a veth
/// pair, serving TCP on a public-looking address and on a private and a link-local one.
struct Internet {
    name: String,
    host_if: String,
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

const PUBLIC: &str = "198.51.100.2";
const PRIVATE: &str = "10.213.7.2";
const LINK_LOCAL: &str = "169.254.77.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Internet {
    fn start() -> Internet {
        let id = std::process::id() % 100_000;
        let name = format!("qsb-inet-{id}");
        let host_if = format!("qsbh{id}");
        let peer = format!("qsbi{id}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["link", "set", &host_if, "up"]);
        for cmd in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "set", &peer, "up"],
            vec!["addr", "add", &format!("{PUBLIC}/32"), "dev", &peer],
            vec!["addr", "add", &format!("{PRIVATE}/32"), "dev", &peer],
            vec!["addr", "add", &format!("{LINK_LOCAL}/32"), "dev", &peer],
            vec!["route", "add", "default", "dev", &peer],
        ] {
            let mut a = vec!["-n", name.as_str()];
            a.extend(cmd.iter().map(|s| &**s));
            ip(&a);
        }
        // Host routes to exactly these three addresses: nothing else goes anywhere new.
        for addr in [PUBLIC, PRIVATE, LINK_LOCAL] {
            ip(&["route", "add", &format!("{addr}/32"), "dev", &host_if]);
        }
        // The server lives in the namespace: a thread that joined it serves until the test
        // ends (bounded by its own deadline).
        let ns = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only (network namespaces are per thread).
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            l.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = s.set_nonblocking(false);
                        let _ = writeln!(s, "HELLO-FROM-INTERNET {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Internet {
            name,
            host_if,
            port,
            accepted,
        }
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The host's first global IPv4 address (its LAN address).
fn host_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("qsbh"))
        .find_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .split('/')
                .next()
                .map(str::to_owned)
        })
}

fn probe(label: &str, addr: &str, port: u16) -> String {
    format!(
        "if timeout 3 bash -c 'exec 3<>/dev/tcp/{addr}/{port}; read -t 2 line <&3; echo \"$line\"' \
         > /tmp/{label} 2>/dev/null && grep -q HELLO /tmp/{label}; then echo \"{label} REACHED\"; \
         else echo \"{label} BLOCKED\"; fi\n"
    )
}

/// M7: with network, the step reaches "the internet" (a namespace the test made) but neither
/// the host's 127.0.0.1, nor the host's own address, nor private or link-local addresses;
/// the operator can allow a private range.
#[tokio::test]
async fn network_is_the_steps_own() {
    let _machine = MACHINE.read().await;
    assert!(am_root(), "CI runs these tests as root");
    let sb = bwrap();
    assert!(sb.network_available(), "{:?}", sb.describe().notes);
    let inet = Internet::start();
    // Services of the host: one on loopback, one on every address.
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let any = TcpListener::bind("0.0.0.0:0").unwrap();
    let (lport, aport) = (
        local.local_addr().unwrap().port(),
        any.local_addr().unwrap().port(),
    );
    local.set_nonblocking(true).unwrap();
    any.set_nonblocking(true).unwrap();
    let host = host_address().expect("a global IPv4 address on the host");

    let mut script = String::from("set +e\ncat /proc/net/dev | grep -c eth0\n");
    script.push_str(&probe("public", PUBLIC, inet.port));
    script.push_str(&probe("private", PRIVATE, inet.port));
    script.push_str(&probe("linklocal", LINK_LOCAL, inet.port));
    script.push_str(&probe("loopback", "127.0.0.1", lport));
    script.push_str(&probe("hostaddr", &host, aport));
    script.push_str(&probe("gateway", "10.0.2.2", aport));
    let work = tempfile::tempdir().unwrap();
    let mut s = spec(&script, work.path());
    s.network = true;
    let (out, log) = run(&sb, &s).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(stdout.contains("public REACHED"), "{stdout}");
    for blocked in ["private", "linklocal", "loopback", "hostaddr", "gateway"] {
        assert!(
            stdout.contains(&format!("{blocked} BLOCKED")),
            "{blocked}: {stdout}"
        );
    }
    assert!(
        local.accept().is_err() && any.accept().is_err(),
        "a host service was reached"
    );
    assert_eq!(inet.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The operator allows the private range: now that address is reachable too.
    let allowed = bwrap().with_network_allowed(vec!["10.213.7.0/24".parse::<Ipv4Cidr>().unwrap()]);
    let mut s = spec(&probe("private", PRIVATE, inet.port), work.path());
    s.network = true;
    let (out, log) = run(&allowed, &s).await;
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(
        text(&log, Stream::Stdout).contains("private REACHED"),
        "{}",
        all(&log)
    );

    // Without network: no interface but lo, nothing reached.
    let s = spec(&probe("public", PUBLIC, inet.port), work.path());
    let (_, log) = run(&sb, &s).await;
    assert!(
        text(&log, Stream::Stdout).contains("public BLOCKED"),
        "{}",
        all(&log)
    );
}

/// M7: a step that writes past the disk cap fails, says so, and the runner's data dir is
/// unharmed; artifacts of a step on the volume are still collected from the host path.
#[tokio::test]
async fn writing_past_the_disk_cap_fails_the_step_and_spares_the_host() {
    let _machine = MACHINE.read().await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("journal"), "precious").unwrap();
    let volume = WorkVolume::mount(data.path().join("work"), 32 << 20).unwrap();
    let sb = bwrap();

    let job = volume.dir().join("job-1/src");
    std::fs::create_dir_all(&job).unwrap();
    // Many files, each under the file-size limit: only the volume's size stops them.
    let (out, log) = run(
        &sb,
        &spec(
            "i=0; while [ $i -lt 16 ]; do head -c 4000000 /dev/zero > f$i; i=$((i+1)); done; echo ALL-WRITTEN",
            &job,
        ),
    )
    .await;
    assert!(!out.success(), "{out:?}");
    assert!(out.disk_limit_hit, "{out:?}");
    assert!(
        text(&log, Stream::System).contains("disk limit reached"),
        "{}",
        all(&log)
    );
    assert!(!text(&log, Stream::Stdout).contains("ALL-WRITTEN"));
    // The host side is fine: the journal is intact and can still be written.
    assert_eq!(
        std::fs::read_to_string(data.path().join("journal")).unwrap(),
        "precious"
    );
    std::fs::write(data.path().join("journal"), "still writable").unwrap();
    std::fs::remove_dir_all(volume.dir().join("job-1")).unwrap();

    // The next job on the same volume runs and its artifact is collected as before.
    let job = volume.dir().join("job-2/src");
    std::fs::create_dir_all(&job).unwrap();
    let (out, log) = run(
        &sb,
        &spec("mkdir -p out && echo artifact > out/a.txt", &job),
    )
    .await;
    assert!(out.success(), "{}", all(&log));
    assert!(!out.disk_limit_hit);
    let packed_dir = data.path().join("packed");
    std::fs::create_dir(&packed_dir).unwrap();
    let packed =
        quorum_sandbox::pack::collect_artifacts(&job, &["out/a.txt".to_string()], 0, &packed_dir)
            .unwrap();
    assert_eq!(packed.len(), 1);
    let mut body = String::new();
    std::fs::File::open(&packed[0].path)
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    assert_eq!(body, "artifact\n");

    let dir = volume.dir().to_owned();
    drop(volume);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "volume still mounted"
    );
}

/// M7: a CPU hog and a fork bomb run at the same time, each is held by its cap, and another
/// job started after them finishes while they are still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_hog_and_fork_bomb_are_contained_while_another_job_finishes() {
    let _alone = MACHINE.write().await;
    let sb = std::sync::Arc::new(bwrap());
    let (w1, w2, w3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut hog = spec(
        "for i in 1 2 3 4; do (while :; do :; done) & done; wait",
        w1.path(),
    );
    hog.limits.cpu_millicores = 500;
    hog.timeout = Duration::from_secs(6);
    let mut bomb = spec(
        "exec bash -c 'b() { while :; do b 2>/dev/null & done; }; b'",
        w2.path(),
    );
    bomb.limits.max_processes = 64;
    bomb.timeout = Duration::from_secs(6);
    let (sb1, sb2) = (sb.clone(), sb.clone());
    let hog_task = tokio::spawn(async move { run(&*sb1, &hog).await });
    let bomb_task = tokio::spawn(async move { run(&*sb2, &bomb).await });
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (out, log) = run(
        &*sb,
        &spec(
            "python3 -c 'print(sum(range(100000)))' && echo other-job-done",
            w3.path(),
        ),
    )
    .await;
    assert!(out.success(), "{}", all(&log));
    assert!(text(&log, Stream::Stdout).contains("other-job-done"));
    assert!(
        !hog_task.is_finished() && !bomb_task.is_finished(),
        "the other job was not concurrent"
    );

    let (hog_out, _) = hog_task.await.unwrap();
    assert!(hog_out.timed_out, "{hog_out:?}");
    assert!(hog_out.cpu_throttled, "{hog_out:?}");
    let (bomb_out, _) = bomb_task.await.unwrap();
    assert!(bomb_out.process_limit_hit, "{bomb_out:?}");
}
