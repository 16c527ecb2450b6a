//! How a job request carries a Cashu payment (docs/protocol.md §17.4): a `cashu` param whose
//! value is a `cashuB…` token P2PK-locked (NUT-11) to the DVM's key, in a request NIP-44
//! encrypted to that DVM (§4), so no token ever stands in a clear tag. A priced DVM answers a
//! request without one with NIP-90 `payment-required` feedback carrying `amount` (millisats).

/// The request param that carries the token.
pub const PARAM_CASHU: &str = "cashu";

#[cfg(test)]
mod tests {
    use crate::nip90::JobParam;

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let param = JobParam::new(super::PARAM_CASHU, "cashuBsecretvalue");
        let shown = format!("{param:?}");
        assert!(!shown.contains("cashuBsecretvalue"), "{shown}");
        assert!(shown.contains("***"));
    }
}
