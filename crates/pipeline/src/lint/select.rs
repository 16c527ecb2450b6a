//! The checks of a `select:` policy, at the top of the file or in a job.

use super::Linter;
use crate::diag::{Pos, did_you_mean};
use crate::plan::{JobSpec, Mode};
use crate::select::{
    DEFAULT_RECORD_JOBS, Preference, PriceRule, RecordRule, SelectPolicy, TrustRule,
};
use crate::yaml::Node;

pub(super) const SELECT_KEYS: &[&str] = &["trusted", "record", "price", "prefer", "diversity"];
pub(super) const TRUSTED_KEYS: &[&str] = &["by", "list", "follows", "rank"];
pub(super) const RECORD_KEYS: &[&str] = &["jobs", "success", "uptime", "agreement", "recorder"];
pub(super) const PRICE_KEYS: &[&str] = &["per_job", "per_second"];
pub(super) const PREFERENCES: &[&str] = &Preference::NAMES;

/// The most follow hops a policy may ask for: beyond three, a follow graph reaches most of
/// the network and says little about trust, and fetching it costs many queries.
const MAX_FOLLOW_HOPS: u32 = 3;
/// The most jobs `record` may look back over.
const MAX_RECORD_JOBS: u32 = 1000;

impl Linter {
    /// The policy a job runs under: its own `select` over the file's. An approval gate hires
    /// nobody, so it has none; `diversity` is checked against the job's quorum.
    pub(super) fn job_select(
        &mut self,
        id: &str,
        spec: &JobSpec,
        mode: Mode,
        own: Option<(SelectPolicy, Pos)>,
        file: Option<&SelectPolicy>,
    ) -> Option<SelectPolicy> {
        if matches!(spec, JobSpec::Approval { .. }) {
            return None;
        }
        let pos = own.as_ref().map(|(_, pos)| *pos);
        let policy = match (own, file) {
            (None, None) => return None,
            (Some((own, _)), Some(file)) => own.over(file),
            (Some((own, _)), None) => own,
            (None, Some(file)) => file.clone(),
        };
        if let (Some(diversity), Some(pos)) = (policy.diversity, pos) {
            match mode {
                Mode::Quorum { replicas, .. } if diversity > replicas => self.error(
                    pos,
                    format!(
                        "job \"{id}\" asks for {diversity} distinct operators among {replicas} replicas"
                    ),
                    Some("`diversity` can be at most `replicas`".into()),
                ),
                Mode::Quorum { .. } => {}
                _ => self.error(
                    pos,
                    format!("`select.diversity` in job \"{id}\" only applies to `mode: quorum`"),
                    Some("remove it, or set `mode: quorum` with `replicas` and `threshold`".into()),
                ),
            }
        }
        Some(policy)
    }

    /// A `select` mapping; `None` (with errors reported) when it does not check.
    pub(super) fn select(&mut self, node: &Node, context: &str) -> Option<SelectPolicy> {
        let entries = self.mapping(node, &format!("`select` {context}"), false)?;
        let f = self.fields(entries, SELECT_KEYS, &format!("in `select` {context}"));
        let errors_before = self.sink.error_count();
        let mut policy = SelectPolicy::default();
        if let Some(node) = f.get("trusted") {
            policy.trusted = self.trust_rule(node);
        }
        if let Some(node) = f.get("record") {
            policy.record = self.record_rule(node);
        }
        if let Some(node) = f.get("price") {
            policy.price = self.price_rule(node);
        }
        if let Some(node) = f.get("prefer")
            && let Some(s) = self.scalar(node, "`prefer`", "fastest, cheapest or most-trusted")
        {
            policy.prefer = Preference::parse(&s.value);
            if policy.prefer.is_none() {
                let hint = did_you_mean(&s.value, PREFERENCES.iter().copied(), || {
                    Some("write `fastest`, `cheapest` or `most-trusted`".into())
                });
                self.error(s.pos, format!("unknown preference \"{}\"", s.value), hint);
            }
        }
        if let Some(node) = f.get("diversity") {
            policy.diversity = self.number(node, "`diversity`");
            if policy.diversity == Some(0) {
                self.error(
                    node.pos(),
                    "`diversity` must be at least 1",
                    Some("it counts distinct operators among a quorum's members".into()),
                );
            }
        }
        (self.sink.error_count() == errors_before).then_some(policy)
    }

    fn percent(&mut self, node: &Node, what: &str) -> Option<u32> {
        let n = self.number(node, what)?;
        if n > 100 {
            self.error(
                node.pos(),
                format!("{what} is a percentage, found {n}"),
                Some("write a whole number from 0 to 100".into()),
            );
            return None;
        }
        Some(n)
    }

    fn trust_rule(&mut self, node: &Node) -> Option<TrustRule> {
        let entries = self.mapping(node, "`select.trusted`", false)?;
        let f = self.fields(entries, TRUSTED_KEYS, "in `select.trusted`");
        let mut rule = TrustRule::default();
        if let Some(node) = f.get("by")
            && let Some(s) = self.scalar(node, "`trusted.by`", "an npub or hex key")
        {
            let (value, pos) = (s.value.clone(), s.pos);
            rule.by = self.public_key(&value, pos);
        }
        if let Some(node) = f.get("list") {
            rule.list = self.string(node, "`trusted.list`");
            if rule.list.as_deref() == Some("") {
                self.error(
                    node.pos(),
                    "`trusted.list` is empty",
                    Some("name the `d` of your NIP-51 set, e.g. `quorum-ci-trusted`".into()),
                );
            }
        }
        if let Some(node) = f.get("follows") {
            rule.follows = self.number(node, "`trusted.follows`");
            if let Some(hops) = rule.follows
                && !(1..=MAX_FOLLOW_HOPS).contains(&hops)
            {
                self.error(
                    node.pos(),
                    format!("`trusted.follows` must be 1 to {MAX_FOLLOW_HOPS}, found {hops}"),
                    Some("1: DVMs or operators the maintainer follows; 2: followed by them".into()),
                );
            }
        }
        if let Some(node) = f.get("rank") {
            rule.rank = self.percent(node, "`trusted.rank`");
        }
        if entries.is_empty()
            || (f.get("list").is_none() && f.get("follows").is_none() && f.get("rank").is_none())
        {
            self.error(
                node.pos(),
                "`select.trusted` names no rule",
                Some("give `list`, `follows` or `rank`".into()),
            );
        }
        Some(rule)
    }

    fn record_rule(&mut self, node: &Node) -> Option<RecordRule> {
        let entries = self.mapping(node, "`select.record`", false)?;
        let f = self.fields(entries, RECORD_KEYS, "in `select.record`");
        let mut rule = RecordRule::default();
        if let Some(node) = f.get("jobs") {
            rule.jobs = self
                .number(node, "`record.jobs`")
                .unwrap_or(DEFAULT_RECORD_JOBS);
            if !(1..=MAX_RECORD_JOBS).contains(&rule.jobs) {
                self.error(
                    node.pos(),
                    format!(
                        "`record.jobs` must be 1 to {MAX_RECORD_JOBS}, found {}",
                        rule.jobs
                    ),
                    None,
                );
            }
        }
        if let Some(node) = f.get("success") {
            rule.success = self.percent(node, "`record.success`");
        }
        if let Some(node) = f.get("uptime") {
            rule.uptime = self.percent(node, "`record.uptime`");
        }
        if let Some(node) = f.get("agreement") {
            rule.agreement = self.percent(node, "`record.agreement`");
        }
        if let Some(node) = f.get("recorder")
            && let Some(s) = self.scalar(node, "`record.recorder`", "an npub or hex key")
        {
            let (value, pos) = (s.value.clone(), s.pos);
            rule.recorder = self.public_key(&value, pos);
        }
        if rule.success.is_none() && rule.uptime.is_none() && rule.agreement.is_none() {
            self.error(
                node.pos(),
                "`select.record` sets no minimum",
                Some("give `success`, `uptime` or `agreement` (percent)".into()),
            );
        }
        Some(rule)
    }

    fn price_rule(&mut self, node: &Node) -> Option<PriceRule> {
        let entries = self.mapping(node, "`select.price`", false)?;
        let f = self.fields(entries, PRICE_KEYS, "in `select.price`");
        let rule = PriceRule {
            per_job: f
                .get("per_job")
                .and_then(|n| self.number(n, "`price.per_job`"))
                .map(u64::from),
            per_second: f
                .get("per_second")
                .and_then(|n| self.number(n, "`price.per_second`"))
                .map(u64::from),
        };
        if rule.per_job.is_none() && rule.per_second.is_none() {
            self.error(
                node.pos(),
                "`select.price` sets no maximum",
                Some("give `per_job` or `per_second` (sats)".into()),
            );
        }
        Some(rule)
    }
}
