//! How a job request carries a Cashu payment, and a result its change (docs/protocol.md §17.4).
//!
//! - To one DVM: a `cashu` param whose value is a `cashuB…` token P2PK-locked (NUT-11) to the
//!   DVM's key, in a request NIP-44 encrypted to that DVM (§4), so no token ever stands in a
//!   clear tag.
//! - To several DVMs at once (a quorum request, which is clear because it has several
//!   providers): one `["param", "cashu-sealed", DVM, PAYER, CIPHERTEXT]` per DVM, the token for
//!   that DVM NIP-44 encrypted from the payer's key to the DVM's.
//! - Change (a per-second price prepaid for the longest run, or the whole payment of a job that
//!   failed before it started): `["change", CIPHERTEXT]` on the result or `error` feedback, a
//!   token P2PK-locked to the payment's refund key (the payer's) and NIP-44 encrypted from the
//!   DVM's key to that same key.
//!
//! A priced DVM answers a request without a payment with NIP-90 `payment-required` feedback
//! carrying `amount` (millisats).

use nostr::nips::nip44;
use nostr::{Event, PublicKey, SecretKey, Tag};

use crate::nip90::{JobParam, JobRequest};
use crate::tags::{custom_tag, first_tag};

/// The request param that carries the token (inside an encrypted request).
pub const PARAM_CASHU: &str = "cashu";
/// The request param that carries one DVM's token in a clear request to several DVMs.
pub const PARAM_CASHU_SEALED: &str = "cashu-sealed";
/// The result / feedback tag that carries the change, sealed to the payer.
pub const TAG_CHANGE: &str = "change";

/// Why a sealed token or change could not be made or opened. Never carries the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaymentError {
    #[error("cannot seal the token: {0}")]
    Seal(String),
    #[error("cannot open the sealed token: {0}")]
    Open(String),
    #[error("malformed `{PARAM_CASHU_SEALED}` param: {0}")]
    Malformed(String),
}

/// `["param", "cashu-sealed", DVM, PAYER, NIP44(payer → dvm, token)]`.
pub fn seal_for(payer: &SecretKey, dvm: &PublicKey, token: &str) -> Result<JobParam, PaymentError> {
    let from = nostr::Keys::new(payer.clone()).public_key();
    let sealed = nip44::encrypt(payer, dvm, token, nip44::Version::V2)
        .map_err(|e| PaymentError::Seal(e.to_string()))?;
    Ok(JobParam {
        key: PARAM_CASHU_SEALED.into(),
        values: vec![dvm.to_hex(), from.to_hex(), sealed],
    })
}

/// The token `request` carries for the DVM with key `dvm`: its `cashu` param (an encrypted
/// request to it alone), else the `cashu-sealed` param addressed to it, opened. `None`: no
/// payment for this DVM.
pub fn token_for(request: &JobRequest, dvm: &SecretKey) -> Option<Result<String, PaymentError>> {
    if let Some(token) = request.param_value(PARAM_CASHU) {
        return Some(Ok(token.to_string()));
    }
    let me = nostr::Keys::new(dvm.clone()).public_key().to_hex();
    let values = request
        .params
        .iter()
        .filter(|p| p.key == PARAM_CASHU_SEALED)
        .map(|p| p.values.as_slice())
        .find(|values| values.first() == Some(&me))?;
    let [_, from, sealed] = values else {
        return Some(Err(PaymentError::Malformed(
            "want DVM, PAYER and the sealed token".into(),
        )));
    };
    let Ok(from) = PublicKey::from_hex(from) else {
        return Some(Err(PaymentError::Malformed(format!(
            "{from:?} is not a 64-hex public key"
        ))));
    };
    Some(nip44::decrypt(dvm, &from, sealed).map_err(|e| PaymentError::Open(e.to_string())))
}

/// `["change", NIP44(dvm → payer, token)]`.
pub fn change_tag(dvm: &SecretKey, payer: &PublicKey, token: &str) -> Result<Tag, PaymentError> {
    let sealed = nip44::encrypt(dvm, payer, token, nip44::Version::V2)
        .map_err(|e| PaymentError::Seal(e.to_string()))?;
    Ok(custom_tag(TAG_CHANGE, [sealed]))
}

/// The sealed change on a result or feedback event, if any.
pub fn change_of(event: &Event) -> Option<&str> {
    first_tag(event, TAG_CHANGE)
        .and_then(|t| t.get(1))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Opens sealed change from `dvm` with the payer's key.
pub fn open_change(
    sealed: &str,
    payer: &SecretKey,
    dvm: &PublicKey,
) -> Result<String, PaymentError> {
    nip44::decrypt(payer, dvm, sealed).map_err(|e| PaymentError::Open(e.to_string()))
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, Kind};

    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let param = JobParam::new(super::PARAM_CASHU, "cashuBsecretvalue");
        let shown = format!("{param:?}");
        assert!(!shown.contains("cashuBsecretvalue"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_dvm() {
        let (payer, dvm, other) = (Keys::generate(), Keys::generate(), Keys::generate());
        let mut request = JobRequest::new(Kind::from_u16(5702)).unwrap();
        request
            .params
            .push(seal_for(payer.secret_key(), &other.public_key(), "cashuBforother").unwrap());
        request
            .params
            .push(seal_for(payer.secret_key(), &dvm.public_key(), "cashuBforme").unwrap());
        let shown = format!("{request:?}");
        assert!(!shown.contains("cashuB"), "{shown}");
        assert_eq!(
            token_for(&request, dvm.secret_key()),
            Some(Ok("cashuBforme".into()))
        );
        assert_eq!(
            token_for(&request, other.secret_key()),
            Some(Ok("cashuBforother".into()))
        );
        assert_eq!(token_for(&request, payer.secret_key()), None);
    }

    #[test]
    fn change_opens_only_with_the_payers_key() {
        let (payer, dvm, stranger) = (Keys::generate(), Keys::generate(), Keys::generate());
        let tag = change_tag(dvm.secret_key(), &payer.public_key(), "cashuBchange").unwrap();
        let event = nostr::EventBuilder::new(Kind::from_u16(6702), "")
            .tag(tag)
            .sign_with_keys(&dvm)
            .unwrap();
        let sealed = change_of(&event).expect("a change tag");
        assert!(!sealed.contains("cashuB"));
        assert_eq!(
            open_change(sealed, payer.secret_key(), &dvm.public_key()).unwrap(),
            "cashuBchange"
        );
        assert!(open_change(sealed, stranger.secret_key(), &dvm.public_key()).is_err());
    }
}
