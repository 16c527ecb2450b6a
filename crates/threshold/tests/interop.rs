//! A second opinion: nostr-tools (an independent Nostr implementation) verifies events signed
//! by dealer and DKG quorums.

mod common;

use std::process::Command;

use common::*;
use quorum_threshold::{KeyShare, Roster, dealer};
use rand::rngs::OsRng;

#[test]
fn nostr_tools_verifies_quorum_signed_events() {
    let mut events = Vec::new();
    for (t, n) in [(2u16, 3usize), (3, 5)] {
        let roster = Roster::new(t, members(n)).unwrap();
        let (group, dealt) = dealer::deal(&roster, &mut OsRng).unwrap();
        let signers: Vec<&KeyShare> = dealt.iter().take(t as usize).collect();
        events.push(sign_with(&group, &signers, "dealer quorum").unwrap());
        let shares = run_dkg(&roster);
        let signers: Vec<&KeyShare> = shares.iter().rev().take(t as usize).collect();
        events.push(sign_with(shares[0].group(), &signers, "dkg quorum").unwrap());
    }
    let dir = quorum_testkit::node::ensure_installed();
    let script = r#"
        import { verifyEvent, getEventHash } from 'nostr-tools/pure'
        const events = JSON.parse(process.argv[1])
        console.log(JSON.stringify(events.map((e) => {
          const copy = JSON.parse(JSON.stringify(e))
          return getEventHash(copy) === copy.id && verifyEvent(copy)
        })))
    "#;
    let out = Command::new("node")
        .args(["--input-type=module", "-e", script])
        .arg(serde_json::to_string(&events).unwrap())
        .current_dir(&dir)
        .output()
        .expect("`node` not found: install Node.js 20+ (Debian: apt-get install nodejs)");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdicts, vec![true; events.len()]);

    // And it does reject a tampered one (the check is not vacuous).
    let mut bad = serde_json::to_value(&events[0]).unwrap();
    bad["content"] = "tampered".into();
    let out = Command::new("node")
        .args(["--input-type=module", "-e", script])
        .arg(serde_json::Value::Array(vec![bad]).to_string())
        .current_dir(&dir)
        .output()
        .unwrap();
    let verdicts: Vec<bool> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdicts, vec![false]);
}
