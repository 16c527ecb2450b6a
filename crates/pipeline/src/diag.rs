//! Diagnostics: what is wrong with a pipeline file, where, and how to fix it.
//!
//! Every problem found while parsing or linting becomes one [`Diagnostic`] carrying the file
//! name, a 1-based line and column, a message and (usually) a hint. They render like a
//! compiler's:
//!
//! ```text
//! .quorum/pipeline.yml:12:7: error: job "test" needs unknown job "biuld"
//!   hint: did you mean "build"?
//! ```
//!
//! The exact wording is part of the interface: the fixture tests compare it byte for byte so
//! that messages stay stable and readable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is. Almost every lint is an error: a pipeline decides what runs where
/// with whose secrets, so "probably fine" is not good enough to go ahead. A warning (an
/// unpinned build image outside quorum mode) still compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Severity::Error => f.write_str("error"),
            Severity::Warning => f.write_str("warning"),
        }
    }
}

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file name the caller passed to [`crate::parse`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All the problems found in one pipeline file, sorted by position. Never empty when returned
/// as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct Diagnostics {
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.to_string());
    }
    out
}

impl Diagnostics {
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.diagnostics.iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.diagnostics.iter()
    }
}

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Collects diagnostics for one file.
pub(crate) struct Sink {
    file: String,
    found: Vec<Diagnostic>,
}

impl Sink {
    pub fn new(file: &str) -> Self {
        Sink {
            file: file.to_owned(),
            found: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            severity: Severity::Error,
            message: message.into(),
            hint,
        });
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            severity: Severity::Warning,
            message: message.into(),
            hint,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.found.iter().any(|d| d.severity == Severity::Error)
    }

    /// How many errors so far: a part of the file checked clean when this did not grow.
    pub fn error_count(&self) -> usize {
        self.found.len()
    }

    /// Sorted by position, then message, so that the output does not depend on the order in
    /// which the checks ran; exact duplicates (one cause reached twice) are dropped.
    pub fn finish(mut self) -> Diagnostics {
        self.found.sort_by(|a, b| {
            (a.line, a.column, &a.message, &a.hint).cmp(&(b.line, b.column, &b.message, &b.hint))
        });
        self.found.dedup();
        Diagnostics {
            diagnostics: self.found,
        }
    }
}

/// Levenshtein distance in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The candidate closest to `wrong`, if it is close enough to be a plausible typo: at most one
/// edit for short words, two for longer ones. Ties go to the alphabetically first candidate so
/// that the hint is stable.
pub(crate) fn closest<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = if wrong.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (distance(wrong, c), c))
        .filter(|(d, c)| *d <= limit && *d < c.chars().count())
        .min()
        .map(|(_, c)| c)
}

/// `did you mean "x"?`, or `fallback` when nothing is close.
pub(crate) fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    fallback: impl FnOnce() -> Option<String>,
) -> Option<String> {
    match closest(wrong, candidates) {
        Some(c) => Some(format!("did you mean \"{c}\"?")),
        None => fallback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("build", "build"), 0);
        assert_eq!(distance("biuld", "build"), 2);
        assert_eq!(distance("nedds", "needs"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_prefers_small_distance_then_name() {
        assert_eq!(closest("biuld", ["build", "test"]), Some("build"));
        assert_eq!(closest("tst", ["test", "lint"]), Some("test"));
        assert_eq!(closest("deploy", ["build", "test"]), None);
        // a one-letter id is not "close" to every other one-letter id
        assert_eq!(closest("a", ["b"]), None);
        assert_eq!(closest("abcd", ["abce", "abcf"]), Some("abce"));
    }

    #[test]
    fn renders_like_a_compiler() {
        let mut sink = Sink::new(".quorum/pipeline.yml");
        sink.error(
            Pos {
                line: 12,
                column: 7,
            },
            "job \"test\" needs unknown job \"biuld\"",
            Some("did you mean \"build\"?".into()),
        );
        sink.error(Pos { line: 2, column: 1 }, "first", None);
        let all = sink.finish();
        assert_eq!(
            all.to_string(),
            ".quorum/pipeline.yml:2:1: error: first\n\
             .quorum/pipeline.yml:12:7: error: job \"test\" needs unknown job \"biuld\"\n  \
             hint: did you mean \"build\"?"
        );
    }
}
