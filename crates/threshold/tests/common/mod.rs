//! Helpers shared by the integration tests: members, in-process DKG/refresh, one signing round.
#![allow(dead_code)]

use std::collections::BTreeMap;

use nostr::{Event, EventBuilder, Keys, PublicKey, UnsignedEvent};
use quorum_threshold::dkg::{self, Round1Broadcast, Round2Message};
use quorum_threshold::sign::{self, SignatureShare, SigningRequest};
use quorum_threshold::{KeyShare, QuorumGroup, Roster, SignError, refresh};
use rand::rngs::OsRng;

/// `n` fresh member pubkeys.
pub fn members(n: usize) -> Vec<PublicKey> {
    (0..n).map(|_| Keys::generate().public_key()).collect()
}

/// Public messages go through JSON as they would on the wire.
pub fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

/// Secret round-2 messages go through their zeroizing JSON form.
fn wire_secret(m: &Round2Message) -> Round2Message {
    Round2Message::from_json(&m.to_json().unwrap()).unwrap()
}

/// Messages of one run: round-1 broadcasts, and round-2 messages by recipient then sender.
pub struct Transcript {
    pub round1: BTreeMap<PublicKey, Round1Broadcast>,
    pub inbox: BTreeMap<PublicKey, BTreeMap<PublicKey, Round2Message>>,
}

/// Runs a whole DKG in process; returns every member's share in roster order.
pub fn run_dkg(roster: &Roster) -> Vec<KeyShare> {
    let (r2, t) = dkg_until_finish(roster);
    r2.into_iter()
        .map(|(me, s)| {
            s.finish(&t.round1, t.inbox.get(&me).cloned().unwrap_or_default())
                .unwrap()
        })
        .collect()
}

/// Runs a DKG up to (not including) `finish`.
pub fn dkg_until_finish(roster: &Roster) -> (Vec<(PublicKey, dkg::Round2Secret)>, Transcript) {
    let mut round1 = BTreeMap::new();
    let mut secrets = Vec::new();
    for me in roster.pubkeys() {
        let (s, b) = dkg::start(roster, me, &mut OsRng).unwrap();
        round1.insert(me, wire(&b));
        secrets.push((me, s));
    }
    let mut inbox: BTreeMap<PublicKey, BTreeMap<PublicKey, Round2Message>> = BTreeMap::new();
    let mut r2 = Vec::new();
    for (me, s) in secrets {
        let (s2, out) = s.receive(&round1).unwrap();
        for (to, msg) in out {
            inbox.entry(to).or_default().insert(me, wire_secret(&msg));
        }
        r2.push((me, s2));
    }
    (r2, Transcript { round1, inbox })
}

/// Refreshes every share in process; returns the new shares in the same order.
pub fn run_refresh(shares: &[KeyShare]) -> Vec<KeyShare> {
    let (r2, t) = refresh_until_finish(shares);
    r2.into_iter()
        .map(|(me, s)| {
            s.finish(&t.round1, t.inbox.get(&me).cloned().unwrap_or_default())
                .unwrap()
        })
        .collect()
}

/// Runs a refresh up to (not including) `finish`.
pub fn refresh_until_finish(
    shares: &[KeyShare],
) -> (Vec<(PublicKey, refresh::Round2Secret)>, Transcript) {
    let mut round1 = BTreeMap::new();
    let mut secrets = Vec::new();
    for share in shares {
        let (s, b) = refresh::start(share, &mut OsRng).unwrap();
        round1.insert(share.member(), wire(&b));
        secrets.push((share.member(), s));
    }
    let mut inbox: BTreeMap<PublicKey, BTreeMap<PublicKey, Round2Message>> = BTreeMap::new();
    let mut r2 = Vec::new();
    for (me, s) in secrets {
        let (s2, out) = s.receive(&round1).unwrap();
        for (to, msg) in out {
            inbox.entry(to).or_default().insert(me, wire_secret(&msg));
        }
        r2.push((me, s2));
    }
    (r2, Transcript { round1, inbox })
}

/// An unsigned kind-1 event by `author`.
pub fn note(author: PublicKey, content: &str) -> UnsignedEvent {
    EventBuilder::text_note(content).build(author)
}

/// Commit + request for `signers`.
pub fn commit_all(
    signers: &[&KeyShare],
    event: UnsignedEvent,
) -> (Vec<(PublicKey, sign::SigningNonces)>, SigningRequest) {
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for s in signers {
        let (n, c) = sign::commit(s, &mut OsRng);
        commitments.insert(s.member(), wire(&c));
        nonces.push((s.member(), n));
    }
    (nonces, wire(&SigningRequest::new(event, commitments)))
}

/// Every signer's share of the request.
pub fn shares_for(
    signers: &[&KeyShare],
    nonces: Vec<(PublicKey, sign::SigningNonces)>,
    request: &SigningRequest,
) -> BTreeMap<PublicKey, SignatureShare> {
    signers
        .iter()
        .zip(nonces)
        .map(|(s, (pk, n))| {
            assert_eq!(s.member(), pk);
            (pk, wire(&sign::sign(s, n, request).unwrap()))
        })
        .collect()
}

/// One whole signing round by `signers` (commit, sign, aggregate).
pub fn sign_with(
    group: &QuorumGroup,
    signers: &[&KeyShare],
    content: &str,
) -> Result<Event, SignError> {
    let (nonces, request) = commit_all(signers, note(group.quorum(), content));
    let shares = shares_for(signers, nonces, &request);
    sign::aggregate(group, &request, &shares)
}

/// All `k`-subsets of `0..n`.
pub fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(0, n, k, &mut Vec::new(), &mut out);
    out
}
