//! Hex (de)serialization of frost's byte encodings, with zeroizing buffers for secrets.
//!
//! Every frost value crosses serde as the lowercase hex of its own `serialize()` bytes. Secret
//! values are decoded straight from the borrowed input into a `Zeroizing` buffer, and an owned
//! input string is wiped after decoding; error messages name the field, never its content.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// Lowercase hex of secret bytes, in a buffer that is wiped on drop.
pub(crate) fn secret_hex(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

/// Serializes public bytes as hex.
pub(crate) fn serialize_public<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Serializes secret bytes as hex, through a zeroizing buffer.
pub(crate) fn serialize_secret<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let hex = secret_hex(bytes);
    s.serialize_str(&hex)
}

struct HexVisitor {
    what: &'static str,
}

impl Visitor<'_> for HexVisitor {
    type Value = Zeroizing<Vec<u8>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a hex string", self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if !v.len().is_multiple_of(2) {
            return Err(E::custom(format_args!(
                "{}: hex string of odd length {}",
                self.what,
                v.len()
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; v.len() / 2]);
        hex::decode_to_slice(v, &mut out[..])
            .map_err(|_| E::custom(format_args!("{}: not valid hex", self.what)))?;
        Ok(out)
    }

    fn visit_string<E: de::Error>(self, mut v: String) -> Result<Self::Value, E> {
        let out = self.visit_str(&v);
        v.zeroize();
        out
    }
}

/// Deserializes hex into a buffer that is wiped on drop (used for secret and public values
/// alike; public callers simply read it).
pub(crate) fn deserialize_bytes<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, D::Error> {
    d.deserialize_str(HexVisitor { what })
}

/// Serializes borrowed secret bytes as hex through a zeroizing buffer.
pub(crate) struct SecretHex<'a>(pub(crate) &'a [u8]);

impl serde::Serialize for SecretHex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_secret(self.0, s)
    }
}

/// `serde(deserialize_with)` helper for secret hex fields.
pub(crate) fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
    deserialize_bytes(d, "secret value")
}

/// JSON of `value` in a buffer allocated at its exact size (so no reallocation leaves partial
/// copies behind) and wiped on drop.
pub(crate) fn secret_json<T: serde::Serialize>(value: &T) -> Result<Zeroizing<String>, String> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_err(|e| e.to_string())?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(counter.0));
    serde_json::to_writer(&mut *bytes, value).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    out.push_str(text);
    Ok(out)
}

/// frost's `serialize()`, which is fallible for some types and not for others.
pub(crate) trait FrostBytes {
    fn frost_bytes(&self) -> Result<Vec<u8>, crate::frost::Error>;
}

macro_rules! frost_bytes {
    (fallible: $($ty:ty),*) => {$(
        impl FrostBytes for $ty {
            fn frost_bytes(&self) -> Result<Vec<u8>, crate::frost::Error> {
                self.serialize()
            }
        }
    )*};
    (infallible: $($ty:ty),*) => {$(
        impl FrostBytes for $ty {
            fn frost_bytes(&self) -> Result<Vec<u8>, crate::frost::Error> {
                Ok(self.serialize())
            }
        }
    )*};
}

frost_bytes!(fallible:
    crate::frost::keys::PublicKeyPackage,
    crate::frost::keys::dkg::round1::Package,
    crate::frost::round1::SigningCommitments
);
frost_bytes!(infallible: crate::frost::round2::SignatureShare);

/// Implements `Serialize`/`Deserialize` for a newtype around a public frost value as the hex of
/// its `serialize()` bytes.
macro_rules! public_hex_serde {
    ($ty:ty, $inner:ty, $what:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let bytes = $crate::hexser::FrostBytes::frost_bytes(&self.0).map_err(|e| {
                    <S::Error as serde::ser::Error>::custom(format_args!("{}: {e}", $what))
                })?;
                $crate::hexser::serialize_public(&bytes, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = $crate::hexser::deserialize_bytes(d, $what)?;
                <$inner>::deserialize(&bytes).map(Self).map_err(|e| {
                    <D::Error as serde::de::Error>::custom(format_args!(
                        "{}: not a valid encoding ({e})",
                        $what
                    ))
                })
            }
        }
    };
}
pub(crate) use public_hex_serde;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hex_matches_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(secret_hex(&bytes).as_str(), hex::encode(&bytes));
    }

    #[test]
    fn decoding_errors_name_the_field_not_the_content() {
        let mut de = serde_json::Deserializer::from_str("\"abcXYZ\"");
        let err = deserialize_bytes(&mut de, "thing").unwrap_err().to_string();
        assert!(
            err.contains("thing: not valid hex") && !err.contains("XYZ"),
            "{err}"
        );
        let mut de = serde_json::Deserializer::from_str("\"abc\"");
        let err = deserialize_bytes(&mut de, "thing").unwrap_err().to_string();
        assert!(
            err.contains("odd length") && !err.contains("abc\""),
            "{err}"
        );
        let mut de = serde_json::Deserializer::from_str("\"0aff\"");
        assert_eq!(
            &deserialize_bytes(&mut de, "thing").unwrap()[..],
            &[0x0a, 0xff]
        );
    }
}
