//! Log lines out of a step: splitting raw output into lines with a cap on line length and on
//! total bytes (a step printing `yes` forever must not fill memory or disk), and redacting
//! secrets before anything leaves this crate.

use crate::SecretString;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
    /// A note from the sandbox itself (timeout, truncation), not from the step.
    System,
}

/// One line of step output, without its newline, secrets replaced by `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
}

/// Where log lines go. Called from the task running the step, in output order per stream.
pub trait LogSink: Send {
    /// Take one line. Must not block for long: the step's pipes are not read meanwhile.
    fn line(&mut self, line: LogLine);
}

impl LogSink for Vec<LogLine> {
    fn line(&mut self, line: LogLine) {
        self.push(line);
    }
}

/// Forwarding into a channel; lines are dropped once the receiver is gone. Unbounded is fine
/// here because the total is capped by [`ResourceLimits::max_log_bytes`](crate::ResourceLimits).
impl LogSink for tokio::sync::mpsc::UnboundedSender<LogLine> {
    fn line(&mut self, line: LogLine) {
        let _ = self.send(line);
    }
}

/// A [`LogSink`] from a closure: `FnSink(|l| println!("{}", l.text))`.
pub struct FnSink<F>(pub F);

impl<F: FnMut(LogLine) + Send> LogSink for FnSink<F> {
    fn line(&mut self, line: LogLine) {
        (self.0)(line)
    }
}

/// Replaces secret values by `***`.
pub(crate) struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a SecretString>) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for s in secrets {
            let v = s.expose();
            if v.is_empty() {
                continue;
            }
            needles.push(v.to_owned());
            // Output is split into lines, so a multi-line secret can only be seen line by line.
            if v.contains('\n') {
                needles.extend(
                    v.split('\n')
                        .map(|l| l.trim_end_matches('\r'))
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { needles }
    }

    pub(crate) fn longest(&self) -> usize {
        self.needles.first().map_or(0, String::len)
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), "***");
            }
        }
        out
    }

    /// After a line was cut: drop a tail that could be the start of a secret, so a cut never
    /// reveals part of one.
    fn trim_secret_prefix_tail(&self, text: &mut String) {
        for n in &self.needles {
            for k in (1..n.len().min(text.len() + 1)).rev() {
                if n.is_char_boundary(k) && text.ends_with(&n[..k]) {
                    text.truncate(text.len() - k);
                    break;
                }
            }
        }
    }
}

/// Splits one stream into lines, keeping at most `keep` bytes of a line in memory.
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
    /// Inside an over-long line whose first part was already emitted: skip to the newline.
    discarding: bool,
    /// Bytes retained per line before cutting: the line cap plus the longest secret, so that a
    /// secret straddling the cut is still seen whole by the redactor.
    keep: usize,
}

/// A raw line and whether it was cut.
pub(crate) struct RawLine<'a> {
    pub bytes: &'a [u8],
    pub cut: bool,
    /// Bytes of the line not retained (for accounting).
    pub skipped: usize,
}

impl LineSplitter {
    pub(crate) fn new(max_line: usize, longest_secret: usize) -> Self {
        LineSplitter {
            pending: Vec::new(),
            discarding: false,
            keep: max_line.max(1) + longest_secret,
        }
    }

    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut dyn FnMut(RawLine<'_>)) {
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (head, rest) = (&chunk[..i], &chunk[i + 1..]);
                    if self.discarding {
                        // The rest of an over-long line, newline included: only counted.
                        self.discarding = false;
                        out(RawLine {
                            bytes: &[],
                            cut: true,
                            skipped: head.len() + 1,
                        });
                    } else {
                        let room = self.keep - self.pending.len();
                        let take = head.len().min(room);
                        self.pending.extend_from_slice(&head[..take]);
                        let skipped = head.len() - take;
                        out(RawLine {
                            bytes: &self.pending,
                            cut: skipped > 0,
                            skipped,
                        });
                        self.pending.clear();
                    }
                    chunk = rest;
                }
                None => {
                    if self.discarding {
                        out(RawLine {
                            bytes: &[],
                            cut: true,
                            skipped: chunk.len(),
                        });
                    } else {
                        let room = self.keep - self.pending.len();
                        let take = chunk.len().min(room);
                        self.pending.extend_from_slice(&chunk[..take]);
                        if take < chunk.len() {
                            // The line is longer than we keep: emit its start now, skip the rest.
                            out(RawLine {
                                bytes: &self.pending,
                                cut: true,
                                skipped: chunk.len() - take,
                            });
                            self.pending.clear();
                            self.discarding = true;
                        }
                    }
                    chunk = &[];
                }
            }
        }
    }

    /// End of stream: a last line without newline.
    pub(crate) fn finish(&mut self, out: &mut dyn FnMut(RawLine<'_>)) {
        if !self.pending.is_empty() {
            out(RawLine {
                bytes: &self.pending,
                cut: false,
                skipped: 0,
            });
            self.pending.clear();
        }
    }
}

/// Applies redaction and the caps, then hands lines to the sink.
pub(crate) struct LogGate<'a> {
    sink: &'a mut dyn LogSink,
    redactor: Redactor,
    max_line: usize,
    max_bytes: u64,
    pub(crate) used: u64,
    pub(crate) dropped: u64,
    pub(crate) truncated: bool,
}

impl<'a> LogGate<'a> {
    pub(crate) fn new(
        sink: &'a mut dyn LogSink,
        redactor: Redactor,
        max_line: usize,
        max_bytes: u64,
    ) -> Self {
        LogGate {
            sink,
            redactor,
            max_line: max_line.max(1),
            max_bytes,
            used: 0,
            dropped: 0,
            truncated: false,
        }
    }

    pub(crate) fn longest_secret(&self) -> usize {
        self.redactor.longest()
    }

    /// Deliver one line: redacted, cut to the line cap, unless the total cap is reached.
    pub(crate) fn emit(&mut self, stream: Stream, raw: RawLine<'_>) {
        if raw.bytes.is_empty() && raw.cut {
            // Continuation of an over-long line that was already emitted: only count it.
            self.dropped += raw.skipped as u64;
            return;
        }
        let read = raw.bytes.len() as u64 + raw.skipped as u64 + 1;
        if self.truncated {
            self.dropped += read;
            return;
        }
        let lossy = String::from_utf8_lossy(raw.bytes);
        let lossy = lossy.strip_suffix('\r').unwrap_or(&lossy);
        let mut text = self.redactor.redact(lossy);
        let mut cut = raw.cut;
        if text.len() > self.max_line {
            let mut end = self.max_line;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            cut = true;
        }
        if cut {
            self.redactor.trim_secret_prefix_tail(&mut text);
            text.push_str(" [line truncated]");
        }
        let cost = text.len() as u64 + 1;
        if self.used + cost > self.max_bytes {
            self.truncated = true;
            self.dropped += read;
            return;
        }
        self.used += cost;
        self.sink.line(LogLine { stream, text });
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// A note from the sandbox; not counted against the cap (there are only a few).
    pub(crate) fn system(&mut self, text: String) {
        let text = self.redactor.redact(&text);
        self.sink.line(LogLine {
            stream: Stream::System,
            text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(max_line: usize, max_bytes: u64, secrets: &[&str], chunks: &[&[u8]]) -> Vec<String> {
        let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::new(*s)).collect();
        let mut sink: Vec<LogLine> = Vec::new();
        {
            let mut gate = LogGate::new(&mut sink, Redactor::new(&secrets), max_line, max_bytes);
            let mut split = LineSplitter::new(max_line, gate.longest_secret());
            for c in chunks {
                split.push(c, &mut |l| gate.emit(Stream::Stdout, l));
            }
            split.finish(&mut |l| gate.emit(Stream::Stdout, l));
        }
        sink.into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn splits_across_chunks() {
        assert_eq!(
            run(100, 1000, &[], &[b"ab", b"c\nd", b"e\n", b"f"]),
            ["abc", "de", "f"]
        );
    }

    #[test]
    fn redacts_secret_split_across_chunks() {
        assert_eq!(
            run(100, 1000, &["hunter2"], &[b"pw=hun", b"ter2 ok\n"]),
            ["pw=*** ok"]
        );
    }

    #[test]
    fn long_lines_are_cut_without_leaking_secret_prefix() {
        let out = run(8, 1000, &["SECRETVALUE"], &[b"abcdeSECRETVALUExyz\nok\n"]);
        assert_eq!(out[0], "abcde*** [line truncated]");
        assert_eq!(out[1], "ok");
        let out = run(8, 1000, &["SECRETVALUE"], &[b"abcdefgSECRE"]);
        assert!(!out[0].contains('S'), "{out:?}");
    }

    #[test]
    fn total_cap() {
        let out = run(100, 10, &[], &[b"1234\n5678\nabcd\n"]);
        assert_eq!(out, ["1234", "5678"]);
    }

    #[test]
    fn endless_line_is_bounded() {
        let chunk = vec![b'y'; 4096];
        let mut chunks: Vec<&[u8]> = vec![&chunk; 100];
        chunks.push(b"\nend\n");
        let out = run(16, 1000, &[], &chunks);
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with("yyyyyyyyyyyyyyyy [line"));
        assert_eq!(out[1], "end");
    }
}
