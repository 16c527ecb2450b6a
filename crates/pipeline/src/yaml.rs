//! A small YAML tree that remembers where every node starts.
//!
//! We build it from `yaml-rust2`'s parser events rather than deserialising with serde so that
//! (1) every key and value keeps its line and column for diagnostics, (2) duplicate keys are
//! kept and reported by the linter together with every other problem instead of one silently
//! overwriting the other, and (3) the YAML features a pipeline file has no use for — anchors,
//! aliases, tags, several documents, non-string keys — are refused with a position instead of
//! changing meaning in surprising ways.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::Pos;

/// Deeper nesting is refused. A pipeline needs about six levels; the cap keeps the work (and
/// the recursion in dropping the tree) bounded on hostile input.
pub(crate) const MAX_NESTING: usize = 64;

/// A scalar exactly as written, with its position.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub value: String,
    /// Unquoted: only plain scalars can be `null`, booleans or numbers.
    pub plain: bool,
    pub pos: Pos,
}

impl Scalar {
    /// `~`, `null` or nothing at all, unquoted.
    pub fn is_null(&self) -> bool {
        self.plain && matches!(self.value.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>, Pos),
    /// Entries in file order, duplicates included.
    Map(Vec<(Scalar, Node)>, Pos),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar(s) => s.pos,
            Node::Seq(_, pos) | Node::Map(_, pos) => *pos,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar(s) if s.is_null())
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Node::Scalar(s) if s.is_null() => "nothing",
            Node::Scalar(_) => "a scalar",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }
}

/// A YAML problem: the file is not a YAML document we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    pub hint: Option<String>,
}

fn pos(mark: Marker) -> Pos {
    // yaml-rust2 lines are 1-based and columns 0-based.
    Pos {
        line: mark.line().max(1),
        column: mark.col() + 1,
    }
}

enum Frame {
    Seq(Vec<Node>, Pos),
    Map(Vec<(Scalar, Node)>, Pos, Option<Scalar>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    error: Option<SyntaxError>,
}

impl Builder {
    fn fail(&mut self, at: Pos, message: &str, hint: Option<&str>) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                pos: at,
                message: message.to_owned(),
                hint: hint.map(str::to_owned),
            });
        }
    }

    /// Hands a finished node to the container being built, or makes it the document.
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(entries, _, key)) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => match node {
                    Node::Scalar(s) => *key = Some(s),
                    other => self.fail(
                        other.pos(),
                        "mapping keys must be plain strings",
                        Some("write the key as a string, e.g. `name: value`"),
                    ),
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = pos(mark);
        let unsupported_anchor = "YAML anchors and aliases are not supported in pipeline files";
        let anchor_hint =
            Some("repeat the value instead; a pipeline should read the same top to bottom");
        let tag_hint =
            Some("remove the `!tag`; values are read as plain strings, numbers and booleans");
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(
                        at,
                        "a pipeline file holds one YAML document, found a second one",
                        Some(
                            "remove the `---` line and everything after it, or merge the documents",
                        ),
                    );
                }
            }
            Event::Alias(_) => self.fail(at, unsupported_anchor, anchor_hint),
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 {
                    self.fail(at, unsupported_anchor, anchor_hint);
                } else if tag.is_some() {
                    self.fail(
                        at,
                        "YAML tags are not supported in pipeline files",
                        tag_hint,
                    );
                } else {
                    self.push(Node::Scalar(Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                        pos: at,
                    }));
                }
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if anchor != 0 {
                    self.fail(at, unsupported_anchor, anchor_hint);
                } else if tag.is_some() {
                    self.fail(
                        at,
                        "YAML tags are not supported in pipeline files",
                        tag_hint,
                    );
                } else if matches!(self.stack.last(), Some(Frame::Map(_, _, None))) {
                    self.fail(
                        at,
                        "mapping keys must be plain strings",
                        Some("write the key as a string, e.g. `name: value`"),
                    );
                } else if matches!(event, Event::SequenceStart(..)) {
                    self.stack.push(Frame::Seq(Vec::new(), at));
                } else {
                    self.stack.push(Frame::Map(Vec::new(), at, None));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, start)) => self.push(Node::Seq(items, start)),
                Some(Frame::Map(entries, start, _)) => {
                    // A block mapping's start mark lies after its first key; point at the
                    // first key instead, which is where a reader looks. A flow mapping's
                    // mark is its `{`, before the first key, and stays.
                    let start = entries.first().map_or(start, |(k, _)| k.pos.min(start));
                    self.push(Node::Map(entries, start))
                }
                // The parser balances its events; an unbalanced end would be a parser bug,
                // which we report rather than panic on.
                None => self.fail(at, "unbalanced YAML structure", None),
            },
        }
    }
}

/// Parses `text` as one YAML document. An empty file (or one with only comments) is `null`.
pub(crate) fn load(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // We pull events ourselves instead of calling `Parser::load`, which recurses once per
    // nesting level and overflows the stack on a few hundred kilobytes of `- - - - …`. Pulling
    // also lets us stop at the first problem, and see (and refuse) a second document.
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: pos(*e.marker()),
            message: format!("invalid YAML: {}", e.info()),
            hint: None,
        })?;
        let end = event == Event::StreamEnd;
        builder.on_event(event, mark);
        if builder.stack.len() > MAX_NESTING {
            builder.fail(
                pos(mark),
                &format!("the YAML is nested more than {MAX_NESTING} levels deep"),
                Some("a pipeline file needs a handful of levels; flatten it"),
            );
        }
        if let Some(e) = builder.error {
            return Err(e);
        }
        if end {
            break;
        }
    }
    Ok(builder.root.unwrap_or(Node::Scalar(Scalar {
        value: String::new(),
        plain: true,
        pos: Pos { line: 1, column: 1 },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(node: &Node) -> Vec<(String, usize, usize)> {
        match node {
            Node::Map(entries, _) => entries
                .iter()
                .map(|(k, _)| (k.value.clone(), k.pos.line, k.pos.column))
                .collect(),
            _ => panic!("not a map: {node:?}"),
        }
    }

    #[test]
    fn keeps_positions_and_duplicates() {
        let node = load("a: 1\nb:\n  c: x\na: 2\n").expect("valid");
        assert_eq!(
            keys(&node),
            vec![("a".into(), 1, 1), ("b".into(), 2, 1), ("a".into(), 4, 1)]
        );
        let Node::Map(entries, _) = &node else {
            unreachable!()
        };
        assert_eq!(keys(&entries[1].1), vec![("c".into(), 3, 3)]);
    }

    #[test]
    fn empty_file_is_null() {
        assert!(load("").expect("valid").is_null());
        assert!(load("# only a comment\n").expect("valid").is_null());
    }

    #[test]
    fn refuses_anchors_tags_documents_and_complex_keys() {
        for (text, line, message) in [
            ("a: &x 1\nb: *x\n", 1, "anchors"),
            ("a: !!str 1\n", 1, "tags"),
            ("a: 1\n---\nb: 2\n", 2, "second"),
            ("? [a, b]\n: 1\n", 1, "keys must be plain"),
            ("a: [1, 2\n", 2, "invalid YAML"),
            ("a: 'open\n", 1, "invalid YAML"),
            ("a: b: c\n", 1, "invalid YAML"),
        ] {
            let err = load(text).expect_err(text);
            assert!(err.message.contains(message), "{text:?}: {err:?}");
            assert_eq!(err.pos.line, line, "{text:?}: {err:?}");
        }
    }

    #[test]
    fn nesting_is_capped_without_recursion() {
        let ok = format!(
            "a: {}1{}",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert!(load(&ok).is_ok());
        for deep in [
            format!("a: {}", "[".repeat(100_000)),
            format!("a:\n  {}x", "- ".repeat(100_000)),
            format!("a: {}x", "{b: ".repeat(100_000)),
        ] {
            // Refused by our cap, or earlier by the scanner's own limit on flow nesting.
            let err = load(&deep).expect_err("too deep");
            assert!(
                err.message.contains("nested more than") || err.message.contains("recursion"),
                "{err:?}"
            );
            assert!(err.pos.line <= 2, "{err:?}");
        }
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let node = load("a: 'true'\nb: true\n").expect("valid");
        let Node::Map(entries, _) = node else {
            unreachable!()
        };
        let plain: Vec<bool> = entries
            .iter()
            .map(|(_, v)| matches!(v, Node::Scalar(s) if s.plain))
            .collect();
        assert_eq!(plain, vec![false, true]);
    }
}
