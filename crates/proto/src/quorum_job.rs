//! A job request served by a quorum: the params that turn an ordinary NIP-90 request (a run
//! step, or any kind a wrapper DVM forwards) into one that `n` members build independently and
//! sign together, and the release binding the members derive from what they agreed on.
//!
//! ```text
//! ["param", "mandate", "<8704 event id>"]                 required: the mandate members act under
//! ["param", "commit",  "<40/64 hex>"]                     required: the commit the job is about
//! ["param", "release", "<30617 coordinate>", "<run id>", "<job id>"]
//!                                                          optional: also sign a release binding
//! ["param", "source",  "<30617 event id>", "<30618 event id>", "<clone URL>"]
//!                                                          the maintainer-signed evidence the
//!                                                          job's source rests on, and the URL
//!                                                          the commit is fetched from (§16)
//! ```
//!
//! One request `p`-tags every member of the mandate. Each member answers with its own result,
//! and the quorum key signs the attestation (8708) and, when asked, the release binding (8700).

use std::str::FromStr;

use nostr::{EventId, PublicKey, UnsignedEvent};
use serde::{Deserialize, Serialize};

use crate::agreement::BuildResult;
use crate::approval::ArtifactDigest;
use crate::blossom::Sha256Hex;
use crate::nip34::RepoCoordinate;
use crate::nip90::{JobParam, JobRequest};
use crate::release::{Attestation, ReleaseBinding};

pub const PARAM_MANDATE: &str = "mandate";
pub const PARAM_COMMIT: &str = "commit";
pub const PARAM_RELEASE: &str = "release";
pub const PARAM_SOURCE: &str = "source";

/// Why a request's quorum params do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumJobError {
    #[error("param {param}: {reason}")]
    BadParam { param: &'static str, reason: String },
    #[error("a quorum request needs a `{0}` param")]
    Missing(&'static str),
    #[error("param {0} given twice")]
    Duplicate(&'static str),
}

/// What a member needs to take part in a quorum job, beyond the job itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumJobParams {
    /// The mandate (8704) the members act under; they fetch and check it.
    pub mandate: EventId,
    /// The commit the job is about (named by the attestation).
    pub commit: String,
    /// When set, the members also sign a release binding of the agreed files.
    pub release: Option<ReleaseParams>,
    /// The announcement (30617) and maintainer-signed state (30618) that tie the request's
    /// repository URL and commit to the maintainers (`crate::source`). Members refuse a build
    /// without it; a watcher quorum's session (which reads the state itself) has none.
    pub source: Option<SourceRef>,
}

/// The NIP-34 evidence a quorum job's source rests on: the announcement and state event ids,
/// and the repository URL (one of the announcement's `clone` URLs) the commit is fetched from.
/// A run step's `repo` input must be that URL; a DVM job's request has no repository of its
/// own, and its members fetch the pipeline from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub announcement: EventId,
    pub state: EventId,
    pub url: String,
}

/// What a release binding names besides the agreed files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseParams {
    pub repo: RepoCoordinate,
    /// The run id (§9).
    pub run: String,
    /// The pipeline job; artifacts are named `JOB/PATH` in the binding.
    pub job: String,
    /// The approval gates (pipeline job ids) the release depends on, sorted: members sign the
    /// binding only after each passed, and it names their approval requests (8701).
    pub gates: Vec<String>,
}

impl QuorumJobParams {
    /// The quorum params of `request`: `None` for an ordinary request (no `mandate` param).
    pub fn from_request(request: &JobRequest) -> Result<Option<Self>, QuorumJobError> {
        let single = |name: &'static str| -> Result<Option<&JobParam>, QuorumJobError> {
            let mut found = request.params.iter().filter(|p| p.key == name);
            let first = found.next();
            if found.next().is_some() {
                return Err(QuorumJobError::Duplicate(name));
            }
            Ok(first)
        };
        let Some(mandate) = single(PARAM_MANDATE)? else {
            return Ok(None);
        };
        let mandate = EventId::from_hex(mandate.value()).map_err(|e| bad(PARAM_MANDATE, e))?;
        let commit = single(PARAM_COMMIT)?
            .ok_or(QuorumJobError::Missing(PARAM_COMMIT))?
            .value()
            .to_string();
        if !is_object_id(&commit) {
            return Err(bad(
                PARAM_COMMIT,
                format!("{commit:?} is not a full 40- or 64-hex lowercase commit id"),
            ));
        }
        let release = match single(PARAM_RELEASE)? {
            None => None,
            Some(param) => {
                let [repo, run, job, gates @ ..] = param.values.as_slice() else {
                    return Err(bad(
                        PARAM_RELEASE,
                        "expected at least three values: repository coordinate, run id, job \
                         id (then the approval gates the release depends on)",
                    ));
                };
                if gates.iter().any(String::is_empty) {
                    return Err(bad(PARAM_RELEASE, "an approval gate's job id is empty"));
                }
                if gates.windows(2).any(|pair| pair[0] >= pair[1]) {
                    return Err(bad(
                        PARAM_RELEASE,
                        "approval gates are listed twice or out of order (sorted)",
                    ));
                }
                let repo = RepoCoordinate::from_str(repo).map_err(|e| bad(PARAM_RELEASE, e))?;
                if run.len() != 64 || !run.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(PARAM_RELEASE, "the run id is not 64 hex"));
                }
                if job.is_empty() {
                    return Err(bad(PARAM_RELEASE, "the job id is empty"));
                }
                Some(ReleaseParams {
                    repo,
                    run: run.clone(),
                    job: job.clone(),
                    gates: gates.to_vec(),
                })
            }
        };
        let source = match single(PARAM_SOURCE)? {
            None => None,
            Some(param) => {
                let [announcement, state, url] = param.values.as_slice() else {
                    return Err(bad(
                        PARAM_SOURCE,
                        "expected three values: announcement (30617) and state (30618) event \
                         ids, and the repository URL",
                    ));
                };
                if url.is_empty() {
                    return Err(bad(PARAM_SOURCE, "the repository URL is empty"));
                }
                Some(SourceRef {
                    announcement: EventId::from_hex(announcement)
                        .map_err(|e| bad(PARAM_SOURCE, format!("announcement: {e}")))?,
                    state: EventId::from_hex(state)
                        .map_err(|e| bad(PARAM_SOURCE, format!("state: {e}")))?,
                    url: url.clone(),
                })
            }
        };
        Ok(Some(QuorumJobParams {
            mandate,
            commit,
            release,
            source,
        }))
    }

    /// Adds these params to `request` (replacing any `commit` param it has: they must agree).
    pub fn apply(&self, request: &mut JobRequest) {
        request.params.retain(|p| {
            ![PARAM_MANDATE, PARAM_COMMIT, PARAM_RELEASE, PARAM_SOURCE].contains(&p.key.as_str())
        });
        request
            .params
            .push(JobParam::new(PARAM_MANDATE, self.mandate.to_hex()));
        request
            .params
            .push(JobParam::new(PARAM_COMMIT, self.commit.clone()));
        if let Some(release) = &self.release {
            request.params.push(JobParam {
                key: PARAM_RELEASE.into(),
                values: [
                    release.repo.to_string(),
                    release.run.clone(),
                    release.job.clone(),
                ]
                .into_iter()
                .chain(release.gates.iter().cloned())
                .collect(),
            });
        }
        if let Some(source) = &self.source {
            request.params.push(JobParam {
                key: PARAM_SOURCE.into(),
                values: vec![
                    source.announcement.to_hex(),
                    source.state.to_hex(),
                    source.url.clone(),
                ],
            });
        }
    }
}

/// The release binding a quorum signs after agreeing on `files`: every field comes from the
/// request (`release`, `commit`) and the agreement (the files, the attestation's id and time),
/// so each signer derives the same event. The binding's one attestation is the quorum
/// attestation itself, with the quorum key as its builder.
///
/// A release that depends on approval gates (`release.gates`) is signed only after they
/// passed: `approvals` are their requests (8701), and the binding is dated no earlier than
/// the latest of them (`approved_at`), which every member reads alike.
pub fn release_binding(
    release: &ReleaseParams,
    commit: &str,
    files: &BuildResult,
    attestation: &UnsignedEvent,
) -> Result<UnsignedEvent, crate::release::ReleaseError> {
    release_binding_after(release, commit, files, attestation, &[])
}

/// [`release_binding`] naming the approval requests (8701) `approvals` of the gates that
/// passed; dated at the attestation or the latest request, whichever is later.
pub fn release_binding_after(
    release: &ReleaseParams,
    commit: &str,
    files: &BuildResult,
    attestation: &UnsignedEvent,
    approvals: &[&nostr::Event],
) -> Result<UnsignedEvent, crate::release::ReleaseError> {
    let mut attestation = attestation.clone();
    let attestation_id = attestation.id();
    let quorum = attestation.pubkey;
    let artifacts = files
        .files
        .iter()
        .map(|(name, sha)| ArtifactDigest::new(format!("{}/{}", release.job, name), *sha))
        .collect();
    let binding = ReleaseBinding::new(
        release.repo.clone(),
        commit.to_string(),
        release.run.clone(),
        artifacts,
        vec![Attestation {
            result: attestation_id,
            builder: quorum,
        }],
    )?
    .with_approvals(approvals.iter().map(|e| e.id).collect());
    let created_at = approvals
        .iter()
        .map(|e| e.created_at)
        .fold(attestation.created_at, |a, b| a.max(b));
    Ok(binding.to_event_builder(created_at)?.build(quorum))
}

/// The next step's request of a quorum chain (the request carries a `chain` param), as the
/// quorum signs it after `attestation`: the chain's next step pinned to the attestation as its
/// upstream result (`chain::next_request`), dated with the attestation's `created_at` and
/// authored by the quorum key, so every agreeing member derives the same event. `None` when the
/// request carries no chain.
pub fn next_step_request(
    request_event: &nostr::Event,
    request: &JobRequest,
    attestation: &UnsignedEvent,
) -> Option<Result<UnsignedEvent, crate::chain::ChainError>> {
    let mut attestation = attestation.clone();
    let pinned = attestation.id();
    let next = crate::chain::next_request(request_event, request, pinned)?;
    Some(next.map(|next| {
        next.to_event_builder()
            .custom_created_at(attestation.created_at)
            .build(attestation.pubkey)
    }))
}

/// What a member reports about its part in a quorum job, next to its own result (a runner puts
/// it in its step report). Informational: consumers check the signed attestation, not this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumReport {
    /// The quorum key (hex).
    pub quorum: String,
    /// The mandate's event id.
    pub mandate: String,
    /// The quorum attestation (8708), when the quorum signed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    /// The release binding (8700), when one was asked for and signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// In a quorum chain: the next step's request, signed by the quorum key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Members (hex) whose reveals back every agreed file.
    #[serde(default)]
    pub agreed: Vec<String>,
    /// Members who revealed something else.
    #[serde(default)]
    pub disagreed: Vec<String>,
    /// Members who did not reveal in time.
    #[serde(default)]
    pub silent: Vec<String>,
    /// Why nothing was signed, when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The result tag naming the quorum key a member acted for: `["quorum", <quorum hex>]`.
pub const TAG_QUORUM: &str = "quorum";
/// The result tag carrying a member's [`QuorumReport`] as JSON (a wrapper's result, whose
/// content is the inner DVM's and cannot carry it).
pub const TAG_QUORUM_REPORT: &str = "quorum-report";
/// The marker of a result's `e` tag naming the quorum attestation (8708).
pub const MARKER_ATTESTATION: &str = "attestation";

impl QuorumReport {
    /// The result tags for this report: `quorum` when the mandate named a key, the
    /// attestation's `e` when one was signed, and the report itself.
    pub fn to_result_tags(&self) -> Vec<nostr::Tag> {
        let mut tags = Vec::new();
        if !self.quorum.is_empty() {
            tags.push(crate::tags::custom_tag(TAG_QUORUM, [self.quorum.clone()]));
        }
        if let Some(attestation) = &self.attestation {
            tags.push(crate::tags::custom_tag(
                "e",
                [
                    attestation.clone(),
                    String::new(),
                    MARKER_ATTESTATION.to_string(),
                ],
            ));
        }
        if let Ok(json) = serde_json::to_string(self) {
            tags.push(crate::tags::custom_tag(TAG_QUORUM_REPORT, [json]));
        }
        tags
    }

    /// The report a result event carries in its `quorum-report` tag, if any.
    pub fn from_result_tags(result: &nostr::Event) -> Option<Self> {
        crate::tags::first_tag(result, TAG_QUORUM_REPORT)
            .and_then(|values| values.get(1))
            .and_then(|json| serde_json::from_str(json).ok())
    }
}

/// The per-file result of `(name, sha256 hex)` pairs, as members commit to it.
pub fn build_result<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<BuildResult, QuorumJobError> {
    let mut result = BuildResult::new();
    for (name, sha) in files {
        let sha = Sha256Hex::parse(sha).map_err(|e| bad("artifact", format!("{name}: {e}")))?;
        result = result.with_file(name, sha);
    }
    Ok(result)
}

/// Hex of a key list, sorted, for reports.
pub fn hex_list<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Vec<String> {
    let mut list: Vec<String> = keys.into_iter().map(PublicKey::to_hex).collect();
    list.sort();
    list
}

fn bad(param: &'static str, reason: impl ToString) -> QuorumJobError {
    QuorumJobError::BadParam {
        param,
        reason: reason.to_string(),
    }
}

fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{Keys, Timestamp};

    fn request() -> JobRequest {
        JobRequest::new(nostr::Kind::from_u16(5702)).unwrap()
    }

    fn params() -> QuorumJobParams {
        QuorumJobParams {
            mandate: EventId::all_zeros(),
            commit: "ab".repeat(20),
            release: Some(ReleaseParams {
                repo: RepoCoordinate::new(Keys::generate().public_key(), "app"),
                run: "cd".repeat(32),
                job: "build".into(),
                gates: vec!["approve".into()],
            }),
            source: Some(SourceRef {
                announcement: EventId::all_zeros(),
                state: EventId::all_zeros(),
                url: "https://git.example/app.git".into(),
            }),
        }
    }

    #[test]
    fn params_round_trip_and_plain_requests_have_none() {
        let mut req = request();
        assert_eq!(QuorumJobParams::from_request(&req).unwrap(), None);
        let p = params();
        p.apply(&mut req);
        assert_eq!(
            QuorumJobParams::from_request(&req).unwrap(),
            Some(p.clone())
        );
        // Applying twice does not duplicate.
        p.apply(&mut req);
        assert_eq!(QuorumJobParams::from_request(&req).unwrap(), Some(p));
    }

    #[test]
    fn malformed_params_name_the_problem() {
        let cases: Vec<(Vec<JobParam>, &str)> = vec![
            (vec![JobParam::new("mandate", "xyz")], "param mandate"),
            (
                vec![JobParam::new("mandate", EventId::all_zeros().to_hex())],
                "needs a `commit` param",
            ),
            (
                vec![
                    JobParam::new("mandate", EventId::all_zeros().to_hex()),
                    JobParam::new("commit", "main"),
                ],
                "not a full",
            ),
            (
                vec![
                    JobParam::new("mandate", EventId::all_zeros().to_hex()),
                    JobParam::new("mandate", EventId::all_zeros().to_hex()),
                ],
                "given twice",
            ),
            (
                vec![
                    JobParam::new("mandate", EventId::all_zeros().to_hex()),
                    JobParam::new("commit", "ab".repeat(20)),
                    JobParam::new("release", "30617:nothex:app"),
                ],
                "three values",
            ),
            (
                vec![
                    JobParam::new("mandate", EventId::all_zeros().to_hex()),
                    JobParam::new("commit", "ab".repeat(20)),
                    JobParam::new("source", EventId::all_zeros().to_hex()),
                ],
                "three values",
            ),
            (
                vec![
                    JobParam::new("mandate", EventId::all_zeros().to_hex()),
                    JobParam::new("commit", "ab".repeat(20)),
                    JobParam {
                        key: "source".into(),
                        values: vec![
                            "xyz".into(),
                            EventId::all_zeros().to_hex(),
                            "https://git.example/app.git".into(),
                        ],
                    },
                ],
                "announcement",
            ),
        ];
        for (params, expected) in cases {
            let mut req = request();
            req.params = params;
            let err = QuorumJobParams::from_request(&req).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn the_next_step_of_a_quorum_chain_is_the_same_for_every_member_and_pinned() {
        use crate::chain::{ChainStep, PARAM_CHAIN, PARAM_UPSTREAM_RESULT, encode};
        let members: Vec<PublicKey> = (0..3).map(|_| Keys::generate().public_key()).collect();
        let step = |job: &str| {
            let mut r = request();
            r.providers = members.clone();
            r.params.push(JobParam::new("job", job));
            params().apply(&mut r);
            r
        };
        let mut head = step("build");
        head.params.push(JobParam::new(
            PARAM_CHAIN,
            encode(&[ChainStep::of(&step("package"))]),
        ));
        let head_event = head
            .to_event_builder()
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let quorum_keys = Keys::generate();
        let quorum = quorum_keys.public_key();
        let attestation = nostr::EventBuilder::new(nostr::Kind::Custom(8708), "")
            .custom_created_at(Timestamp::from(1_800_000_000))
            .build(quorum);
        let a = next_step_request(&head_event, &head, &attestation)
            .unwrap()
            .unwrap();
        let b = next_step_request(&head_event, &head, &attestation)
            .unwrap()
            .unwrap();
        assert_eq!(a.clone().id(), b.clone().id());
        assert_eq!(a.pubkey, quorum);
        assert_eq!(a.created_at, attestation.created_at);
        let parsed = JobRequest::from_event(&a.clone().sign_with_keys(&quorum_keys).unwrap())
            .expect("a job request");
        assert_eq!(parsed.providers, members, "every member, in order");
        assert_eq!(parsed.param_value("job"), Some("package"));
        assert_eq!(
            parsed.param_value(PARAM_UPSTREAM_RESULT),
            Some(attestation.clone().id().to_hex().as_str())
        );
        assert!(QuorumJobParams::from_request(&parsed).unwrap().is_some());
        assert_eq!(
            parsed.param_value(PARAM_CHAIN),
            None,
            "the chain ends there"
        );
        // A request without a chain has no next step.
        assert!(next_step_request(&head_event, &step("x"), &attestation).is_none());
    }

    #[test]
    fn the_release_binding_is_the_same_for_every_member_and_names_the_attestation() {
        let quorum_keys = Keys::generate();
        let quorum = quorum_keys.public_key();
        let attestation = nostr::EventBuilder::new(nostr::Kind::Custom(8708), "")
            .custom_created_at(Timestamp::from(1_800_000_000))
            .build(quorum);
        let files = build_result([("app", "11".repeat(32).as_str())]).unwrap();
        let p = params();
        let release = p.release.as_ref().unwrap();
        let a = release_binding(release, &p.commit, &files, &attestation).unwrap();
        let b = release_binding(release, &p.commit, &files, &attestation).unwrap();
        assert_eq!(a.clone().id(), b.clone().id());
        assert_eq!(a.pubkey, quorum);
        assert_eq!(a.created_at, attestation.created_at);
        let binding = ReleaseBinding::from_event(&a.sign_with_keys(&quorum_keys).unwrap()).unwrap();
        assert_eq!(binding.artifacts[0].name, "build/app");
        assert_eq!(binding.attestations[0].builder, quorum);
        assert_eq!(binding.attestations[0].result, attestation.clone().id());
    }
}
