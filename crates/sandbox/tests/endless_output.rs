//! Endless output under bubblewrap. In its own test binary so that the memory measurement is
//! not disturbed by other tests running in the same process.

mod common;

use std::time::Duration;

use common::*;
use quorum_sandbox::Stream;

/// 5. Endless output: the log is capped, the step ends at its timeout, memory stays bounded.
#[tokio::test]
async fn endless_output_is_capped() {
    let sb = bwrap();
    let work = tempfile::tempdir().unwrap();
    let mut s = spec("yes", work.path());
    s.limits.max_log_bytes = 64 << 10;
    s.timeout = Duration::from_secs(3);
    let before = rss_kib();
    let (out, log) = run(&sb, &s).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(out.timed_out, "{out:?}");
    assert!(out.log_truncated);
    assert!(out.log_bytes <= 64 << 10);
    assert!(out.log_dropped_bytes > 1 << 20, "{out:?}");
    let stdout: usize = log
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.len() + 1)
        .sum();
    assert!(stdout <= 64 << 10);
    assert!(
        text(&log, Stream::System).contains("log truncated"),
        "{}",
        text(&log, Stream::System)
    );
    assert!(grown < 64 << 10, "RSS grew by {grown} KiB");

    // One endless line (no newline at all) is cut too.
    let mut s = spec("tr '\\0' x < /dev/zero", work.path());
    s.limits.max_line_bytes = 1000;
    s.timeout = Duration::from_secs(2);
    let (out, log) = run(&sb, &s).await;
    assert!(out.timed_out);
    let lines: Vec<_> = log.iter().filter(|l| l.stream == Stream::Stdout).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].text.len() < 1100);
    assert!(lines[0].text.ends_with("[line truncated]"));
}
