//! Artifact collection: deterministic packing and path-traversal rejection.

mod common;

use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use common::*;
use quorum_sandbox::pack::{PackError, collect_artifacts};
use quorum_sandbox::{StepSpec, Stream};

const BUILD: &str = "mkdir -p dist/sub dist/empty
echo hello > dist/a.txt
printf '#!/bin/sh\\necho hi\\n' > dist/run.sh
chmod 700 dist/run.sh
chmod 600 dist/a.txt
ln -s a.txt dist/link
ln -s /etc/passwd dist/abs-link
echo data > dist/sub/b
date -u -d @$SOURCE_DATE_EPOCH +%FT%TZ > dist/built-at
echo single > app.bin
";

fn build_spec(work: &Path) -> StepSpec {
    let mut s = spec(BUILD, work);
    s.source_date_epoch = 1_700_000_000;
    s
}

/// Same step, two work dirs, different wall-clock times: byte-identical artifacts.
#[tokio::test]
async fn packing_is_reproducible_across_dirs_and_times() {
    let sb = bwrap();
    let (w1, w2, o1, o2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (out, log) = run(&sb, &build_spec(w1.path())).await;
    assert!(out.success(), "{}", all(&log));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (out, log) = run(&sb, &build_spec(w2.path())).await;
    assert!(out.success(), "{}", all(&log));

    let pats = ["dist", "app.bin"];
    let a1 = collect_artifacts(w1.path(), &pats, 1_700_000_000, o1.path()).unwrap();
    let a2 = collect_artifacts(w2.path(), &pats, 1_700_000_000, o2.path()).unwrap();
    assert_eq!(a1.len(), 2);
    let names: Vec<_> = a1.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["app.bin", "dist.tar"]);
    for (x, y) in a1.iter().zip(&a2) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.sha256, y.sha256, "{} differs", x.name);
        assert_eq!(x.size, y.size);
        assert_eq!(
            std::fs::read(&x.path).unwrap(),
            std::fs::read(&y.path).unwrap()
        );
    }
    // Files are taken in place; packed dirs land in out_dir.
    assert!(a1[0].path.starts_with(w1.path().canonicalize().unwrap()));
    assert!(a1[1].path.starts_with(o1.path()));

    // What is inside: sorted, normalised, links kept as links.
    let mut ar = tar::Archive::new(std::fs::File::open(&a1[1].path).unwrap());
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().display().to_string();
        assert_eq!(h.mtime().unwrap(), 1_700_000_000, "{path}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.username().unwrap(), Some(""));
        assert_eq!(h.groupname().unwrap(), Some(""));
        let kind = h.entry_type();
        let detail = if kind.is_symlink() {
            format!("-> {}", e.link_name().unwrap().unwrap().display())
        } else {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            s.trim_end().to_owned()
        };
        seen.push(format!("{path} {:o} {detail}", h.mode().unwrap()));
    }
    assert_eq!(
        seen,
        [
            "dist 755 ",
            "dist/a.txt 644 hello",
            "dist/abs-link 777 -> /etc/passwd",
            "dist/built-at 644 2023-11-14T22:13:20Z",
            "dist/empty 755 ",
            "dist/link 777 -> a.txt",
            "dist/run.sh 755 #!/bin/sh\necho hi",
            "dist/sub 755 ",
            "dist/sub/b 644 data",
        ]
    );
}

/// Wall-clock output differs between runs; SOURCE_DATE_EPOCH is what makes it reproducible.
#[tokio::test]
async fn wall_clock_differs_source_date_epoch_does_not() {
    let sb = bwrap();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let w = tempfile::tempdir().unwrap();
        let mut s = spec("date +%s.%N; echo \"sde=$SOURCE_DATE_EPOCH\"", w.path());
        s.source_date_epoch = 42;
        let (out, log) = run(&sb, &s).await;
        assert!(out.success());
        outputs.push(text(&log, Stream::Stdout));
    }
    let (a, b): (Vec<_>, Vec<_>) = (outputs[0].lines().collect(), outputs[1].lines().collect());
    assert_ne!(a[0], b[0], "wall clock should differ");
    assert_eq!(a[1], "sde=42");
    assert_eq!(a[1], b[1]);
}

#[test]
fn traversal_and_escapes_are_rejected() {
    let work = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("key");
    std::fs::write(&secret, "nsec").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let w = work.path();
    std::fs::create_dir(w.join("sub")).unwrap();
    std::fs::write(w.join("sub/ok"), "ok").unwrap();
    symlink(&secret, w.join("key-link")).unwrap();
    symlink(outside.path(), w.join("dir-link")).unwrap();
    symlink("../../..", w.join("sub/up")).unwrap();
    symlink("ok", w.join("sub/inner-link")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let collect = |p: &str| collect_artifacts(w, &[p], 0, out.path());

    assert!(matches!(collect("../x"), Err(PackError::ParentDir { .. })));
    assert!(matches!(
        collect("sub/../../x"),
        Err(PackError::ParentDir { .. })
    ));
    assert!(matches!(
        collect("/etc/passwd"),
        Err(PackError::Absolute { .. })
    ));
    assert!(matches!(collect("."), Err(PackError::WorkDir { .. })));
    assert!(matches!(
        collect("missing"),
        Err(PackError::NotFound { .. })
    ));
    for p in [
        "key-link",
        "dir-link",
        "dir-link/key",
        "sub/up",
        "sub/up/etc/passwd",
    ] {
        match collect(p) {
            Err(e @ PackError::Escapes { .. }) => {
                assert!(e.to_string().contains(p), "error does not name {p}: {e}")
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    // A symlink that stays inside is fine and yields the target's content.
    let a = collect("sub/inner-link").unwrap();
    assert_eq!(a[0].size, 2);
    // A glob that picks up an escaping link fails as a whole.
    assert!(matches!(collect("*-link"), Err(PackError::Escapes { .. })));
    assert!(matches!(
        collect("nothing*"),
        Err(PackError::NoMatch { .. })
    ));
    // Packing a dir with an escaping link inside stores the link, not what it points to.
    let a = collect("sub").unwrap();
    let tar = std::fs::read(&a[0].path).unwrap();
    assert!(!tar.windows(4).any(|x| x == b"nsec"));
}

#[test]
fn globs_select_files() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::create_dir_all(w.join("target/release/deps")).unwrap();
    std::fs::write(w.join("target/release/app"), "bin").unwrap();
    std::fs::write(w.join("target/release/app.d"), "dep").unwrap();
    std::fs::write(w.join("target/release/deps/x.rlib"), "rlib").unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = collect_artifacts(w, &["target/release/app*"], 0, out.path()).unwrap();
    let names: Vec<_> = a.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["target/release/app", "target/release/app.d"]);
    let a = collect_artifacts(w, &["target/**/*.rlib"], 0, out.path()).unwrap();
    assert_eq!(a[0].name, "target/release/deps/x.rlib");
    // sha256("rlib"), as `printf rlib | sha256sum` prints it.
    assert_eq!(
        a[0].sha256,
        "5e98457726bed4aae7c323ba59bdff9fa5569f53d57039a1bbb99959124bc9a2"
    );
}
