//! `select:`: which DVMs of the open market a job may be given to (docs/pipeline.md, "Choosing
//! DVMs"). Only the policy as written lives here; judging DVMs against it is the market
//! crate's (`quorum-market`), from what the relays hold.
//!
//! A policy may stand at the top of the file (every job) and in a job; the job's policy
//! replaces the file's criterion by criterion ([`SelectPolicy::over`]), so a job can tighten
//! the price and keep the file's trust rule.

use serde::{Deserialize, Serialize};

/// A selection policy. Every criterion is optional; a DVM must pass all that are given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<TrustRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer: Option<Preference>,
    /// For quorum jobs: the members that pass must come from at least this many distinct
    /// confirmed operators; `None`: the job's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diversity: Option<u32>,
}

impl SelectPolicy {
    /// `self` (a job's policy) over `base` (the file's): each criterion the job gives wins.
    pub fn over(&self, base: &SelectPolicy) -> SelectPolicy {
        SelectPolicy {
            trusted: self.trusted.clone().or_else(|| base.trusted.clone()),
            record: self.record.clone().or_else(|| base.record.clone()),
            price: self.price.clone().or_else(|| base.price.clone()),
            prefer: self.prefer.or(base.prefer),
            diversity: self.diversity.or(base.diversity),
        }
    }
}

/// `trusted`: a DVM is trusted when its key or its confirmed operator's key is on the
/// maintainer's list, or within `follows` hops of the maintainer's follow list (either
/// suffices when both are given); and, when `rank` is given, when the median rank that the
/// maintainer's declared NIP-85 providers give it (or its operator) is at least `rank`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRule {
    /// Whose list, follows and providers count (hex); `None`: the repository's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The `d` of the NIP-51 set (kind 30000) of trusted DVM or operator keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// Most follow hops from the maintainer (1: followed by the maintainer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<u32>,
    /// Minimum NIP-85 rank, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
}

/// `record`: minimum observed figures over the DVM's last `jobs` jobs on the relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRule {
    /// How many of the DVM's most recent jobs count.
    pub jobs: u32,
    /// Minimum percent answered with a result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<u32>,
    /// Minimum percent answered at all within the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u32>,
    /// Minimum percent of attested quorum jobs in which the DVM agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<u32>,
    /// Take the figures from this record keeper's NIP-85 assertions (hex) instead of
    /// computing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorder: Option<String>,
}

/// How many jobs `record` looks at when the file does not say.
pub const DEFAULT_RECORD_JOBS: u32 = 20;

impl Default for RecordRule {
    fn default() -> Self {
        RecordRule {
            jobs: DEFAULT_RECORD_JOBS,
            success: None,
            uptime: None,
            agreement: None,
            recorder: None,
        }
    }
}

/// `price`: the most the job may cost, in sats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_job: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u64>,
}

/// `prefer`: the order in which the DVMs that pass are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preference {
    /// Lowest median duration first (DVMs without a record last).
    Fastest,
    /// Lowest price first.
    Cheapest,
    /// Highest trust first: on the list, then fewest follow hops, then highest rank.
    MostTrusted,
}

impl Preference {
    pub const NAMES: [&'static str; 3] = ["fastest", "cheapest", "most-trusted"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fastest" => Some(Preference::Fastest),
            "cheapest" => Some(Preference::Cheapest),
            "most-trusted" => Some(Preference::MostTrusted),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_criteria_replace_the_files_one_by_one() {
        let file = SelectPolicy {
            trusted: Some(TrustRule {
                follows: Some(2),
                ..TrustRule::default()
            }),
            price: Some(PriceRule {
                per_job: Some(100),
                per_second: None,
            }),
            prefer: Some(Preference::Cheapest),
            ..SelectPolicy::default()
        };
        let job = SelectPolicy {
            price: Some(PriceRule {
                per_job: Some(5),
                per_second: None,
            }),
            diversity: Some(3),
            ..SelectPolicy::default()
        };
        let merged = job.over(&file);
        assert_eq!(merged.trusted, file.trusted);
        assert_eq!(merged.price, job.price);
        assert_eq!(merged.prefer, Some(Preference::Cheapest));
        assert_eq!(merged.diversity, Some(3));
    }
}
