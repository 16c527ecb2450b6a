//! Steps in a build image (`StepSpec::rootfs`): the image is `/`, read-only; the host's `/usr`,
//! `/etc`, home and toolchains are not there; the work dir, private `/tmp` and the rest of the
//! sandbox's guarantees are as without an image. The image is a busybox root made here.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

/// A minimal root: a statically linked busybox as `/bin/*`, an os-release of its own, an
/// empty `/var/tmp`, and a `/usr/bin/image-only` tool.
fn busybox_root(dir: &Path) -> PathBuf {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("these tests need busybox-static: apt-get install busybox-static");
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "usr/bin", "var/tmp", "home/builder"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "cat", "ls", "echo", "touch", "id", "mkdir", "rm", "grep", "sed", "test", "wc",
        "head",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(
        root.join("etc/os-release"),
        "ID=quorum-test-image\nPRETTY_NAME=\"Quorum test image\"\n",
    )
    .unwrap();
    std::fs::write(
        root.join("usr/bin/image-only"),
        "#!/bin/sh\necho from-the-image\n",
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/image-only"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for d in walk(&root) {
        if !d.is_symlink() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    root
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_step_in_an_image_sees_the_image_and_nothing_of_the_host() {
    let _machine = MACHINE.read().await;
    let images = tempfile::tempdir().unwrap();
    let root = busybox_root(images.path());
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("input.txt"), "source\n").unwrap();
    // The host has these; the image does not.
    assert!(Path::new("/usr/bin/bwrap").exists() && Path::new("/etc/debian_version").exists());
    let script = "cat /etc/os-release\n\
         image-only\n\
         for p in /usr/bin/bwrap /usr/bin/git /etc/debian_version /etc/passwd /root /usr/lib; do \
           if [ -e $p ]; then echo \"HOST $p\"; fi; done\n\
         command -v git && echo 'HOST git' || echo 'no git'\n\
         ls /usr/bin | sed 's/^/usr-bin: /'\n\
         touch /etc/x 2>/dev/null && echo 'WROTE /etc' || echo 'etc read-only'\n\
         touch /usr/bin/x 2>/dev/null && echo 'WROTE /usr' || echo 'usr read-only'\n\
         echo scratch > /tmp/t && cat /tmp/t\n\
         echo scratch2 > /var/tmp/t && cat /var/tmp/t\n\
         cat input.txt && echo built > output.txt\n\
         echo \"pwd=$(pwd) home=$HOME\"\n";
    let mut s = spec(script, work.path());
    s.rootfs = Some(root.clone());
    let (out, log) = run(&bwrap(), &s).await;
    let all = all(&log);
    assert_eq!(out.exit_code, Some(0), "{all}");
    assert!(
        all.contains("ID=quorum-test-image"),
        "the image's os-release:\n{all}"
    );
    assert!(all.contains("from-the-image"), "the image's tool:\n{all}");
    assert!(!all.contains("HOST "), "the host shows through:\n{all}");
    assert!(all.contains("no git"), "{all}");
    assert!(all.contains("usr-bin: image-only"), "{all}");
    assert_eq!(
        all.matches("usr-bin: ").count(),
        1,
        "only the image's /usr/bin:\n{all}"
    );
    assert!(
        all.contains("etc read-only") && all.contains("usr read-only"),
        "{all}"
    );
    assert!(
        all.contains("scratch\n") && all.contains("scratch2"),
        "{all}"
    );
    assert!(
        all.contains("source") && all.contains("pwd=/build home=/tmp"),
        "{all}"
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("output.txt")).unwrap(),
        "built\n"
    );
    // Nothing the step did reached the image.
    assert!(!root.join("etc/x").exists() && !root.join("var/tmp/t").exists());

    // The same step without the image runs on the host's toolchain: the difference is real.
    let s = spec(
        "cat /etc/os-release; command -v image-only || echo 'no image-only'",
        work.path(),
    );
    let (out, log) = run(&bwrap(), &s).await;
    let host = common::all(&log);
    assert_eq!(out.exit_code, Some(0), "{host}");
    assert!(
        !host.contains("quorum-test-image") && host.contains("no image-only"),
        "{host}"
    );
}

#[tokio::test]
async fn an_image_keeps_the_sandbox_guarantees() {
    let _machine = MACHINE.read().await;
    let images = tempfile::tempdir().unwrap();
    let root = busybox_root(images.path());
    let work = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("dvm.key"), "nsec1-TEST-KEY").unwrap();
    let script = format!(
        "id -u\n\
         cat {k} 2>/dev/null || echo 'no key'\n\
         ls /sys 2>/dev/null | head -1 | sed 's/^/sys: /'\n\
         cat /proc/net/dev | tail -n +3 | cut -d: -f1 | sed 's/^ */iface /'\n\
         echo \"secret=$TOKEN\"\n",
        k = keys.path().join("dvm.key").display()
    );
    let mut s = spec(&script, work.path());
    s.rootfs = Some(root);
    s.secrets.insert("TOKEN".into(), "hunter2".into());
    let (out, log) = run(&bwrap(), &s).await;
    let all = all(&log);
    assert_eq!(out.exit_code, Some(0), "{all}");
    assert!(all.contains("no key") && !all.contains("nsec1"), "{all}");
    assert!(!all.contains("sys: "), "/sys is not shown:\n{all}");
    assert!(
        all.contains("iface lo") && !all.contains("iface eth"),
        "no network:\n{all}"
    );
    assert!(
        all.contains("secret=***"),
        "secrets arrive, redacted in logs:\n{all}"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let uid = all
            .lines()
            .find_map(|l| l.split(": ").nth(1))
            .unwrap_or_default();
        assert_ne!(uid.trim(), "0", "never host root:\n{all}");
    }
}
