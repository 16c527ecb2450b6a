//! Judging DVMs against a [`SelectPolicy`] (docs/pipeline.md "Choosing DVMs", docs/protocol.md
//! §17): pure, fed with one mixed list of events (announcements, operator lists, the
//! maintainer's trust list, follow lists and provider list, NIP-85 assertions, and the job
//! record) that [`crate::fetch`] gathers from relays, or a test builds by hand.
//!
//! Every candidate gets a [`Judgement`]: what is known of it (operator, price, figures, trust)
//! and every reason it is excluded. [`Selection::require`] then checks that enough DVMs (and,
//! for a quorum, enough distinct operators) pass, and otherwise fails with a report that names
//! everyone considered and why each was left out.

use std::collections::{BTreeMap, BTreeSet};

use quorum_pipeline::select::{Preference, SelectPolicy};
use quorum_proto::nip85::{median, newest_assertions, rank_providers};
use quorum_proto::nip89::{Announcement, Price};
use quorum_proto::nostr::{Event, PublicKey, ToBech32};
use quorum_proto::operator::{OperatorClaim, confirmed_operators, newest_announcements};
use quorum_proto::trust::{TrustList, follow_distances};
use serde::Serialize;

use crate::record::RecordSource;

/// What trust the maintainer's events give a DVM (through its key or its confirmed operator's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trust {
    /// On the maintainer's trust list.
    pub listed: bool,
    /// Fewest follow hops from the maintainer, if within the policy's reach.
    pub follow_distance: Option<u32>,
    /// Median rank of the maintainer's declared providers, and how many gave one.
    pub rank: Option<u32>,
    pub rank_providers: usize,
}

/// One candidate, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    #[serde(serialize_with = "hex")]
    pub dvm: PublicKey,
    pub name: Option<String>,
    /// The confirmed operator (hex), if any.
    pub operator: Option<String>,
    /// Why the operator is not confirmed, when it is not.
    pub operator_note: Option<String>,
    pub price: Option<Price>,
    /// The most a job may cost at its announced limits, in msats.
    pub max_msats: Option<u64>,
    pub figures: Option<quorum_proto::nip85::Figures>,
    pub trust: Trust,
    /// Why the policy leaves it out; empty: admitted.
    pub excluded: Vec<String>,
}

fn hex<S: serde::Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key.to_hex())
}

impl Judgement {
    pub fn admitted(&self) -> bool {
        self.excluded.is_empty()
    }
}

/// Everyone considered for one job: the admitted first, in the policy's order of preference,
/// then the excluded.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub judged: Vec<Judgement>,
}

/// The policy leaves too few DVMs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{summary}:\n{report}")]
pub struct TooFew {
    pub summary: String,
    /// One line per DVM considered: who, and why it was left out or that it passed.
    pub report: String,
}

/// The npub of a key, shortened for reports.
pub fn short(key: &PublicKey) -> String {
    let npub = key.to_bech32().unwrap_or_else(|_| key.to_hex());
    format!("{}…{}", &npub[..12], &npub[npub.len() - 6..])
}

impl Selection {
    /// The admitted DVMs, in order of preference.
    pub fn admitted(&self) -> Vec<PublicKey> {
        self.judged
            .iter()
            .filter(|j| j.admitted())
            .map(|j| j.dvm)
            .collect()
    }

    /// The admitted DVMs, when at least `needed` pass and, if `diversity` is given, they come
    /// from at least that many distinct confirmed operators (unconfirmed DVMs count for none).
    pub fn require(
        &self,
        needed: usize,
        diversity: Option<usize>,
    ) -> Result<Vec<PublicKey>, TooFew> {
        let admitted: Vec<&Judgement> = self.judged.iter().filter(|j| j.admitted()).collect();
        let report = self.report();
        if admitted.len() < needed.max(1) {
            return Err(TooFew {
                summary: format!(
                    "the selection policy leaves {} of {} DVMs considered; {} needed",
                    admitted.len(),
                    self.judged.len(),
                    needed.max(1)
                ),
                report,
            });
        }
        if let Some(diversity) = diversity {
            let mut by_operator: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            let mut unconfirmed = Vec::new();
            for judgement in &admitted {
                match &judgement.operator {
                    Some(op) => by_operator
                        .entry(op)
                        .or_default()
                        .push(short(&judgement.dvm)),
                    None => unconfirmed.push(short(&judgement.dvm)),
                }
            }
            if by_operator.len() < diversity {
                let mut groups: Vec<String> = by_operator
                    .iter()
                    .map(|(op, dvms)| {
                        let op = PublicKey::from_hex(op)
                            .map(|k| short(&k))
                            .unwrap_or_default();
                        format!("operator {op} runs {}", dvms.join(", "))
                    })
                    .collect();
                if !unconfirmed.is_empty() {
                    groups.push(format!("no confirmed operator: {}", unconfirmed.join(", ")));
                }
                return Err(TooFew {
                    summary: format!(
                        "diversity: the {} DVMs that pass come from {} distinct confirmed \
                         operator(s); {diversity} needed ({})",
                        admitted.len(),
                        by_operator.len(),
                        groups.join("; ")
                    ),
                    report,
                });
            }
        }
        Ok(admitted.into_iter().map(|j| j.dvm).collect())
    }

    /// One line per DVM considered.
    pub fn report(&self) -> String {
        self.judged
            .iter()
            .map(|j| {
                let name = j
                    .name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                let verdict = if j.admitted() {
                    "admitted".to_string()
                } else {
                    format!("excluded: {}", j.excluded.join("; "))
                };
                format!("  {}{name}: {verdict}", short(&j.dvm))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What a judge needs besides the policy: whose trust counts, where figures come from, and
/// the events.
pub struct Judge<'a> {
    pub policy: &'a SelectPolicy,
    /// Whose list, follows and providers count when the policy names no `trusted.by`.
    pub maintainer: Option<PublicKey>,
    pub events: &'a [Event],
    /// Where figures come from (computed or a record keeper's); `None`: no figures known.
    pub record: Option<&'a dyn RecordSource>,
}

impl Judge<'_> {
    /// Judges `candidates` (in the order given, which decides ties of preference).
    pub fn judge(&self, candidates: &[PublicKey]) -> Selection {
        let announcements: BTreeMap<PublicKey, Announcement> =
            newest_announcements(candidates, self.events)
                .into_iter()
                .map(|(k, (_, a))| (k, a))
                .collect();
        let claims = confirmed_operators(candidates, self.events);
        let trust = self.trust_context();
        let mut judged: Vec<Judgement> = Vec::new();
        let mut seen = BTreeSet::new();
        for dvm in candidates {
            if !seen.insert(*dvm) {
                continue;
            }
            let announcement = announcements.get(dvm);
            let claim = claims
                .get(dvm)
                .cloned()
                .unwrap_or(OperatorClaim::Unconfirmed {
                    claimed: None,
                    reason: quorum_proto::operator::UnconfirmedReason::NoAnnouncement,
                });
            let mut judgement = Judgement {
                dvm: *dvm,
                name: announcement.map(|a| a.name.clone()),
                operator: claim.confirmed().map(|o| o.to_hex()),
                operator_note: match &claim {
                    OperatorClaim::Confirmed(_) => None,
                    OperatorClaim::Unconfirmed { reason, .. } => Some(reason.to_string()),
                },
                price: announcement.map(|a| a.offer.price.clone()),
                max_msats: announcement
                    .map(|a| a.offer.price.max_msats(a.offer.limits.max_timeout_secs)),
                figures: None,
                trust: Trust::default(),
                excluded: Vec::new(),
            };
            if let Some(rule) = &self.policy.price {
                match announcement {
                    None => judgement
                        .excluded
                        .push("price: it has no announcement saying what it costs".into()),
                    Some(a) => {
                        let price = &a.offer.price;
                        if let Some(cap) = rule.per_job
                            && price.msats_per_job > cap.saturating_mul(1000)
                        {
                            judgement.excluded.push(format!(
                                "price: {} msats per job is above the cap of {cap} sats",
                                price.msats_per_job
                            ));
                        }
                        if let Some(cap) = rule.per_second
                            && price.msats_per_second > cap.saturating_mul(1000)
                        {
                            judgement.excluded.push(format!(
                                "price: {} msats per second is above the cap of {cap} sats",
                                price.msats_per_second
                            ));
                        }
                    }
                }
            }
            if let Some(rule) = &self.policy.trusted {
                self.judge_trust(&trust, rule, dvm, claim.confirmed(), &mut judgement);
            }
            if let Some(source) = self.record {
                let window = self
                    .policy
                    .record
                    .as_ref()
                    .map(|r| r.jobs)
                    .unwrap_or(quorum_pipeline::select::DEFAULT_RECORD_JOBS);
                judgement.figures = source.figures(dvm, window);
            }
            if let Some(rule) = &self.policy.record {
                // A DVM with no observed job passes: a newcomer must be able to start. Its
                // figures show that it has none.
                if let Some(f) = &judgement.figures {
                    let mut below =
                        |what: &str, value: Option<u32>, min: Option<u32>, over: u32| {
                            if let (Some(min), Some(value)) = (min, value)
                                && value < min
                            {
                                judgement.excluded.push(format!(
                                    "record: {what} {value}% over {over} jobs is below {min}%"
                                ));
                            }
                        };
                    below("success", Some(f.success), rule.success, f.jobs);
                    below("uptime", Some(f.uptime), rule.uptime, f.jobs);
                    below("agreement", f.agreement, rule.agreement, f.agreement_jobs);
                }
            }
            judged.push(judgement);
        }
        self.order(&mut judged);
        Selection { judged }
    }

    fn judge_trust(
        &self,
        context: &Result<TrustContext, String>,
        rule: &quorum_pipeline::select::TrustRule,
        dvm: &PublicKey,
        operator: Option<PublicKey>,
        judgement: &mut Judgement,
    ) {
        let context = match context {
            Ok(context) => context,
            Err(why) => {
                judgement.excluded.push(format!("trusted: {why}"));
                return;
            }
        };
        let keys: Vec<PublicKey> = std::iter::once(*dvm).chain(operator).collect();
        let trust = &mut judgement.trust;
        trust.listed = keys.iter().any(|k| context.listed.contains(k));
        trust.follow_distance = keys
            .iter()
            .filter_map(|k| context.distances.get(k))
            .min()
            .copied();
        let mut ranks: Vec<u32> = context
            .ranks
            .iter()
            .filter_map(|by_subject| {
                by_subject
                    .get(dvm)
                    .or_else(|| operator.and_then(|o| by_subject.get(&o)))
                    .copied()
            })
            .collect();
        trust.rank_providers = ranks.len();
        trust.rank = median(&mut ranks);
        let by_list_or_follows = rule.list.is_some() || rule.follows.is_some();
        let passes_path = (rule.list.is_some() && trust.listed)
            || rule
                .follows
                .is_some_and(|k| trust.follow_distance.is_some_and(|d| d >= 1 && d <= k));
        if by_list_or_follows && !passes_path {
            let mut paths = Vec::new();
            if let Some(list) = &rule.list {
                paths.push(format!("on the maintainer's list {list:?}"));
            }
            if let Some(k) = rule.follows {
                paths.push(format!("within {k} follow hop(s) of the maintainer"));
            }
            let subject = if operator.is_some() {
                "neither it nor its operator is"
            } else {
                "it is not (and it has no confirmed operator)"
            };
            judgement
                .excluded
                .push(format!("trusted: {subject} {}", paths.join(" or ")));
        }
        if let Some(min) = rule.rank {
            match trust.rank {
                None => judgement.excluded.push(format!(
                    "trusted: none of the maintainer's {} rank provider(s) ranks it (minimum {min})",
                    context.ranks.len()
                )),
                Some(rank) if rank < min => judgement.excluded.push(format!(
                    "trusted: rank {rank} (median of {}) is below {min}",
                    trust.rank_providers
                )),
                Some(_) => {}
            }
        }
    }

    fn trust_context(&self) -> Result<TrustContext, String> {
        let Some(rule) = &self.policy.trusted else {
            return Ok(TrustContext::default());
        };
        let by = match &rule.by {
            Some(hex) => PublicKey::from_hex(hex).map_err(|e| format!("`by` {hex:?}: {e}"))?,
            None => self.maintainer.ok_or(
                "the policy names no `trusted.by` and the run has no repository owner to trust by",
            )?,
        };
        let listed = rule
            .list
            .as_deref()
            .and_then(|d| TrustList::newest(&by, d, self.events))
            .map(|l| l.keys)
            .unwrap_or_default();
        let distances = follow_distances(&by, rule.follows.unwrap_or(0), self.events);
        let ranks = if rule.rank.is_some() {
            rank_providers(&by, self.events)
                .iter()
                .map(|provider| {
                    newest_assertions(provider, self.events)
                        .into_iter()
                        .filter_map(|(subject, a)| a.rank.map(|r| (subject, r)))
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(TrustContext {
            listed,
            distances,
            ranks,
        })
    }

    /// Admitted first, by preference; then the excluded, in the order given.
    fn order(&self, judged: &mut [Judgement]) {
        let preference = self.policy.prefer;
        judged.sort_by(|a, b| {
            let admitted = b.admitted().cmp(&a.admitted());
            let preferred = match preference {
                None => std::cmp::Ordering::Equal,
                Some(Preference::Cheapest) => {
                    let cost = |j: &Judgement| j.max_msats.unwrap_or(u64::MAX);
                    cost(a).cmp(&cost(b))
                }
                Some(Preference::Fastest) => {
                    let speed = |j: &Judgement| {
                        j.figures
                            .as_ref()
                            .and_then(|f| f.median_secs)
                            .unwrap_or(u64::MAX)
                    };
                    speed(a).cmp(&speed(b))
                }
                Some(Preference::MostTrusted) => {
                    let rank = |j: &Judgement| {
                        (
                            std::cmp::Reverse(j.trust.listed),
                            j.trust.follow_distance.unwrap_or(u32::MAX),
                            std::cmp::Reverse(j.trust.rank.unwrap_or(0)),
                        )
                    };
                    rank(a).cmp(&rank(b))
                }
            };
            admitted.then(preferred)
        });
    }
}

#[derive(Default)]
struct TrustContext {
    listed: BTreeSet<PublicKey>,
    distances: BTreeMap<PublicKey, u32>,
    /// Per declared rank provider: its rank of each subject.
    ranks: Vec<BTreeMap<PublicKey, u32>>,
}

/// The policy's default for a quorum's distinct operators: its `diversity`, else `threshold`.
pub fn diversity_for(policy: &SelectPolicy, threshold: u32) -> usize {
    policy.diversity.unwrap_or(threshold) as usize
}

#[cfg(test)]
mod tests {
    use quorum_pipeline::select::{PriceRule, RecordRule, TrustRule};
    use quorum_proto::nip85::Figures;
    use quorum_proto::nip89::{Capabilities, JobLimits, Offer};
    use quorum_proto::nostr::{Keys, Kind};
    use quorum_proto::operator::OperatorList;
    use quorum_proto::trust::{DEFAULT_TRUST_LIST, follow_list};

    use super::*;

    fn announce(dvm: &Keys, operator: Option<&Keys>, msats_per_job: u64) -> Event {
        Announcement {
            identifier: "quorum-runner".into(),
            name: "runner".into(),
            about: String::new(),
            kinds: vec![Kind::from_u16(5702)],
            offer: Offer {
                capabilities: Capabilities {
                    arch: "x86_64".into(),
                    os: "linux".into(),
                    sandbox: "bubblewrap".into(),
                    toolchains: vec![],
                    network: false,
                    images: false,
                    require_image: false,
                },
                price: Price {
                    msats_per_job,
                    ..Price::default()
                },
                limits: JobLimits {
                    concurrency: 1,
                    max_timeout_secs: 600,
                    max_request_bytes: 65536,
                },
            },
            operator: operator.map(|o| o.public_key()),
        }
        .to_event_builder()
        .sign_with_keys(dvm)
        .unwrap()
    }

    struct Fixed(BTreeMap<PublicKey, Figures>);

    impl RecordSource for Fixed {
        fn figures(&self, dvm: &PublicKey, _window: u32) -> Option<Figures> {
            self.0.get(dvm).cloned()
        }
        fn describe(&self) -> String {
            "fixed".into()
        }
    }

    #[test]
    fn list_or_follows_and_a_price_cap_pick_exactly_the_expected_dvms() {
        let [maintainer, friend, far, operator] = [(); 4].map(|_| Keys::generate());
        let dvms: Vec<Keys> = (0..6).map(|_| Keys::generate()).collect();
        let [a, b, c, d, e, f] = [0, 1, 2, 3, 4, 5].map(|i| &dvms[i]);
        let events = vec![
            announce(a, None, 0),              // listed itself
            announce(b, Some(&operator), 500), // its confirmed operator is listed
            announce(c, None, 0),              // two follow hops away
            announce(d, None, 0),              // three hops away
            announce(e, None, 5_000),          // listed, but too expensive
            announce(f, Some(&operator), 0),   // claims the listed operator, not confirmed
            OperatorList::new([b.public_key()])
                .to_event_builder()
                .sign_with_keys(&operator)
                .unwrap(),
            TrustList::new(
                DEFAULT_TRUST_LIST,
                [a.public_key(), operator.public_key(), e.public_key()],
            )
            .to_event_builder()
            .sign_with_keys(&maintainer)
            .unwrap(),
            follow_list([friend.public_key()])
                .sign_with_keys(&maintainer)
                .unwrap(),
            follow_list([c.public_key(), far.public_key()])
                .sign_with_keys(&friend)
                .unwrap(),
            follow_list([d.public_key()]).sign_with_keys(&far).unwrap(),
        ];
        let policy = SelectPolicy {
            trusted: Some(TrustRule {
                list: Some(DEFAULT_TRUST_LIST.into()),
                follows: Some(2),
                ..TrustRule::default()
            }),
            price: Some(PriceRule {
                per_job: Some(1),
                per_second: None,
            }),
            prefer: Some(Preference::Cheapest),
            ..SelectPolicy::default()
        };
        let candidates: Vec<PublicKey> = dvms.iter().map(|k| k.public_key()).collect();
        let selection = Judge {
            policy: &policy,
            maintainer: Some(maintainer.public_key()),
            events: &events,
            record: None,
        }
        .judge(&candidates);
        // Cheapest first; a tie keeps the order given.
        assert_eq!(
            selection.admitted(),
            vec![a.public_key(), c.public_key(), b.public_key()],
            "{}",
            selection.report()
        );
        let reasons = |k: &Keys| {
            selection
                .judged
                .iter()
                .find(|j| j.dvm == k.public_key())
                .unwrap()
                .excluded
                .join("; ")
        };
        assert!(
            reasons(d).contains("within 2 follow hop(s)"),
            "{}",
            reasons(d)
        );
        assert!(
            reasons(e).contains("5000 msats per job is above the cap of 1 sats"),
            "{}",
            reasons(e)
        );
        assert!(
            reasons(f).contains("no confirmed operator"),
            "{}",
            reasons(f)
        );
        assert_eq!(selection.require(3, None).unwrap().len(), 3);
        let too_few = selection.require(4, None).unwrap_err();
        assert!(too_few.summary.contains("leaves 3 of 6"), "{too_few}");
        assert_eq!(
            too_few.report.lines().count(),
            6,
            "everyone considered is named"
        );
    }

    #[test]
    fn diversity_refuses_three_dvms_of_one_operator_and_names_them() {
        let operator = Keys::generate();
        let dvms: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
        let mut events: Vec<Event> = dvms
            .iter()
            .map(|d| announce(d, Some(&operator), 0))
            .collect();
        events.push(
            OperatorList::new(dvms.iter().map(|d| d.public_key()))
                .to_event_builder()
                .sign_with_keys(&operator)
                .unwrap(),
        );
        let policy = SelectPolicy {
            diversity: Some(3),
            ..SelectPolicy::default()
        };
        let candidates: Vec<PublicKey> = dvms.iter().map(|k| k.public_key()).collect();
        let selection = Judge {
            policy: &policy,
            maintainer: None,
            events: &events,
            record: None,
        }
        .judge(&candidates);
        let err = selection
            .require(2, Some(diversity_for(&policy, 2)))
            .unwrap_err();
        assert!(
            err.summary
                .contains("1 distinct confirmed operator(s); 3 needed"),
            "{err}"
        );
        assert!(
            err.summary.contains(&short(&operator.public_key())),
            "{err}"
        );
        for dvm in &dvms {
            assert!(err.summary.contains(&short(&dvm.public_key())), "{err}");
        }
        // Without the policy's diversity, the threshold is the default.
        let relaxed = SelectPolicy::default();
        assert_eq!(diversity_for(&relaxed, 2), 2);
        assert!(selection.require(2, Some(1)).is_ok());
    }

    #[test]
    fn a_poor_record_excludes_and_a_newcomer_passes() {
        let [good, poor, new] = [(); 3].map(|_| Keys::generate());
        let events: Vec<Event> = [&good, &poor, &new]
            .iter()
            .map(|d| announce(d, None, 0))
            .collect();
        let figures = |success, uptime| Figures {
            jobs: 5,
            success,
            uptime,
            ..Figures::default()
        };
        let source = Fixed(BTreeMap::from([
            (good.public_key(), figures(100, 100)),
            (poor.public_key(), figures(40, 100)),
        ]));
        let policy = SelectPolicy {
            record: Some(RecordRule {
                success: Some(80),
                ..RecordRule::default()
            }),
            ..SelectPolicy::default()
        };
        let selection = Judge {
            policy: &policy,
            maintainer: None,
            events: &events,
            record: Some(&source),
        }
        .judge(&[good.public_key(), poor.public_key(), new.public_key()]);
        assert_eq!(
            selection.admitted(),
            vec![good.public_key(), new.public_key()]
        );
        assert!(
            selection
                .report()
                .contains("record: success 40% over 5 jobs is below 80%")
        );
    }

    #[test]
    fn trust_without_anyone_to_trust_by_excludes_with_the_reason() {
        let dvm = Keys::generate();
        let policy = SelectPolicy {
            trusted: Some(TrustRule {
                follows: Some(1),
                ..TrustRule::default()
            }),
            ..SelectPolicy::default()
        };
        let events = [announce(&dvm, None, 0)];
        let selection = Judge {
            policy: &policy,
            maintainer: None,
            events: &events,
            record: None,
        }
        .judge(&[dvm.public_key()]);
        assert!(
            selection
                .report()
                .contains("no repository owner to trust by"),
            "{}",
            selection.report()
        );
    }
}
