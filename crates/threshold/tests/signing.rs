//! Signing rules: fewer than t never signs, bad shares are named, non-members are refused.

mod common;

use std::collections::BTreeMap;

use common::*;
use nostr::{EventId, Keys};
use quorum_threshold::dealer;
use quorum_threshold::sign::{self, NonceCommitment, SignatureShare, SigningRequest};
use quorum_threshold::{KeyShare, QuorumGroup, Roster, SignError};
use rand::rngs::OsRng;

fn dealer_group(t: u16, n: usize) -> (QuorumGroup, Vec<KeyShare>) {
    let roster = Roster::new(t, members(n)).unwrap();
    dealer::deal(&roster, &mut OsRng).unwrap()
}

fn dkg_group(t: u16, n: usize) -> (QuorumGroup, Vec<KeyShare>) {
    let roster = Roster::new(t, members(n)).unwrap();
    let shares = run_dkg(&roster);
    (shares[0].group().clone(), shares)
}

fn both(t: u16, n: usize) -> Vec<(QuorumGroup, Vec<KeyShare>)> {
    vec![dealer_group(t, n), dkg_group(t, n)]
}

#[test]
fn fewer_than_t_never_sign() {
    for (t, n) in [(2u16, 3usize), (3, 5), (4, 7)] {
        for (group, shares) in both(t, n) {
            let t = t as usize;
            let quorum = group.quorum();
            // t commitments, t shares made, only t-1 handed to aggregate.
            let signers: Vec<&KeyShare> = shares.iter().take(t).collect();
            let (nonces, request) = commit_all(&signers, note(quorum, "x"));
            let mut all = shares_for(&signers, nonces, &request);
            let last = *all.keys().last().unwrap();
            all.remove(&last);
            assert_eq!(
                sign::aggregate(&group, &request, &all).unwrap_err(),
                SignError::TooFewShares {
                    given: t - 1,
                    needed: t as u16
                }
            );

            // A request with only t-1 commitments: no one signs it, and it does not aggregate.
            let few: Vec<&KeyShare> = shares.iter().take(t - 1).collect();
            let (mut nonces, request) = commit_all(&few, note(quorum, "x"));
            let (_, n0) = nonces.remove(0);
            assert_eq!(
                sign::sign(few[0], n0, &request).unwrap_err(),
                SignError::TooFewCommitments {
                    given: t - 1,
                    needed: t as u16
                }
            );
            let err = sign::aggregate(&group, &request, &BTreeMap::new()).unwrap_err();
            assert_eq!(
                err,
                SignError::TooFewCommitments {
                    given: t - 1,
                    needed: t as u16
                }
            );
        }
    }
}

/// t-1 honest signers plus anything a colluder can put in the missing member's place.
#[test]
fn t_minus_one_cannot_forge_the_missing_share() {
    for (group, shares) in both(3, 5) {
        let quorum = group.quorum();
        let (a, b, victim) = (&shares[0], &shares[1], &shares[2]);
        // a commits a second time and files that commitment under the victim's name.
        let (na, ca) = sign::commit(a, &mut OsRng);
        let (nb, cb) = sign::commit(b, &mut OsRng);
        let (na2, ca2) = sign::commit(a, &mut OsRng);
        let commitments =
            BTreeMap::from([(a.member(), ca), (b.member(), cb), (victim.member(), ca2)]);
        let request = SigningRequest::new(note(quorum, "forged"), commitments.clone());
        let sa = sign::sign(a, na, &request).unwrap();
        let sb = sign::sign(b, nb, &request).unwrap();
        // a cannot sign in the victim's slot with its own share: the nonces are a's, and the
        // request's commitment for a is another one.
        assert_eq!(
            sign::sign(a, na2, &request).unwrap_err(),
            SignError::CommitmentMismatch { member: a.member() }
        );
        // Whatever the colluders put in the victim's slot is caught and the victim is named:
        // a copy of a's share, b's share, and a's share re-made with the second nonces (a
        // request in which a's own commitment is the second one).
        let (na3, ca3) = sign::commit(a, &mut OsRng);
        let alt = SigningRequest::new(
            note(quorum, "forged"),
            BTreeMap::from([(a.member(), ca3), (b.member(), cb), (victim.member(), ca2)]),
        );
        let sa_alt = sign::sign(a, na3, &alt).unwrap();
        for fake in [sa, sb, sa_alt] {
            let shares =
                BTreeMap::from([(a.member(), sa), (b.member(), sb), (victim.member(), fake)]);
            assert_eq!(
                sign::aggregate(&group, &request, &shares).unwrap_err(),
                SignError::InvalidShare {
                    culprits: vec![victim.member()]
                }
            );
        }
        // Dropping the victim from the request leaves t-1 commitments: refused outright.
        let mut two = commitments.clone();
        two.remove(&victim.member());
        let request2 = SigningRequest::new(note(quorum, "forged"), two);
        let shares2 = BTreeMap::from([(a.member(), sa), (b.member(), sb)]);
        assert_eq!(
            sign::aggregate(&group, &request2, &shares2).unwrap_err(),
            SignError::TooFewCommitments {
                given: 2,
                needed: 3
            }
        );
    }
}

#[test]
fn tampered_share_names_the_member() {
    for (group, shares) in both(2, 3) {
        let signers: Vec<&KeyShare> = shares.iter().collect();
        let (nonces, request) = commit_all(&signers, note(group.quorum(), "tamper"));
        let good = shares_for(&signers, nonces, &request);
        let victim = shares[1].member();

        // Flip a bit of the member's share (through its wire form).
        let mut bad = good.clone();
        let hex: String =
            serde_json::from_str(&serde_json::to_string(&good[&victim]).unwrap()).unwrap();
        let mut bytes = hex::decode(&hex).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered: SignatureShare =
            serde_json::from_str(&format!("\"{}\"", hex::encode(bytes))).unwrap();
        bad.insert(victim, tampered);
        assert_eq!(
            sign::aggregate(&group, &request, &bad).unwrap_err(),
            SignError::InvalidShare {
                culprits: vec![victim]
            }
        );

        // A valid share from another signing (replay) is just as invalid here.
        let (nonces2, request2) = request_for_all(&shares, &group);
        let other = shares_for(&signers, nonces2, &request2);
        let mut replay = good.clone();
        replay.insert(victim, other[&victim]);
        let err = sign::aggregate(&group, &request, &replay).unwrap_err();
        assert_eq!(
            err,
            SignError::InvalidShare {
                culprits: vec![victim]
            }
        );
        assert!(err.to_string().contains(&victim.to_hex()), "{err}");

        // Two bad shares: both are named.
        let mut two = good.clone();
        let first = shares[0].member();
        two.insert(first, other[&first]);
        two.insert(victim, other[&victim]);
        let SignError::InvalidShare { culprits } =
            sign::aggregate(&group, &request, &two).unwrap_err()
        else {
            panic!("expected InvalidShare");
        };
        let mut expected = vec![first, victim];
        expected.sort();
        let mut culprits = culprits;
        culprits.sort();
        assert_eq!(culprits, expected);

        // The untouched set still aggregates.
        sign::aggregate(&group, &request, &good)
            .unwrap()
            .verify()
            .unwrap();
    }
}

fn request_for_all(
    shares: &[KeyShare],
    group: &QuorumGroup,
) -> (Vec<(nostr::PublicKey, sign::SigningNonces)>, SigningRequest) {
    let signers: Vec<&KeyShare> = shares.iter().collect();
    commit_all(&signers, note(group.quorum(), "another signing"))
}

#[test]
fn non_members_are_refused_by_name() {
    let (group, shares) = dealer_group(2, 3);
    let (other_group, other_shares) = dealer_group(2, 3);
    let stranger = &other_shares[0];
    let signers: Vec<&KeyShare> = shares.iter().take(2).collect();
    let (mut nonces, mut request) = commit_all(&signers, note(group.quorum(), "x"));

    // A commitment keyed by a non-member.
    let (_, c) = sign::commit(stranger, &mut OsRng);
    request.commitments.insert(stranger.member(), c);
    let (_, n0) = nonces.remove(0);
    assert_eq!(
        sign::sign(signers[0], n0, &request).unwrap_err(),
        SignError::NotAMember {
            member: stranger.member()
        }
    );
    assert_eq!(
        sign::aggregate(&group, &request, &BTreeMap::new()).unwrap_err(),
        SignError::NotAMember {
            member: stranger.member()
        }
    );

    // A signature share keyed by a non-member.
    let (nonces, request) = commit_all(&signers, note(group.quorum(), "y"));
    let mut good = shares_for(&signers, nonces, &request);
    let (n, c) = sign::commit(stranger, &mut OsRng);
    let other_req = SigningRequest::new(
        note(other_group.quorum(), "y"),
        BTreeMap::from([
            (stranger.member(), c),
            (
                other_shares[1].member(),
                sign::commit(&other_shares[1], &mut OsRng).1,
            ),
        ]),
    );
    let s = sign::sign(stranger, n, &other_req).unwrap();
    good.insert(stranger.member(), s);
    assert_eq!(
        sign::aggregate(&group, &request, &good).unwrap_err(),
        SignError::NotAMember {
            member: stranger.member()
        }
    );
}

#[test]
fn the_event_must_be_the_quorums_and_complete() {
    let (group, shares) = dealer_group(2, 3);
    let signers: Vec<&KeyShare> = shares.iter().take(2).collect();

    // An event by another author is never signed.
    let someone = Keys::generate().public_key();
    let (mut nonces, request) = commit_all(&signers, note(someone, "not ours"));
    let (_, n0) = nonces.remove(0);
    assert_eq!(
        sign::sign(signers[0], n0, &request).unwrap_err(),
        SignError::WrongEventAuthor {
            expected: group.quorum(),
            got: someone
        }
    );

    // A stated id that is not the hash of the event is refused.
    let mut event = note(group.quorum(), "honest content");
    let honest_id = event.id.unwrap();
    let fake_id = EventId::all_zeros();
    event.id = Some(fake_id);
    let (mut nonces, request) = commit_all(&signers, event);
    let (_, n0) = nonces.remove(0);
    assert_eq!(
        sign::sign(signers[0], n0, &request).unwrap_err(),
        SignError::EventIdMismatch {
            stated: fake_id,
            computed: honest_id
        }
    );

    // No id at all: the signers compute it.
    let mut event = note(group.quorum(), "no id");
    event.id = None;
    let (nonces, request) = commit_all(&signers, event);
    let shares_ = shares_for(&signers, nonces, &request);
    let signed = sign::aggregate(&group, &request, &shares_).unwrap();
    signed.verify().unwrap();
}

#[test]
fn commitments_and_shares_must_match() {
    let (group, shares) = dealer_group(2, 3);
    let all: Vec<&KeyShare> = shares.iter().collect();
    let (nonces, request3) = commit_all(&all, note(group.quorum(), "x"));
    let got = shares_for(&all, nonces, &request3);

    // Committed but sent no share.
    let mut missing = got.clone();
    missing.remove(&shares[2].member());
    assert_eq!(
        sign::aggregate(&group, &request3, &missing).unwrap_err(),
        SignError::MissingShare {
            member: shares[2].member()
        }
    );

    // A share from a member that did not commit to this request.
    let two: BTreeMap<_, NonceCommitment> = request3
        .commitments
        .iter()
        .filter(|(k, _)| **k != shares[2].member())
        .map(|(k, v)| (*k, *v))
        .collect();
    let request2 = SigningRequest::new(request3.event.clone(), two);
    assert_eq!(
        sign::aggregate(&group, &request2, &got).unwrap_err(),
        SignError::ShareWithoutCommitment {
            member: shares[2].member()
        }
    );

    // Nonces of another member, and a missing own commitment.
    let (n_other, _) = sign::commit(&shares[1], &mut OsRng);
    assert_eq!(
        sign::sign(&shares[0], n_other, &request3).unwrap_err(),
        SignError::NoncesFromAnotherShare {
            nonces_member: shares[1].member(),
            nonces_quorum: group.quorum()
        }
    );
    let (n2, _) = sign::commit(&shares[2], &mut OsRng);
    assert_eq!(
        sign::sign(&shares[2], n2, &request2).unwrap_err(),
        SignError::MissingOwnCommitment {
            member: shares[2].member()
        }
    );
}
