//! The wrapper's canonical result: what a wrapper commits to in the quorum agreement for the
//! content an ordinary DVM answered with (protocol §15.8).
//!
//! By default the result is one file named `result` whose sha256 is the sha256 of the content's
//! UTF-8 bytes, so members agree exactly when their inner DVMs answered with the same bytes. If
//! the content is a JSON object with a top-level `artifacts` list whose every entry is
//! `{"name": …, "sha256": <64 hex>}` (names unique, at least one), those files are the result
//! instead; anything else falls back to the single `result` file.

use std::collections::BTreeSet;

use quorum_proto::agreement::BuildResult;
use quorum_proto::blossom::Sha256Hex;
use sha2::{Digest, Sha256};

/// The file name of a whole-content result.
pub const RESULT_FILE: &str = "result";

/// The result a member commits to for the inner DVM's `content`.
pub fn canonical_result(content: &str) -> BuildResult {
    artifacts(content).unwrap_or_else(|| whole_content(content))
}

/// One file, `result`, hashing the content's bytes.
pub fn whole_content(content: &str) -> BuildResult {
    let digest = hex(&Sha256::digest(content.as_bytes()));
    BuildResult::new().with_file(
        RESULT_FILE,
        Sha256Hex::parse(&digest).expect("a sha256 digest is 64 hex"),
    )
}

/// The content's own `artifacts` list, if it has a well-formed one.
fn artifacts(content: &str) -> Option<BuildResult> {
    let value: serde_json::Value = serde_json::from_str(content).ok()?;
    let list = value.as_object()?.get("artifacts")?.as_array()?;
    if list.is_empty() {
        return None;
    }
    let mut names = BTreeSet::new();
    let mut result = BuildResult::new();
    for entry in list {
        let entry = entry.as_object()?;
        let name = entry.get("name")?.as_str()?;
        let sha = Sha256Hex::parse(entry.get("sha256")?.as_str()?).ok()?;
        if name.is_empty() || !names.insert(name) {
            return None;
        }
        result = result.with_file(name, sha);
    }
    Some(result)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(result: &BuildResult) -> Vec<(String, String)> {
        result
            .files
            .iter()
            .map(|(name, sha)| (name.to_string(), sha.to_string()))
            .collect()
    }

    #[test]
    fn plain_content_is_one_file_hashing_its_bytes() {
        // sha256("abc")
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            files(&canonical_result("abc")),
            [("result".to_string(), abc.to_string())]
        );
        assert_ne!(canonical_result("abc"), canonical_result("abc "));
    }

    #[test]
    fn an_artifacts_list_names_the_files() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let content = format!(
            r#"{{"artifacts":[{{"name":"out/b","sha256":"{b}"}},{{"name":"out/a","sha256":"{a}"}}],"log":"x"}}"#
        );
        assert_eq!(
            files(&canonical_result(&content)),
            [("out/a".to_string(), a), ("out/b".to_string(), b)]
        );
    }

    #[test]
    fn a_malformed_artifacts_list_falls_back_to_the_whole_content() {
        let good = "11".repeat(32);
        let cases = [
            r#"{"artifacts":[]}"#.to_string(),
            r#"{"artifacts":"no"}"#.to_string(),
            r#"{"artifacts":[{"name":"a","sha256":"xyz"}]}"#.to_string(),
            format!(r#"{{"artifacts":[{{"sha256":"{good}"}}]}}"#),
            format!(
                r#"{{"artifacts":[{{"name":"a","sha256":"{good}"}},{{"name":"a","sha256":"{good}"}}]}}"#
            ),
            r#"[{"name":"a"}]"#.to_string(),
        ];
        for content in cases {
            assert_eq!(
                canonical_result(&content),
                whole_content(&content),
                "{content}"
            );
        }
    }
}
