//! The pipeline reference (`docs/pipeline.md`) is tested against the linter, so it cannot
//! drift: every `yaml` block lints clean, every `yaml should-fail` block fails with exactly
//! the diagnostics of the `text` block after it, and every key the linter accepts is
//! documented. Run with `QUORUM_BLESS=1` to rewrite those `text` blocks after a deliberate
//! change to the linter's wording, then review the diff.

use std::path::PathBuf;

use quorum_pipeline::{KNOWN_KEYS, PIPELINE_PATH, parse};

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline.md")
}

/// A fenced block of the reference: its info string, its body, and where the body's lines
/// are in the file (0-based, end exclusive), for rewriting.
struct Block {
    info: String,
    body: String,
    first_line: usize,
    end_line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end] != "```" {
                end += 1;
            }
            assert!(end < lines.len(), "unclosed block at line {}", i + 1);
            found.push(Block {
                info: info.trim().to_string(),
                body: lines[start..end].iter().map(|l| format!("{l}\n")).collect(),
                first_line: start,
                end_line: end,
            });
            i = end + 1;
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn every_example_in_the_reference_does_what_the_reference_says() {
    let path = reference_path();
    let text = std::fs::read_to_string(&path).expect("read docs/pipeline.md");
    let blocks = blocks(&text);
    let mut failures = Vec::new();
    // (line range, new body) of text blocks to rewrite when blessing.
    let mut rewrites: Vec<(usize, usize, String)> = Vec::new();
    let (mut clean, mut failing) = (0, 0);
    for (index, block) in blocks.iter().enumerate() {
        let at = block.first_line;
        match block.info.as_str() {
            "yaml" => {
                clean += 1;
                if let Err(diagnostics) = parse(PIPELINE_PATH, &block.body) {
                    failures.push(format!(
                        "docs/pipeline.md:{at}: this example should lint clean:\n{diagnostics}"
                    ));
                }
            }
            "yaml should-fail" => {
                failing += 1;
                let actual = match parse(PIPELINE_PATH, &block.body) {
                    Ok(_) => {
                        failures.push(format!(
                            "docs/pipeline.md:{at}: this example should fail, but lints clean"
                        ));
                        continue;
                    }
                    Err(diagnostics) => format!("{diagnostics}\n"),
                };
                let Some(expected) = blocks.get(index + 1).filter(|b| b.info == "text") else {
                    failures.push(format!(
                        "docs/pipeline.md:{at}: a should-fail example needs a `text` block after it"
                    ));
                    continue;
                };
                if expected.body != actual {
                    rewrites.push((expected.first_line, expected.end_line, actual.clone()));
                    failures.push(format!(
                        "docs/pipeline.md:{}: the linter says\n{actual}but the reference says\n{}",
                        expected.first_line, expected.body
                    ));
                }
            }
            _ => {}
        }
    }
    assert!(
        clean >= 5 && failing >= 5,
        "the reference lost its examples"
    );
    if std::env::var_os("QUORUM_BLESS").is_some() && !rewrites.is_empty() {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for (start, end, body) in rewrites.into_iter().rev() {
            lines.splice(start..end, body.lines().map(str::to_string));
        }
        std::fs::write(&path, lines.join("\n") + "\n").expect("rewrite docs/pipeline.md");
        return;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_key_the_linter_accepts_is_in_the_reference() {
    let text = std::fs::read_to_string(reference_path()).expect("read docs/pipeline.md");
    let missing: Vec<String> = KNOWN_KEYS
        .iter()
        .flat_map(|(section, keys)| keys.iter().map(move |key| (section, key)))
        .filter(|(_, key)| !text.contains(&format!("`{key}`")))
        .map(|(section, key)| format!("`{key}` ({section})"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/pipeline.md does not document: {}",
        missing.join(", ")
    );
}
