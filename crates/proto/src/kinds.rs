//! The event kinds Quorum CI defines, and the NIP-90 ranges it relies on.
//!
//! Our job kinds take one contiguous block that no registry, NIP or known DVM claims:
//! requests 5700–5719, results 6700–6719 (result = request + 1000). `docs/protocol.md` §5
//! lists each kind with an example.

use nostr::Kind;

/// First and last job-request kind of the NIP-90 range.
pub const JOB_REQUEST_RANGE: std::ops::RangeInclusive<u16> = 5000..=5999;
/// First and last job-result kind of the NIP-90 range.
pub const JOB_RESULT_RANGE: std::ops::RangeInclusive<u16> = 6000..=6999;
/// NIP-90 job feedback, shared by all job kinds.
pub const JOB_FEEDBACK: Kind = Kind::Custom(7000);

/// Quorum CI's block of job-request kinds.
pub const OUR_BLOCK: std::ops::RangeInclusive<u16> = 5700..=5719;

/// Quorum CI's block of regular, non-job event kinds (release binding, approvals, quorum mode).
/// No NIP, registry entry or spec we know of uses it. Each kind's constant lives next to its
/// type: [`crate::release::RELEASE_BINDING`] (8700), [`crate::approval`] (8701–8703),
/// [`crate::mandate::MANDATE`] (8704), [`crate::agreement`] (8705–8708),
/// [`crate::quorum_msg`] (8709–8715); 8716–8719 are free.
pub const EVENT_BLOCK: std::ops::RangeInclusive<u16> = 8700..=8719;

/// Every kind of [`EVENT_BLOCK`] in use, in order.
pub fn event_block_kinds() -> Vec<Kind> {
    use crate::{agreement, approval, mandate, quorum_msg, release};
    let mut kinds = vec![
        release::RELEASE_BINDING,
        approval::APPROVAL_REQUEST,
        approval::APPROVAL,
        approval::REJECTION,
        mandate::MANDATE,
        agreement::COMMITMENT,
        agreement::REVEAL,
        agreement::EQUIVOCATION_PROOF,
        agreement::QUORUM_ATTESTATION,
    ];
    kinds.extend(quorum_msg::MessageKind::ALL.map(quorum_msg::MessageKind::kind));
    kinds
}

/// A job kind of Quorum CI's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Run a whole pipeline (served by router DVMs).
    RunPipeline,
    /// Watch a repository and report the commit to build (git watcher DVMs).
    WatchSource,
    /// Run one step (build, test) in a sandbox and upload its artifacts (runner DVMs).
    RunStep,
    /// Publish a release (NIP-94, release events).
    Publish,
    /// Deploy released artifacts.
    Deploy,
}

impl JobKind {
    pub const ALL: [JobKind; 5] = [
        JobKind::RunPipeline,
        JobKind::WatchSource,
        JobKind::RunStep,
        JobKind::Publish,
        JobKind::Deploy,
    ];

    /// The request kind number.
    pub const fn request_number(self) -> u16 {
        match self {
            JobKind::RunPipeline => 5700,
            JobKind::WatchSource => 5701,
            JobKind::RunStep => 5702,
            JobKind::Publish => 5703,
            JobKind::Deploy => 5704,
        }
    }

    pub fn request_kind(self) -> Kind {
        Kind::from_u16(self.request_number())
    }

    pub fn result_kind(self) -> Kind {
        Kind::from_u16(self.request_number() + 1000)
    }

    /// The name used in docs, logs and CLI flags.
    pub const fn name(self) -> &'static str {
        match self {
            JobKind::RunPipeline => "run-pipeline",
            JobKind::WatchSource => "watch-source",
            JobKind::RunStep => "run-step",
            JobKind::Publish => "publish",
            JobKind::Deploy => "deploy",
        }
    }

    pub fn from_request_kind(kind: Kind) -> Option<JobKind> {
        JobKind::ALL
            .into_iter()
            .find(|job| job.request_number() == kind.as_u16())
    }
}

/// Whether `kind` is a NIP-90 job request kind (5000–5999).
pub fn is_job_request(kind: Kind) -> bool {
    JOB_REQUEST_RANGE.contains(&kind.as_u16())
}

/// Whether `kind` is a NIP-90 job result kind (6000–6999).
pub fn is_job_result(kind: Kind) -> bool {
    JOB_RESULT_RANGE.contains(&kind.as_u16())
}

/// The result kind that answers a request kind (request + 1000), if `request` is one.
pub fn result_kind_for(request: Kind) -> Option<Kind> {
    is_job_request(request).then(|| Kind::from_u16(request.as_u16() + 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_kinds_stay_inside_our_block() {
        for job in JobKind::ALL {
            assert!(OUR_BLOCK.contains(&job.request_number()), "{job:?}");
            assert_eq!(
                job.result_kind().as_u16(),
                job.request_number() + 1000,
                "{job:?}"
            );
            assert_eq!(JobKind::from_request_kind(job.request_kind()), Some(job));
        }
    }

    #[test]
    fn event_kinds_are_distinct_regular_and_inside_their_block() {
        let kinds = event_block_kinds();
        let numbers: Vec<u16> = kinds.iter().map(|k| k.as_u16()).collect();
        assert_eq!(numbers, (8700..=8715).collect::<Vec<u16>>());
        for kind in kinds {
            assert!(EVENT_BLOCK.contains(&kind.as_u16()), "{kind}");
            assert!(kind.is_regular(), "{kind}");
        }
    }

    #[test]
    fn result_kind_only_for_requests() {
        assert_eq!(
            result_kind_for(Kind::from_u16(5500)),
            Some(Kind::from_u16(6500))
        );
        assert_eq!(result_kind_for(Kind::from_u16(6500)), None);
        assert_eq!(result_kind_for(Kind::TextNote), None);
    }
}
