//! Secret key files: an nsec or 64 hex characters, mode 0600, never echoed.
//!
//! Errors name the file and what is wrong with it, never its content: a key file that holds
//! something unexpected may still hold a secret.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nostr_sdk::prelude::{Keys, SecretKey, ToBech32};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is accessible by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("key file {path} holds neither an nsec nor 64 hex characters")]
    Malformed { path: PathBuf },
    #[error("cannot create key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the keys in `path`, refusing a file that group or others can access.
pub fn load(path: &Path) -> Result<Keys, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    // `SecretKey::parse` accepts both nsec and hex; its error would not echo the input, but we
    // still replace it with ours so that no future version can.
    SecretKey::parse(text.trim())
        .map(Keys::new)
        .map_err(|_| KeyFileError::Malformed {
            path: path.to_path_buf(),
        })
}

/// Creates `path` with fresh keys (nsec, mode 0600); fails if the file exists.
pub fn create(path: &Path) -> Result<Keys, KeyFileError> {
    let create_err = |source| KeyFileError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(create_err)?;
    }
    let keys = Keys::generate();
    let nsec = keys
        .secret_key()
        .to_bech32()
        .expect("bech32 encoding of a secret key cannot fail");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create_err)?;
    file.write_all(format!("{nsec}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(create_err)?;
    Ok(keys)
}

/// Loads `path`, creating it with fresh keys first if it does not exist.
pub fn load_or_create(path: &Path) -> Result<Keys, KeyFileError> {
    match create(path) {
        Ok(keys) => Ok(keys),
        Err(KeyFileError::Create { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            load(path)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_load_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/dvm.nsec");
        let keys = create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().public_key(), keys.public_key());
        assert_eq!(
            load_or_create(&path).unwrap().public_key(),
            keys.public_key()
        );
        assert!(create(&path).is_err(), "create must not overwrite a key");
    }

    #[test]
    fn hex_keys_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hex");
        let keys = Keys::generate();
        std::fs::write(&path, keys.secret_key().to_secret_hex()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path).unwrap().public_key(), keys.public_key());
    }

    #[test]
    fn open_files_are_refused_and_content_is_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open");
        let keys = Keys::generate();
        let secret = keys.secret_key().to_secret_hex();
        std::fs::write(&path, &secret).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains(&secret));

        let garbage = format!("{}zz", &secret[..60]);
        std::fs::write(&path, &garbage).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("neither an nsec"), "{err}");
        assert!(!err.contains(&garbage[..20]), "{err}");
    }
}
