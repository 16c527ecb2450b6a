//! The wrapper's canonical result: what a wrapper commits to in the quorum agreement for the
//! content an ordinary DVM answered with (protocol §15.8).
//!
//! By default the result is one file named `result` whose sha256 is the sha256 of the content's
//! UTF-8 bytes, so members agree exactly when their inner DVMs answered with the same bytes. If
//! the content is a JSON object with a top-level `artifacts` list whose every entry is
//! `{"name": …, "sha256": <64 hex>, "url": <http(s) URL>}` (or `"urls": [...]`; names unique,
//! at least one), those files are the result instead — but only once the wrapper has fetched
//! each file and hashed its bytes ([`Canonical::Claimed`]): a DVM's word about hashes is not
//! attested. Anything else falls back to the single `result` file.

use std::collections::BTreeSet;

use quorum_proto::agreement::BuildResult;
use quorum_proto::blossom::Sha256Hex;
use sha2::{Digest, Sha256};

/// The file name of a whole-content result.
pub const RESULT_FILE: &str = "result";

/// What a member commits to for the inner DVM's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canonical {
    /// One file, `result`, hashing the content's bytes.
    Whole(BuildResult),
    /// Files the content claims, each with where to fetch it: the wrapper downloads and
    /// re-hashes every one before it commits to [`Canonical::Claimed`]'s result.
    Claimed(Vec<ClaimedFile>),
}

/// One artifact an inner DVM's content claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedFile {
    pub name: String,
    pub sha256: Sha256Hex,
    pub urls: Vec<String>,
}

impl Canonical {
    /// The result to commit to (for `Claimed`, once every file was fetched and matched).
    pub fn result(&self) -> BuildResult {
        match self {
            Canonical::Whole(result) => result.clone(),
            Canonical::Claimed(files) => files.iter().fold(BuildResult::new(), |r, f| {
                r.with_file(f.name.clone(), f.sha256)
            }),
        }
    }
}

/// The result a member commits to for the inner DVM's `content`.
pub fn canonical_result(content: &str) -> Canonical {
    artifacts(content).map_or_else(
        || Canonical::Whole(whole_content(content)),
        Canonical::Claimed,
    )
}

/// One file, `result`, hashing the content's bytes.
pub fn whole_content(content: &str) -> BuildResult {
    BuildResult::new().with_file(
        RESULT_FILE,
        Sha256Hex::from_bytes(Sha256::digest(content.as_bytes()).into()),
    )
}

/// The content's own `artifacts` list, if it has a well-formed one naming where each file is.
fn artifacts(content: &str) -> Option<Vec<ClaimedFile>> {
    let value: serde_json::Value = serde_json::from_str(content).ok()?;
    let list = value.as_object()?.get("artifacts")?.as_array()?;
    if list.is_empty() {
        return None;
    }
    let mut names = BTreeSet::new();
    let mut files = Vec::new();
    for entry in list {
        let entry = entry.as_object()?;
        let name = entry.get("name")?.as_str()?;
        let sha256 = Sha256Hex::parse(entry.get("sha256")?.as_str()?).ok()?;
        if name.is_empty() || !names.insert(name) {
            return None;
        }
        let mut urls: Vec<String> = entry
            .get("url")
            .and_then(|u| u.as_str())
            .map(str::to_string)
            .into_iter()
            .collect();
        if let Some(list) = entry.get("urls").and_then(|u| u.as_array()) {
            urls.extend(list.iter().filter_map(|u| u.as_str()).map(str::to_string));
        }
        urls.retain(|u| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")));
        if urls.is_empty() {
            // A hash nobody can fetch is only a claim: commit to the content itself instead.
            return None;
        }
        files.push(ClaimedFile {
            name: name.to_string(),
            sha256,
            urls,
        });
    }
    Some(files)
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
            files(&canonical_result("abc").result()),
            [("result".to_string(), abc.to_string())]
        );
        assert_ne!(canonical_result("abc"), canonical_result("abc "));
    }

    #[test]
    fn an_artifacts_list_names_the_files() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let content = format!(
            r#"{{"artifacts":[{{"name":"out/b","sha256":"{b}","url":"http://h/b"}},{{"name":"out/a","sha256":"{a}","urls":["https://h/a","ftp://no"]}}],"log":"x"}}"#
        );
        let canonical = canonical_result(&content);
        let Canonical::Claimed(claimed) = &canonical else {
            panic!("claimed files: {canonical:?}");
        };
        assert_eq!(claimed[1].urls, ["https://h/a"], "only http(s) URLs count");
        assert_eq!(
            files(&canonical.result()),
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
            // A hash with nowhere to fetch it from is only the DVM's word.
            format!(r#"{{"artifacts":[{{"name":"a","sha256":"{good}"}}]}}"#),
            format!(r#"{{"artifacts":[{{"name":"a","sha256":"{good}","url":"file:///etc/x"}}]}}"#),
        ];
        for content in cases {
            assert_eq!(
                canonical_result(&content),
                Canonical::Whole(whole_content(&content)),
                "{content}"
            );
        }
    }
}
