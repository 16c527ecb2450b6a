//! Hostile and ordinary steps under the bubblewrap backend (design section 10: a hostile build
//! script cannot read keys, reach the network when denied, or write outside its dir).

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use quorum_sandbox::{Sandbox, Stream};

#[tokio::test]
async fn describes_itself_as_isolated() {
    let _machine = MACHINE.read().await;
    let info = bwrap().describe();
    assert_eq!(info.name, "bubblewrap");
    assert!(info.isolated);
    assert!(!info.version.is_empty());
}

/// 1. Keys of the DVM: a 0600 file in a temp dir outside the work dir, and one under /root.
#[tokio::test]
async fn cannot_read_dvm_keys() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("dvm.key");
    std::fs::write(&key, "nsec1-TEST-KEY-OUTSIDE").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let root_key =
        std::path::PathBuf::from(format!("/root/.quorum-test-key-{}", std::process::id()));
    std::fs::write(&root_key, "nsec1-TEST-KEY-ROOT").unwrap();
    std::fs::set_permissions(&root_key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let work = tempfile::tempdir().unwrap();
    let script = format!(
        "cat {k} || echo 'denied {k}'\n\
         cat {r} || echo 'denied {r}'\n\
         for d in /root /home /var/lib /run /sys /opt /srv /mnt {keys}; do \
           if [ -e $d ]; then echo \"VISIBLE $d\"; fi; done\n\
         cat /proc/1/root{r} 2>/dev/null && echo 'via proc' || true\n\
         exit 0",
        k = key.display(),
        r = root_key.display(),
        keys = keys.path().display(),
    );
    let (out, log) = run(&sb, &spec(&script, work.path())).await;
    let _ = std::fs::remove_file(&root_key);
    let all = all(&log);
    assert_eq!(out.exit_code, Some(0), "{all}");
    assert!(!all.contains("nsec1-TEST-KEY"), "a key leaked:\n{all}");
    assert!(all.contains(&format!("denied {}", key.display())), "{all}");
    assert!(
        all.contains(&format!("denied {}", root_key.display())),
        "{all}"
    );
    assert!(!all.contains("VISIBLE"), "host dirs visible:\n{all}");
}

async fn connect_step(network: bool) -> (quorum_sandbox::StepOutcome, String, bool) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(25), listener.accept())
            .await
            .is_ok_and(|r| r.is_ok())
    });
    let work = tempfile::tempdir().unwrap();
    let script = format!(
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sed 's/^/iface /'\n\
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo CONNECTED"
    );
    let mut s = spec(&script, work.path());
    s.network = network;
    let (out, log) = run(&bwrap(), &s).await;
    accepted.abort();
    let got = accepted.await.unwrap_or(false);
    (out, all(&log), got)
}

/// 2. Network off: a fresh namespace with only `lo`; the host's 127.0.0.1 is unreachable.
#[tokio::test]
async fn network_off_cannot_reach_host_loopback() {
    let _machine = MACHINE.read().await;
    let (out, log, accepted) = connect_step(false).await;
    assert_ne!(out.exit_code, Some(0), "{log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    assert!(!accepted);
    let ifaces: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("Stdout: iface "))
        .collect();
    assert_eq!(ifaces, ["lo"], "{log}");
}

/// 2b. Network on: the step has an interface of its own, and the host's 127.0.0.1 is still
/// out of reach (its 127.0.0.1 is its own; see hardening.rs for the rest of the network).
#[tokio::test]
async fn network_on_still_cannot_reach_host_loopback() {
    let _machine = MACHINE.read().await;
    let (out, log, accepted) = connect_step(true).await;
    assert_ne!(out.exit_code, Some(0), "{log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    assert!(!accepted);
    let ifaces: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("Stdout: iface "))
        .collect();
    assert_eq!(ifaces, ["lo", "eth0"], "{log}");
}

/// 3. Writes outside the work dir fail; /tmp is private and gone afterwards.
#[tokio::test]
async fn cannot_write_outside_work_dir() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let outside = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let m = marker("tmp");
    let targets = [
        "/usr/quorum-x".to_owned(),
        "/etc/quorum-x".to_owned(),
        "/quorum-x".to_owned(),
        "/usr/bin/quorum-x".to_owned(),
        format!("{}/quorum-x", outside.path().display()),
    ];
    let mut script = String::new();
    for t in &targets {
        script.push_str(&format!(
            "if touch {t} 2>/dev/null; then echo \"WROTE {t}\"; else echo \"denied {t}\"; fi\n"
        ));
    }
    // The test's temp dir is not visible; creating it makes a new dir in the private /tmp.
    script.push_str(&format!(
        "mkdir -p {o} && echo x > {o}/quorum-y && echo 'private tmp ok'\n\
         echo hi > /tmp/{m} && echo hi > /build/in-work\n\
         cp /bin/true /build/suid && chmod 4755 /build/suid && echo \"suid=$(stat -c %a /build/suid)\"\n",
        o = outside.path().display()
    ));
    let (out, log) = run(&sb, &spec(&script, work.path())).await;
    let all = all(&log);
    assert_eq!(out.exit_code, Some(0), "{all}");
    for t in &targets {
        assert!(all.contains(&format!("denied {t}")), "{t}: {all}");
        assert!(!std::path::Path::new(t).exists(), "{t} exists on the host");
    }
    assert!(!outside.path().join("quorum-y").exists());
    assert!(!std::path::Path::new(&format!("/tmp/{m}")).exists());
    assert_eq!(
        std::fs::read_to_string(work.path().join("in-work")).unwrap(),
        "hi\n"
    );
    // A setuid-root file made inside does not survive on the host.
    assert!(all.contains("suid=4755"), "{all}");
    let mode = std::fs::metadata(work.path().join("suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);

    // A second run does not see the first run's /tmp.
    let (out, log) = run(&sb, &spec(&format!("test ! -e /tmp/{m}"), work.path())).await;
    assert_eq!(out.exit_code, Some(0), "{}", all_of(&log));
}

fn all_of(log: &[quorum_sandbox::LogLine]) -> String {
    all(log)
}

/// 4. A fork bomb hits the pids cgroup, fails or times out, and leaves nothing behind.
#[tokio::test]
async fn fork_bomb_is_contained() {
    let _alone = MACHINE.write().await;
    let sb = bwrap();
    assert!(
        !sb.describe()
            .notes
            .iter()
            .any(|n| n.contains("pids cgroup")),
        "no pids cgroup here: {:?}",
        sb.describe().notes
    );
    let work = tempfile::tempdir().unwrap();
    // The classic bomb: recursion through pipes in the background.
    let m = marker("bomb");
    let mut s = spec(
        &format!("# {m}\nbomb() {{ bomb | bomb & }}\nbomb\nwait"),
        work.path(),
    );
    s.limits.max_processes = 64;
    s.timeout = Duration::from_secs(5);
    // It may die out on its own (each call returns at once) or hit the limit; either way
    // nothing may survive the step.
    let (out, _) = run(&sb, &s).await;
    assert!(!out.timed_out || out.process_limit_hit, "{out:?}");
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));

    // An exponential one: every process forks in a loop.
    let m = marker("bomb2");
    let mut s = spec(
        &format!("# {m}\nset +e\nbomb() {{ while :; do bomb 2>/dev/null & done; }}\nbomb"),
        work.path(),
    );
    s.limits.max_processes = 64;
    s.timeout = Duration::from_secs(3);
    let started = Instant::now();
    let (out, log) = run(&sb, &s).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{out:?}");
    // dash aborts when its own fork fails, so the step usually fails fast; a shell that
    // survives that would run into the timeout instead.
    assert!(!out.success(), "{out:?}\n{}", all(&log));
    assert!(out.process_limit_hit, "{out:?}");
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));

    // bash retries failed forks instead of aborting: this one lives at the limit until the
    // timeout kills the whole pid namespace.
    let m = marker("bomb3");
    let mut s = spec(
        &format!("exec bash -c 'b() {{ while :; do b 2>/dev/null & done; }}; b # {m}'"),
        work.path(),
    );
    s.limits.max_processes = 64;
    s.timeout = Duration::from_secs(3);
    let started = Instant::now();
    let (out, _) = run(&sb, &s).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{out:?}");
    assert!(out.timed_out && out.process_limit_hit, "{out:?}");
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));

    // The machine is fine: we can still spawn processes.
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
}

/// 6. Timeout kills everything, including a background child that ignores SIGTERM.
#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let m = marker("timeout");
    let script = format!(
        "# {m}\n( trap '' TERM; while :; do sleep 1; done ) &\n\
         setsid sh -c 'trap \"\" TERM HUP; sleep 1000 # {m}' &\n\
         echo started\nsleep 1000"
    );
    let mut s = spec(&script, work.path());
    s.timeout = Duration::from_secs(2);
    let (out, log) = run(&sb, &s).await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(libc_sigkill()));
    assert!(out.duration < Duration::from_secs(6), "{out:?}");
    assert!(text(&log, Stream::Stdout).contains("started"));
    assert!(text(&log, Stream::System).contains("timed out"));
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));
}

/// Processes left in the background by a step that succeeded die with it.
#[tokio::test]
async fn background_processes_do_not_outlive_the_step() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let m = marker("daemon");
    let script = format!(
        "setsid sh -c 'sleep 1000 # {m}' > /dev/null 2>&1 &\nnohup sleep 1000 > /dev/null 2>&1 &\necho done # {m}"
    );
    let (out, _) = run(&sb, &spec(&script, work.path())).await;
    assert_eq!(out.exit_code, Some(0));
    assert!(out.duration < Duration::from_secs(5), "{out:?}");
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));
}

fn libc_sigkill() -> i32 {
    9
}

/// 7. Secrets reach the step intact but never the log, nor any command line.
#[tokio::test]
async fn secrets_are_redacted_and_off_the_command_line() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let value = format!("s3cr3t-{}-value", std::process::id());
    let tricky = "it's \"quoted\" $HOME `id` \\ end";
    let mut s = spec(
        "echo \"token is $TOKEN\"\necho \"$TOKEN\" >&2\nprintf %s \"$TRICKY\" > /build/tricky\nsleep 1\necho \"again $TOKEN.\"",
        work.path(),
    );
    s.secrets.insert("TOKEN".into(), value.clone().into());
    s.secrets.insert("TRICKY".into(), tricky.into());
    assert!(!format!("{s:?}").contains(&value));

    let v2 = value.clone();
    let scan = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let mut buf = Vec::new();
            if let Ok(mut f) = std::fs::File::open(e.path().join("cmdline")) {
                let _ = f.read_to_end(&mut buf);
                if String::from_utf8_lossy(&buf).contains(&v2) {
                    seen.push(e.file_name());
                }
            }
        }
        seen
    });
    let (out, log) = run(&sb, &s).await;
    let all = all(&log);
    assert_eq!(out.exit_code, Some(0), "{all}");
    assert!(!all.contains(&value), "{all}");
    assert!(all.contains("token is ***"), "{all}");
    assert!(all.contains("Stderr: ***"), "{all}");
    assert!(all.contains("again ***."), "{all}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("tricky")).unwrap(),
        tricky
    );
    assert!(
        scan.await.unwrap().is_empty(),
        "secret visible in a command line"
    );
}

/// 8. Exit codes propagate and the environment is the documented one.
#[tokio::test]
async fn exit_codes_and_environment() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let (out, _) = run(&sb, &spec("exit 42", work.path())).await;
    assert_eq!(out.exit_code, Some(42));
    assert!(!out.success());
    let (out, _) = run(&sb, &spec("kill -9 $$", work.path())).await;
    assert_eq!(out.exit_code, Some(128 + 9));
    // -u: unset variables are errors.
    let (out, _) = run(&sb, &spec("echo $NOPE_UNSET", work.path())).await;
    assert_ne!(out.exit_code, Some(0));

    let mut s = spec(
        "echo \"SDE=$SOURCE_DATE_EPOCH TZ=$TZ LC_ALL=$LC_ALL LANG=$LANG PWD=$PWD HOME=$HOME FOO=$FOO\"\n\
         echo \"umask=$(umask) pwd=$(pwd) host=$(hostname) uid=$(id -u)\"\n\
         echo \"built=$(date -u -d @$SOURCE_DATE_EPOCH +%Y-%m-%dT%H:%M:%S)\"\n\
         touch made; mkdir madedir; echo \"modes=$(stat -c %a made) $(stat -c %a madedir)\"\n\
         locale 2>&1 | grep -c 'Cannot set' || true",
        work.path(),
    );
    s.source_date_epoch = 1_700_000_000;
    s.env.insert("FOO".into(), "bar baz".into());
    let (out, log) = run(&sb, &s).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(
        stdout.contains(
            "SDE=1700000000 TZ=UTC LC_ALL=C.UTF-8 LANG=C.UTF-8 PWD=/build HOME=/tmp FOO=bar baz"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("umask=0022 pwd=/build host=quorum-build"),
        "{stdout}"
    );
    assert!(stdout.contains("built=2023-11-14T22:13:20"), "{stdout}");
    assert!(stdout.contains("modes=644 755"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "0"),
        "locale warnings: {stdout}"
    );
}

#[tokio::test]
async fn invalid_specs_are_errors() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let mut s = spec("true", work.path());
    s.env.insert("SOURCE_DATE_EPOCH".into(), "1".into());
    let mut log = Vec::new();
    let err = sb.run(&s, &mut log).await.unwrap_err();
    assert!(err.to_string().contains("SOURCE_DATE_EPOCH"), "{err}");
    let s = spec("true", &work.path().join("missing"));
    assert!(sb.run(&s, &mut log).await.is_err());
    assert!(bwrap().with_toolchain("/nonexistent/toolchain").is_err());
}

#[tokio::test]
async fn toolchain_dirs_are_read_only_and_on_path() {
    let _machine = MACHINE.read().await;
    let tc = tempfile::tempdir().unwrap();
    std::fs::create_dir(tc.path().join("bin")).unwrap();
    let tool = tc.path().join("bin/quorum-hello");
    std::fs::write(&tool, "#!/bin/sh\necho hello from toolchain\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sb = bwrap().with_toolchain(tc.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = format!(
        "quorum-hello\nif touch {}/x 2>/dev/null; then echo WROTE; fi",
        tc.path().display()
    );
    let (out, log) = run(&sb, &spec(&script, work.path())).await;
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(text(&log, Stream::Stdout).contains("hello from toolchain"));
    assert!(!text(&log, Stream::Stdout).contains("WROTE"));
}

/// Dropping the run future (the DVM cancels the job) kills the step and cleans up too.
#[tokio::test]
async fn cancelling_the_run_kills_the_step() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let m = marker("cancel");
    let s = spec(&format!("# {m}\necho started\nsleep 1000"), work.path());
    let mut log = Vec::new();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(500), sb.run(&s, &mut log)).await;
    assert!(r.is_err(), "the step should still be running");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The kill is synchronous; the kernel tears the pid namespace down right after.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pgrep(&m).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));
}

#[test]
fn missing_bwrap_is_unavailable_with_a_hint() {
    let err = quorum_sandbox::Bubblewrap::detect_at("/nonexistent/bwrap").unwrap_err();
    assert!(
        matches!(err, quorum_sandbox::SandboxError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/bwrap"), "{err}");
}

/// bwrap failing before the step starts is a sandbox error, not a failed step.
#[tokio::test]
async fn setup_failure_is_an_error_not_an_exit_code() {
    let _machine = MACHINE.read().await;
    let tc = tempfile::tempdir().unwrap();
    let sb = bwrap().with_toolchain(tc.path()).unwrap();
    let path = tc.path().to_owned();
    drop(tc);
    let work = tempfile::tempdir().unwrap();
    let mut log = Vec::new();
    let err = sb
        .run(&spec("echo should not run", work.path()), &mut log)
        .await
        .unwrap_err();
    assert!(
        matches!(err, quorum_sandbox::SandboxError::Setup { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(!all(&log).contains("should not run"));
}

/// No capabilities, no new privileges, no nested user namespaces, no host devices.
#[tokio::test]
async fn no_privileges_inside() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status\n\
                  if unshare -U true 2>/dev/null; then echo USERNS; fi\n\
                  if mount -t tmpfs none /build 2>/dev/null; then echo MOUNTED; fi\n\
                  if [ -e /dev/sda ] || [ -e /dev/vda ] || [ -e /dev/mem ]; then echo DEVICES; fi\n\
                  if mknod /build/dev c 1 3 2>/dev/null; then echo MKNOD; fi";
    let (out, log) = run(&sb, &spec(script, work.path())).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
    assert!(stdout.contains("CapBnd:\t0000000000000000"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    for bad in ["USERNS", "MOUNTED", "DEVICES", "MKNOD"] {
        assert!(!stdout.contains(bad), "{bad}: {stdout}");
    }
}

/// Memory (cgroup), /tmp size and file size limits hold.
#[tokio::test]
async fn memory_tmp_and_file_size_limits() {
    let _machine = MACHINE.read().await;
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let mut s = spec(
        "if head -c 3000000 /dev/zero > /tmp/big 2>/dev/null; then echo TMP-UNLIMITED; fi\n\
         if head -c 3000000 /dev/zero > /build/big 2>/dev/null; then echo FILE-UNLIMITED; fi\n\
         echo ok",
        work.path(),
    );
    s.limits.tmp_bytes = 1 << 20;
    s.limits.max_file_bytes = 2 << 20;
    let (out, log) = run(&sb, &s).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(0), "{}", all(&log));
    assert!(stdout.contains("ok"));
    assert!(!stdout.contains("TMP-UNLIMITED"), "{stdout}");
    assert!(!stdout.contains("FILE-UNLIMITED"), "{stdout}");
    assert!(std::fs::metadata(work.path().join("big")).unwrap().len() <= 2 << 20);

    let mut s = spec(
        "python3 -c 'x = bytearray(512 << 20); print(\"ALLOCATED\")'",
        work.path(),
    );
    s.limits.max_memory_bytes = 128 << 20;
    let (out, log) = run(&sb, &s).await;
    assert!(!out.success(), "{out:?}");
    assert!(!text(&log, Stream::Stdout).contains("ALLOCATED"));
    // With a memory cgroup (as here) the OOM killer ends it and the outcome says so; with
    // RLIMIT_AS instead the allocation itself fails.
    if !sb
        .describe()
        .notes
        .iter()
        .any(|n| n.contains("no memory cgroup"))
    {
        assert!(out.memory_limit_hit, "{out:?}\n{}", all(&log));
    }
}
