//! The share file store (atomic, 0600, refuses loose modes) and secret hygiene of `Debug` and
//! error messages.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use quorum_threshold::frost::keys::KeyPackage;
use quorum_threshold::store::{self, StoreError};
use quorum_threshold::{KeyShare, Roster, dealer};
use rand::rngs::OsRng;

fn share() -> KeyShare {
    let roster = Roster::new(2, members(3)).unwrap();
    run_dkg(&roster).remove(1)
}

/// The hex of the secret signing share, read back from the share's own JSON.
fn secret_hex(share: &KeyShare) -> String {
    let v: serde_json::Value = serde_json::from_str(&share.to_json().unwrap()).unwrap();
    let kp =
        KeyPackage::deserialize(&hex::decode(v["key_package"].as_str().unwrap()).unwrap()).unwrap();
    hex::encode(kp.signing_share().serialize())
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn save_load_round_trip_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("share.json");
    let share = share();
    store::save(&path, &share).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(store::load(&path).unwrap(), share);
    // Overwriting a loose file leaves a 0600 file; no temporary files are left behind.
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    store::save(&path, &share).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(store::load(&path).unwrap(), share);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("share.json")]);
    // The file holds the secret; it is the JSON of the share.
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(&secret_hex(&share)));
}

#[test]
fn load_refuses_loose_modes_naming_path_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("share.json");
    let share = share();
    store::save(&path, &share).unwrap();
    for loose in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
        let err = store::load(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::InsecureMode { path: p, mode } if *p == path && *mode == loose),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{loose:04o}")), "{msg}");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(store::load(&path).unwrap(), share);
    // A directory is not a share file.
    let err = store::load(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotAFile { .. }), "{err}");
    // A missing file names its path.
    let missing = dir.path().join("nope.json");
    let err = store::load(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.json"), "{err}");
}

#[test]
fn invalid_files_are_refused_without_quoting_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("share.json");
    let share = share();
    let secret = secret_hex(&share);
    let mut v: serde_json::Value = serde_json::from_str(&share.to_json().unwrap()).unwrap();
    // The secret misplaced into the member field, and a truncated package.
    v["member"] = serde_json::Value::String(secret.clone());
    let kp = v["key_package"].as_str().unwrap().to_string();
    for (name, text) in [
        ("member", v.to_string()),
        ("truncated", {
            let mut w: serde_json::Value = serde_json::from_str(&share.to_json().unwrap()).unwrap();
            w["key_package"] = serde_json::Value::String(kp[..kp.len() - 8].to_string());
            w.to_string()
        }),
        ("threshold", {
            let mut w: serde_json::Value = serde_json::from_str(&share.to_json().unwrap()).unwrap();
            w["group"]["roster"]["threshold"] = serde_json::Value::String(secret.clone());
            w.to_string()
        }),
        ("cut", share.to_json().unwrap()[..200].to_string()),
    ] {
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = store::load(&path).unwrap_err();
        let msg = format!("{err} {err:?}");
        assert!(matches!(err, StoreError::Invalid { .. }), "{name}: {msg}");
        assert!(
            !msg.contains(&secret),
            "{name}: the error quotes the secret: {msg}"
        );
        assert!(
            !msg.contains(&kp[..64]),
            "{name}: the error quotes the package: {msg}"
        );
    }
}

#[test]
fn debug_prints_no_secret() {
    let roster = Roster::new(2, members(3)).unwrap();
    let (_, dealt) = dealer::deal(&roster, &mut OsRng).unwrap();
    for share in dealt.iter().chain(std::iter::once(&share())) {
        let secret = secret_hex(share);
        let json = share.to_json().unwrap();
        assert!(json.contains(&secret));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kp = v["key_package"].as_str().unwrap();
        for shown in [format!("{share:?}"), format!("{share:#?}")] {
            assert!(!shown.contains(&secret), "{shown}");
            assert!(!shown.contains(kp), "{shown}");
            assert!(shown.contains(&share.member().to_hex()), "{shown}");
            assert!(shown.contains(&share.quorum().to_hex()), "{shown}");
            assert!(
                shown.contains(&format!("index: {}", share.index())),
                "{shown}"
            );
        }
        // Nonces and secret round states do not print secrets either.
        let (nonces, _) = quorum_threshold::sign::commit(share, &mut OsRng);
        let shown = format!("{nonces:?}");
        assert!(
            !shown.contains(&secret) && shown.starts_with("SigningNonces"),
            "{shown}"
        );
    }
}
