//! Dealer and DKG key generation for (t, n) = (2,3), (3,5), (4,7); signatures by t-subsets
//! verify as plain Nostr events under the quorum key.

mod common;

use common::*;
use nostr::Keys;
use quorum_threshold::dealer::{self, DealerError};
use quorum_threshold::dkg::{self, DkgError};
use quorum_threshold::{KeyShare, QuorumGroup, Roster};
use rand::rngs::OsRng;

const SIZES: [(u16, usize); 3] = [(2, 3), (3, 5), (4, 7)];

fn check_signing(group: &QuorumGroup, shares: &[KeyShare], all_subsets: bool) {
    let t = group.threshold() as usize;
    let n = shares.len();
    let sets = if all_subsets {
        subsets(n, t)
    } else {
        // First t, last t, and everyone.
        vec![(0..t).collect(), (n - t..n).collect(), (0..n).collect()]
    };
    for set in sets {
        let signers: Vec<&KeyShare> = set.iter().map(|&i| &shares[i]).collect();
        let event = sign_with(group, &signers, &format!("signed by {set:?}")).unwrap();
        assert_eq!(event.pubkey, group.quorum());
        event.verify().expect("nostr accepts the quorum signature");
        group.verify_event(&event).unwrap();
        // A relay-style round trip through JSON keeps it valid.
        let back: nostr::Event =
            serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        back.verify().unwrap();
    }
}

fn check_shares(group: &QuorumGroup, shares: &[KeyShare], roster: &Roster) {
    assert_eq!(shares.len(), roster.len());
    for (share, m) in shares.iter().zip(roster.members()) {
        assert_eq!(
            share.group(),
            group,
            "every member ends with the same group"
        );
        assert_eq!(share.member(), m.pubkey);
        assert_eq!(share.index(), m.index);
        assert_eq!(share.quorum(), group.quorum());
    }
    let json = serde_json::to_string(group).unwrap();
    let back: QuorumGroup = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, group);
}

#[test]
fn dealer_keys_sign_for_every_size() {
    for (t, n) in SIZES {
        let roster = Roster::new(t, members(n)).unwrap();
        let (group, shares) = dealer::deal(&roster, &mut OsRng).unwrap();
        check_shares(&group, &shares, &roster);
        check_signing(&group, &shares, n == 3);
    }
}

#[test]
fn dkg_keys_sign_for_every_size() {
    for (t, n) in SIZES {
        let roster = Roster::new(t, members(n)).unwrap();
        let shares = run_dkg(&roster);
        let group = shares[0].group().clone();
        check_shares(&group, &shares, &roster);
        check_signing(&group, &shares, n == 3);
    }
}

#[test]
fn split_keeps_an_existing_nostr_key() {
    let keys = Keys::generate();
    let roster = Roster::new(2, members(3)).unwrap();
    let (group, shares) = dealer::split(keys.secret_key(), &roster, &mut OsRng).unwrap();
    assert_eq!(group.quorum(), keys.public_key());
    check_shares(&group, &shares, &roster);
    check_signing(&group, &shares, true);
}

#[test]
fn frost_needs_a_threshold_of_two() {
    let pks = members(3);
    let roster = Roster::new(1, pks.clone()).unwrap();
    assert_eq!(
        dealer::deal(&roster, &mut OsRng).unwrap_err(),
        DealerError::ThresholdTooLow { threshold: 1 }
    );
    assert_eq!(
        dkg::start(&roster, pks[0], &mut OsRng).unwrap_err(),
        DkgError::ThresholdTooLow { threshold: 1 }
    );
}

#[test]
fn share_json_round_trips_and_is_validated() {
    let roster = Roster::new(2, members(3)).unwrap();
    let shares = run_dkg(&roster);
    for share in &shares {
        let json = share.to_json().unwrap();
        let back = KeyShare::from_json(&json).unwrap();
        assert_eq!(&back, share);
        let via_serde: KeyShare = serde_json::from_str(&json).unwrap();
        assert_eq!(&via_serde, share);
    }
    // A share presented as another member's is refused, naming the member.
    let json = shares[0].to_json().unwrap();
    let other = shares[1].member().to_hex();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["member"] = serde_json::Value::String(other.clone());
    let err = KeyShare::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(
        err.contains(&other) && err.contains("not for its index"),
        "{err}"
    );
    // Garbage is refused without quoting it.
    v["key_package"] = serde_json::Value::String("zz".repeat(40));
    let err = KeyShare::from_json(&v.to_string()).unwrap_err().to_string();
    assert!(
        err.contains("key_package") && !err.contains("zzzz"),
        "{err}"
    );
    let err = KeyShare::from_json("{\"group\": ").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}
