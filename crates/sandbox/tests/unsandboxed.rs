//! The development backend: same env, timeout and log handling, no isolation.

mod common;

use std::time::Duration;

use common::*;
use quorum_sandbox::{Sandbox, Stream, Unsandboxed};

#[tokio::test]
async fn runs_with_the_same_env_and_says_it_is_not_isolated() {
    let sb = Unsandboxed::new();
    let info = sb.describe();
    assert_eq!(info.name, "unsandboxed");
    assert!(!info.isolated);
    assert!(info.notes[0].contains("UNSANDBOXED"));

    let work = tempfile::tempdir().unwrap();
    let mut s = spec(
        "echo \"SDE=$SOURCE_DATE_EPOCH TZ=$TZ LC_ALL=$LC_ALL umask=$(umask)\"\n\
         echo \"pwd=$(pwd)\"\necho \"secret=$TOKEN\"\necho out > made\nexit 3",
        work.path(),
    );
    s.source_date_epoch = 86400;
    s.secrets
        .insert("TOKEN".into(), "unsandboxed-secret".into());
    let (out, log) = run(&sb, &s).await;
    let stdout = text(&log, Stream::Stdout);
    assert_eq!(out.exit_code, Some(3));
    assert!(
        stdout.contains("SDE=86400 TZ=UTC LC_ALL=C.UTF-8 umask=0022"),
        "{stdout}"
    );
    let canon = work.path().canonicalize().unwrap();
    assert!(
        stdout.contains(&format!("pwd={}", canon.display())),
        "{stdout}"
    );
    assert!(stdout.contains("secret=***"), "{stdout}");
    assert!(!stdout.contains("unsandboxed-secret"));
    assert_eq!(
        std::fs::read_to_string(work.path().join("made")).unwrap(),
        "out\n"
    );
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let sb = Unsandboxed::new();
    let work = tempfile::tempdir().unwrap();
    let m = marker("unsandboxed-timeout");
    let mut s = spec(
        &format!("# {m}\n( trap '' TERM; while :; do sleep 1; done ) &\nsleep 1000"),
        work.path(),
    );
    s.timeout = Duration::from_secs(1);
    let (out, _) = run(&sb, &s).await;
    assert!(out.timed_out);
    assert_eq!(out.signal, Some(9));
    assert!(out.duration < Duration::from_secs(5), "{out:?}");
    assert!(pgrep(&m).is_empty(), "left over: {:?}", pgrep(&m));
}
