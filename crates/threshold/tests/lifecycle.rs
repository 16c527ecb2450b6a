//! Refresh (same quorum key, old and new shares do not mix), member replacement (repair), and
//! DKG/refresh errors that name the member at fault.

mod common;

use std::collections::BTreeMap;

use common::*;
use nostr::{Keys, PublicKey};
use quorum_threshold::dkg::{self, DkgError, Round1Broadcast};
use quorum_threshold::repair::{self, RepairError, Replacement};
use quorum_threshold::{KeyShare, QuorumGroup, Roster, SignError, dealer, refresh, sign};
use rand::rngs::OsRng;

fn keygen(dkg: bool, t: u16, n: usize) -> Vec<KeyShare> {
    let roster = Roster::new(t, members(n)).unwrap();
    if dkg {
        run_dkg(&roster)
    } else {
        dealer::deal(&roster, &mut OsRng).unwrap().1
    }
}

#[test]
fn refresh_keeps_the_quorum_key_and_old_shares_do_not_mix() {
    for dkg in [false, true] {
        for (t, n) in [(2u16, 3usize), (3, 5)] {
            let old = keygen(dkg, t, n);
            let old_group = old[0].group().clone();
            let new = run_refresh(&old);
            let new_group = new[0].group().clone();
            assert_eq!(new_group.quorum(), old_group.quorum());
            assert_eq!(new_group.roster(), old_group.roster());
            assert_ne!(
                new_group.public_key_package(),
                old_group.public_key_package(),
                "verifying shares change"
            );
            for (o, s) in old.iter().zip(&new) {
                assert_eq!(s.group(), &new_group, "all members end with the same group");
                assert_eq!(s.member(), o.member());
                assert_ne!(s.to_json().unwrap(), o.to_json().unwrap());
            }
            let t = t as usize;
            // New shares sign; old shares still sign among themselves (they are erased by
            // their holders, not by mathematics).
            let signers: Vec<&KeyShare> = new.iter().take(t).collect();
            sign_with(&new_group, &signers, "after refresh")
                .unwrap()
                .verify()
                .unwrap();
            let signers: Vec<&KeyShare> = old.iter().take(t).collect();
            sign_with(&old_group, &signers, "old epoch")
                .unwrap()
                .verify()
                .unwrap();

            // One old share among new ones: against the new group it is named as invalid.
            let mut mixed: Vec<&KeyShare> = new.iter().take(t - 1).collect();
            mixed.push(&old[t - 1]);
            let err = sign_with(&new_group, &mixed, "mixed").unwrap_err();
            assert_eq!(
                err,
                SignError::InvalidShare {
                    culprits: vec![old[t - 1].member()]
                }
            );
            // ...and against the old group the new ones are.
            let mut mixed: Vec<&KeyShare> = old.iter().take(1).collect();
            mixed.extend(new.iter().skip(1).take(t - 1));
            let SignError::InvalidShare { mut culprits } =
                sign_with(&old_group, &mixed, "mixed").unwrap_err()
            else {
                panic!("expected InvalidShare");
            };
            culprits.sort();
            let mut expected: Vec<PublicKey> =
                new.iter().skip(1).take(t - 1).map(|s| s.member()).collect();
            expected.sort();
            assert_eq!(culprits, expected);
        }
    }
}

#[test]
fn refresh_names_a_bad_round2_sender() {
    let shares = keygen(true, 2, 3);
    let (r2, mut transcript) = refresh_until_finish(&shares);
    let (me, victim_secret) = r2.into_iter().next().unwrap();
    let liar = shares[2].member();
    // The liar sends me the message it meant for someone else.
    let other = shares[1].member();
    let wrong = transcript.inbox[&other][&liar].clone();
    transcript.inbox.get_mut(&me).unwrap().insert(liar, wrong);
    let err = victim_secret
        .finish(&transcript.round1, transcript.inbox[&me].clone())
        .unwrap_err();
    assert!(
        matches!(err, DkgError::InvalidRound2 { member, .. } if member == liar),
        "{err}"
    );
}

#[test]
fn dkg_errors_name_the_member() {
    let roster = Roster::new(2, members(3)).unwrap();
    let pks: Vec<PublicKey> = roster.pubkeys().collect();

    // Missing round-1 broadcast.
    let (s, b0) = dkg::start(&roster, pks[0], &mut OsRng).unwrap();
    let (_, b1) = dkg::start(&roster, pks[1], &mut OsRng).unwrap();
    let partial = BTreeMap::from([(pks[0], b0.clone()), (pks[1], b1.clone())]);
    assert_eq!(
        s.receive(&partial).unwrap_err(),
        DkgError::MissingRound1 { member: pks[2] }
    );

    // A broadcast re-attributed to another member fails its proof of knowledge.
    let (s, b0) = dkg::start(&roster, pks[0], &mut OsRng).unwrap();
    let (_, b1) = dkg::start(&roster, pks[1], &mut OsRng).unwrap();
    let swapped = BTreeMap::from([(pks[0], b0), (pks[1], b1.clone()), (pks[2], b1)]);
    let err = s.receive(&swapped).unwrap_err();
    assert!(
        matches!(&err, DkgError::InvalidRound1 { member, reason } if *member == pks[2] && reason.contains("proof")),
        "{err}"
    );

    // A broadcast from a stranger.
    let (s, b0) = dkg::start(&roster, pks[0], &mut OsRng).unwrap();
    let stranger = Keys::generate().public_key();
    let with_stranger = BTreeMap::from([(pks[0], b0.clone()), (stranger, b0.clone())]);
    assert_eq!(
        s.receive(&with_stranger).unwrap_err(),
        DkgError::UnexpectedSender { member: stranger }
    );

    // A member not in the roster cannot start.
    assert_eq!(
        dkg::start(&roster, stranger, &mut OsRng).unwrap_err(),
        DkgError::NotInRoster { member: stranger }
    );

    // A refresh broadcast (t-1 commitments) in a DKG is refused naming its sender.
    let shares = keygen(true, 2, 3);
    let (_, refresh_b) = refresh::start(&shares[1], &mut OsRng).unwrap();
    let roster = shares[0].group().roster().clone();
    let pks: Vec<PublicKey> = roster.pubkeys().collect();
    let (s, b0) = dkg::start(&roster, pks[0], &mut OsRng).unwrap();
    let (_, b2) = dkg::start(&roster, pks[2], &mut OsRng).unwrap();
    let mixed: BTreeMap<PublicKey, Round1Broadcast> =
        BTreeMap::from([(pks[0], b0), (pks[1], refresh_b), (pks[2], b2)]);
    let err = s.receive(&mixed).unwrap_err();
    assert!(
        matches!(&err, DkgError::InvalidRound1 { member, .. } if *member == pks[1]),
        "{err}"
    );

    // Round 2: a missing message and a wrong message name their sender; changed round-1
    // broadcasts are noticed.
    let roster = Roster::new(2, members(3)).unwrap();
    let pks: Vec<PublicKey> = roster.pubkeys().collect();
    let (r2, t) = dkg_until_finish(&roster);
    let mut r2 = r2.into_iter();
    let (me, s) = r2.next().unwrap();
    let mut inbox = t.inbox[&me].clone();
    inbox.remove(&pks[1]);
    assert_eq!(
        s.finish(&t.round1, inbox).unwrap_err(),
        DkgError::MissingRound2 { member: pks[1] }
    );
    let (me, s) = r2.next().unwrap();
    let mut inbox = t.inbox[&me].clone();
    let wrong = t.inbox[&pks[0]][&pks[2]].clone();
    inbox.insert(pks[2], wrong);
    let err = s.finish(&t.round1, inbox).unwrap_err();
    assert!(
        matches!(&err, DkgError::InvalidRound2 { member, .. } if *member == pks[2]),
        "{err}"
    );
    let (me, s) = r2.next().unwrap();
    let mut round1 = t.round1.clone();
    let b = round1[&pks[0]].clone();
    round1.insert(pks[1], b);
    assert_eq!(
        s.finish(&round1, t.inbox[&me].clone()).unwrap_err(),
        DkgError::Round1Changed { member: pks[1] }
    );
}

/// Runs a whole replacement in process: deltas, sigmas, recover, update, all through JSON.
fn replace(
    shares: &[KeyShare],
    leaving: PublicKey,
    joining: PublicKey,
    helpers: &[PublicKey],
) -> Result<Vec<KeyShare>, RepairError> {
    let group = shares[0].group();
    let replacement: Replacement = wire(&Replacement::new(
        group,
        leaving,
        joining,
        helpers.iter().copied(),
    )?);
    let by_member: BTreeMap<PublicKey, &KeyShare> =
        shares.iter().map(|s| (s.member(), s)).collect();
    let mut delta_inbox: BTreeMap<PublicKey, BTreeMap<PublicKey, repair::RepairDelta>> =
        BTreeMap::new();
    for h in &replacement.helpers {
        for (to, d) in repair::deltas(by_member[h], &replacement, &mut OsRng)? {
            let d = repair::RepairDelta::from_json(&d.to_json()).unwrap();
            delta_inbox.entry(to).or_default().insert(*h, d);
        }
    }
    let mut sigmas = BTreeMap::new();
    for h in &replacement.helpers {
        let sigma = repair::sigma(by_member[h], &replacement, delta_inbox.remove(h).unwrap())?;
        sigmas.insert(
            *h,
            repair::RepairSigma::from_json(&sigma.to_json()).unwrap(),
        );
    }
    let joined = repair::recover(group, &replacement, sigmas)?;
    let mut out = Vec::new();
    for s in shares {
        if s.member() == leaving {
            out.push(joined.clone());
        } else {
            out.push(repair::update_share(s.clone(), &replacement)?);
        }
    }
    Ok(out)
}

#[test]
fn repair_replaces_a_member_and_refresh_revokes_the_old_share() {
    for dkg in [false, true] {
        for (t, n) in [(2u16, 3usize), (3, 5)] {
            let shares = keygen(dkg, t, n);
            let group = shares[0].group().clone();
            let leaving = shares[0].member();
            let leaving_index = shares[0].index();
            let joining = Keys::generate().public_key();
            let helpers: Vec<PublicKey> =
                shares[1..=t as usize].iter().map(|s| s.member()).collect();
            let replaced = replace(&shares, leaving, joining, &helpers).unwrap();

            let new_group = replaced[0].group().clone();
            assert_eq!(new_group.quorum(), group.quorum());
            assert_eq!(new_group.public_key_package(), group.public_key_package());
            assert_eq!(new_group.roster().index_of(&joining), Some(leaving_index));
            assert!(!new_group.roster().contains(&leaving));
            for s in &replaced {
                assert_eq!(s.group(), &new_group);
            }
            assert_eq!(replaced[0].member(), joining);
            assert_eq!(replaced[0].index(), leaving_index);

            // The new member signs with the others (with a non-helper where there is one).
            let mut signers: Vec<&KeyShare> = vec![&replaced[0]];
            signers.extend(replaced.iter().rev().take(t as usize - 1));
            sign_with(&new_group, &signers, "joined")
                .unwrap()
                .verify()
                .unwrap();

            // Until a refresh, the leaving member's old share is still worth a share...
            let mut with_old: Vec<&KeyShare> = vec![&shares[0]];
            with_old.extend(shares.iter().rev().take(t as usize - 1));
            sign_with(&group, &with_old, "still valid").unwrap();

            // ...after the refresh among the new roster it is useless.
            let refreshed = run_refresh(&replaced);
            let fresh_group = refreshed[0].group().clone();
            assert_eq!(fresh_group.quorum(), group.quorum());
            let mut signers: Vec<&KeyShare> = vec![&refreshed[0]];
            signers.extend(refreshed.iter().rev().take(t as usize - 1));
            sign_with(&fresh_group, &signers, "refreshed")
                .unwrap()
                .verify()
                .unwrap();
            // The leaving member cannot move its share to the new roster.
            let replacement = Replacement::new(&group, leaving, joining, helpers.clone()).unwrap();
            assert_eq!(
                repair::update_share(shares[0].clone(), &replacement).unwrap_err(),
                RepairError::IsLeaving { member: leaving }
            );
            // The leaving member's old share signs in the joining member's slot (same index,
            // same commitments, same event, so the same signing package): after the refresh
            // its signature share is named invalid.
            let others: Vec<&KeyShare> = refreshed.iter().rev().take(t as usize - 1).collect();
            let mut signers_old: Vec<&KeyShare> = vec![&shares[0]];
            signers_old.extend(others.iter().copied());
            let (nonces, mut request) =
                commit_all(&signers_old, note(fresh_group.quorum(), "revoked"));
            let old_view = request.clone();
            let c = request.commitments.remove(&leaving).unwrap();
            request.commitments.insert(joining, c);
            let mut sig_shares = BTreeMap::new();
            for ((pk, n), s) in nonces.into_iter().zip(&signers_old) {
                if pk == leaving {
                    sig_shares.insert(joining, sign::sign(s, n, &old_view).unwrap());
                } else {
                    sig_shares.insert(pk, sign::sign(s, n, &request).unwrap());
                }
            }
            let err = sign::aggregate(&fresh_group, &request, &sig_shares).unwrap_err();
            assert_eq!(
                err,
                SignError::InvalidShare {
                    culprits: vec![joining]
                }
            );
        }
    }
}

#[test]
fn repair_errors() {
    let shares = keygen(false, 2, 3);
    let group: &QuorumGroup = shares[0].group();
    let (a, b, c) = (shares[0].member(), shares[1].member(), shares[2].member());
    let joining = Keys::generate().public_key();
    assert_eq!(
        Replacement::new(group, a, joining, [b]).unwrap_err(),
        RepairError::TooFewHelpers {
            given: 1,
            needed: 2
        }
    );
    assert_eq!(
        Replacement::new(group, a, joining, [a, b]).unwrap_err(),
        RepairError::LeavingMemberAsHelper { member: a }
    );
    assert_eq!(
        Replacement::new(group, a, joining, [b, joining]).unwrap_err(),
        RepairError::HelperNotAMember { helper: joining }
    );
    assert!(matches!(
        Replacement::new(group, a, c, [b, c]).unwrap_err(),
        RepairError::Roster(_)
    ));

    // A helper that sends a wrong sigma: the recovered share does not match and all helpers
    // of the run are named.
    let replacement = Replacement::new(group, a, joining, [b, c]).unwrap();
    let db = repair::deltas(&shares[1], &replacement, &mut OsRng).unwrap();
    let dc = repair::deltas(&shares[2], &replacement, &mut OsRng).unwrap();
    let sb = repair::sigma(
        &shares[1],
        &replacement,
        BTreeMap::from([(b, db[&b].clone()), (c, dc[&b].clone())]),
    )
    .unwrap();
    let sc_wrong = repair::sigma(
        &shares[2],
        &replacement,
        BTreeMap::from([(b, db[&b].clone()), (c, dc[&c].clone())]),
    )
    .unwrap();
    let err = repair::recover(
        group,
        &replacement,
        BTreeMap::from([(b, sb.clone()), (c, sc_wrong)]),
    )
    .unwrap_err();
    assert!(
        matches!(err, RepairError::RecoveredShareMismatch { index: 1.., .. }),
        "{err}"
    );
    assert_eq!(
        repair::recover(group, &replacement, BTreeMap::from([(b, sb)])).unwrap_err(),
        RepairError::Missing {
            what: "sigma",
            helper: c
        }
    );
    assert_eq!(
        repair::deltas(&shares[0], &replacement, &mut OsRng).unwrap_err(),
        RepairError::NotAHelper { member: a }
    );
    // Debug of secret messages prints nothing secret.
    assert_eq!(format!("{:?}", db[&b]), "RepairDelta(<secret>)");
}
