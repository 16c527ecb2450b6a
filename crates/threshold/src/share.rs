//! One member's secret share of the quorum key: [`KeyShare`].
//!
//! A `KeyShare` is the group (public), the member's pubkey, and frost's `KeyPackage`, whose
//! `SigningShare` is the secret. Handling rules:
//!
//! - **Zeroized on drop.** frost 3.0 derives `Zeroize` and `ZeroizeOnDrop` for `KeyPackage`
//!   (with the signing share as the only non-skipped secret field; checked at compile time
//!   below), so dropping a `KeyShare`, or any clone of it, wipes the signing share.
//! - **No secret in `Debug`**: it prints member, quorum and index only.
//! - **Serialization** ([`KeyShare::to_json`], [`serde::Serialize`]) writes the package as the
//!   hex of frost's `serialize()`. The JSON string is returned in `Zeroizing` and is allocated at
//!   its exact size up front so that no partial copies are left behind by reallocation.
//!   (frost's own `serialize()` uses a growing `Vec` internally, which this crate cannot wipe;
//!   this is best effort, like all zeroization in a language with moves.)
//! - **Parsing** ([`KeyShare::from_json`], [`serde::Deserialize`]) checks that the secret
//!   matches the member's verifying share in the group, and its error messages never quote the
//!   input.
//!
//! The JSON form is what a trusted dealer sends (NIP-44 encrypted) to each member and what
//! [`crate::store`] writes to disk.

use std::fmt;
use std::io::Write;

use nostr::PublicKey;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::frost::Identifier;
use crate::frost::keys::{KeyPackage, VerifyingShare};
use crate::group::{GroupError, QuorumGroup};
use crate::hexser;

// frost zeroizes the signing share when a KeyPackage is dropped; this crate relies on it.
const _: fn() = || {
    fn assert_zeroize_on_drop<T: ZeroizeOnDrop + Zeroize>() {}
    assert_zeroize_on_drop::<KeyPackage>();
};

/// A member's secret share of the quorum key, with the group it belongs to.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyShare {
    group: QuorumGroup,
    member: PublicKey,
    key_package: KeyPackage,
}

/// Why a key share is invalid. Never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The share's member is not in the group's roster.
    #[error("{member} is not a member of quorum {quorum}")]
    NotAMember {
        /// The stated member.
        member: PublicKey,
        /// The quorum.
        quorum: PublicKey,
    },
    /// The package's identifier is not the member's index.
    #[error("the key package of {member} is not for its index {index}")]
    WrongIdentifier {
        /// The member.
        member: PublicKey,
        /// Its index in the roster.
        index: u16,
    },
    /// The package is for another group key.
    #[error("the key package of {member} is for another group key than quorum {quorum}")]
    WrongGroupKey {
        /// The member.
        member: PublicKey,
        /// The quorum.
        quorum: PublicKey,
    },
    /// The package's threshold differs from the roster's.
    #[error("the key package of {member} has threshold {package}, the roster {roster}")]
    WrongThreshold {
        /// The member.
        member: PublicKey,
        /// The package's `min_signers`.
        package: u16,
        /// The roster's threshold.
        roster: u16,
    },
    /// The package's verifying share is not the group's verifying share for this member.
    #[error("the key package of {member} does not match its verifying share in the group")]
    WrongVerifyingShare {
        /// The member.
        member: PublicKey,
    },
    /// The secret does not produce the package's verifying share.
    #[error("the secret share of {member} does not match its verifying share")]
    SecretMismatch {
        /// The member.
        member: PublicKey,
    },
    /// The JSON text is malformed (syntax error).
    #[error("key share JSON: {reason} at line {line} column {column}")]
    Syntax {
        /// serde_json's message (it never quotes string content for syntax errors).
        reason: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A field is missing, unknown or of the wrong shape.
    #[error("key share JSON: field `{field}`: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong (never the field's content).
        problem: String,
    },
    /// A field other than `key_package` holds the secret share (its content is not shown).
    #[error("key share JSON: a field other than `key_package` holds the secret share")]
    SecretElsewhere,
    /// The group inside the share is inconsistent.
    #[error("key share JSON: group: {0}")]
    Group(#[from] GroupError),
    /// frost could not encode the package.
    #[error("cannot encode the key package: {0}")]
    Encode(String),
}

impl KeyShare {
    /// Checks that `key_package` is `member`'s share of `group` and builds the share.
    pub(crate) fn new(
        group: QuorumGroup,
        member: PublicKey,
        key_package: KeyPackage,
    ) -> Result<Self, ShareError> {
        let roster = group.roster();
        let Some(index) = roster.index_of(&member) else {
            return Err(ShareError::NotAMember {
                member,
                quorum: group.quorum(),
            });
        };
        let id = crate::roster::identifier(index);
        if *key_package.identifier() != id {
            return Err(ShareError::WrongIdentifier { member, index });
        }
        let pkp = group.public_key_package();
        if key_package.verifying_key() != pkp.verifying_key() {
            return Err(ShareError::WrongGroupKey {
                member,
                quorum: group.quorum(),
            });
        }
        if *key_package.min_signers() != roster.threshold() {
            return Err(ShareError::WrongThreshold {
                member,
                package: *key_package.min_signers(),
                roster: roster.threshold(),
            });
        }
        if pkp.verifying_shares().get(&id) != Some(key_package.verifying_share()) {
            return Err(ShareError::WrongVerifyingShare { member });
        }
        if VerifyingShare::from(*key_package.signing_share()) != *key_package.verifying_share() {
            return Err(ShareError::SecretMismatch { member });
        }
        Ok(KeyShare {
            group,
            member,
            key_package,
        })
    }

    /// The group this share belongs to.
    pub fn group(&self) -> &QuorumGroup {
        &self.group
    }

    /// The member holding this share.
    pub fn member(&self) -> PublicKey {
        self.member
    }

    /// The quorum's Nostr public key.
    pub fn quorum(&self) -> PublicKey {
        self.group.quorum()
    }

    /// The member's fixed FROST index.
    pub fn index(&self) -> u16 {
        self.group
            .roster()
            .index_of(&self.member)
            .expect("checked on construction")
    }

    /// The member's FROST identifier.
    pub fn identifier(&self) -> Identifier {
        *self.key_package.identifier()
    }

    /// frost's key package (holds the secret signing share).
    pub(crate) fn key_package(&self) -> &KeyPackage {
        &self.key_package
    }

    /// The share as JSON, in a buffer that is wiped on drop.
    pub fn to_json(&self) -> Result<Zeroizing<String>, ShareError> {
        hexser::secret_json(self).map_err(ShareError::Encode)
    }

    /// The share as JSON bytes, in a buffer allocated at its exact size and wiped on drop.
    pub fn to_json_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ShareError> {
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, self).map_err(|e| ShareError::Encode(e.to_string()))?;
        let mut out = Zeroizing::new(Vec::with_capacity(counter.0));
        serde_json::to_writer(&mut *out, self).map_err(|e| ShareError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// Parses and validates a share written by [`KeyShare::to_json`]. Error messages never
    /// quote the input.
    pub fn from_json(json: &str) -> Result<KeyShare, ShareError> {
        let value: Value = serde_json::from_str(json).map_err(|e| ShareError::Syntax {
            reason: syntax_reason(&e),
            line: e.line(),
            column: e.column(),
        })?;
        Self::from_value(value)
    }

    fn from_value(value: Value) -> Result<KeyShare, ShareError> {
        let Value::Object(mut map) = value else {
            return Err(ShareError::Field {
                field: "(top level)",
                problem: "expected a JSON object".into(),
            });
        };
        // Take the secret out first, so that it is wiped whatever happens next.
        let key_package = match map.remove("key_package") {
            Some(Value::String(mut hex)) => {
                let decoded = decode_key_package(&hex);
                hex.zeroize();
                decoded?
            }
            Some(_) => return Err(field("key_package", "expected a hex string")),
            None => return Err(field("key_package", "missing")),
        };
        // Any error below that would quote the secret (misplaced into another field) is
        // replaced by one that does not.
        let secret = hexser::secret_hex(&key_package.signing_share().serialize());
        Self::from_fields(map, key_package).map_err(|e| {
            if e.to_string().contains(secret.as_str()) {
                ShareError::SecretElsewhere
            } else {
                e
            }
        })
    }

    fn from_fields(
        mut map: serde_json::Map<String, Value>,
        key_package: KeyPackage,
    ) -> Result<KeyShare, ShareError> {
        let group = match map.remove("group") {
            Some(v) => QuorumGroup::deserialize(v).map_err(|e| field("group", &e.to_string()))?,
            None => return Err(field("group", "missing")),
        };
        let member = match map.remove("member") {
            Some(Value::String(s)) => PublicKey::from_hex(&s)
                .map_err(|_| field("member", "not a hex x-only public key"))?,
            Some(_) => return Err(field("member", "expected a hex string")),
            None => return Err(field("member", "missing")),
        };
        if let Some((name, _)) = map.iter().next() {
            return Err(ShareError::Field {
                field: "(top level)",
                problem: format!("unknown field `{}`", name.escape_debug()),
            });
        }
        KeyShare::new(group, member, key_package)
    }
}

fn field(field: &'static str, problem: &str) -> ShareError {
    ShareError::Field {
        field,
        problem: problem.to_string(),
    }
}

fn decode_key_package(hex: &str) -> Result<KeyPackage, ShareError> {
    if !hex.len().is_multiple_of(2) {
        return Err(field("key_package", "hex string of odd length"));
    }
    let mut bytes = Zeroizing::new(vec![0u8; hex.len() / 2]);
    hex::decode_to_slice(hex, &mut bytes[..]).map_err(|_| field("key_package", "not valid hex"))?;
    KeyPackage::deserialize(&bytes)
        .map_err(|e| field("key_package", &format!("not a FROST key package ({e})")))
}

/// serde_json's message without its " at line .. column .." suffix (reported separately).
fn syntax_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            let s = e.to_string();
            match s.rfind(" at line ") {
                Some(pos) => s[..pos].to_string(),
                None => s,
            }
        }
        // Not produced when parsing into a `Value`; never echo data errors.
        Category::Data => "invalid data".to_string(),
    }
}

struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("member", &self.member.to_hex())
            .field("quorum", &self.group.quorum().to_hex())
            .field("index", &self.index())
            .finish_non_exhaustive()
    }
}

/// `{"group": {..}, "member": "<hex>", "key_package": "<hex of frost's serialize()>"}`.
impl Serialize for KeyShare {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = Zeroizing::new(self.key_package.serialize().map_err(|e| {
            <S::Error as serde::ser::Error>::custom(format_args!("key_package: {e}"))
        })?);
        let mut st = s.serialize_struct("KeyShare", 3)?;
        st.serialize_field("group", &self.group)?;
        st.serialize_field("member", &self.member)?;
        st.serialize_field("key_package", &hexser::SecretHex(&bytes))?;
        st.end()
    }
}

/// Validates like [`KeyShare::from_json`]; error messages never quote the input.
impl<'de> Deserialize<'de> for KeyShare {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        KeyShare::from_value(value).map_err(serde::de::Error::custom)
    }
}
