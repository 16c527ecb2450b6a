//! The request a wrapper sends to the ordinary DVM it wraps: the customer's job, minus what
//! only Quorum CI reads.

use nostr_sdk::prelude::{EventId, Kind, PublicKey, RelayUrl};
use quorum_pipeline::dispatch::{PARAM_BIND, PARAM_JOB};
use quorum_proto::nip90::{JobRequest, Nip90Error};
use quorum_proto::quorum_job::{PARAM_COMMIT, PARAM_MANDATE, PARAM_RELEASE, PARAM_SOURCE};

/// Params that are for the wrapper (the quorum params, the router's `job` and expression
/// bindings), never forwarded.
pub const OWN_PARAMS: [&str; 6] = [
    PARAM_MANDATE,
    PARAM_COMMIT,
    PARAM_RELEASE,
    PARAM_SOURCE,
    PARAM_JOB,
    PARAM_BIND,
];

/// The inner request for `outer` (whose event id is `outer_id`): kind `inner_kind`, the same
/// inputs, params (minus [`OWN_PARAMS`]), output, bid, expiration and content, answers
/// expected on `relays`, addressed to `provider` or open to the market. It names the outer
/// request as its parent (`e`), so the wrapper's own requests can be traced to the job they
/// serve.
pub fn inner_request(
    outer: &JobRequest,
    outer_id: EventId,
    inner_kind: Kind,
    provider: Option<PublicKey>,
    relays: &[RelayUrl],
) -> Result<JobRequest, Nip90Error> {
    let mut inner = JobRequest::new(inner_kind)?;
    inner.inputs = outer.inputs.clone();
    inner.params = outer
        .params
        .iter()
        .filter(|p| !OWN_PARAMS.contains(&p.key.as_str()))
        .cloned()
        .collect();
    inner.output = outer.output.clone();
    inner.bid_msats = outer.bid_msats;
    inner.expiration = outer.expiration;
    inner.content = outer.content.clone();
    inner.relays = relays.to_vec();
    inner.providers = provider.into_iter().collect();
    inner.parent = Some(outer_id);
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::{Keys, Timestamp};
    use quorum_proto::nip90::JobInput;
    use quorum_proto::quorum_job::QuorumJobParams;

    use super::*;

    #[test]
    fn quorum_params_stay_behind_and_the_rest_goes_through() {
        let wrapper = Keys::generate().public_key();
        let inner_dvm = Keys::generate().public_key();
        let mut outer = JobRequest::new(Kind::from_u16(5050))
            .unwrap()
            .input(JobInput::text("hello world"))
            .param("model", "digest")
            .param("job", "build")
            .provider(wrapper);
        outer.bid_msats = Some(1000);
        outer.expiration = Some(Timestamp::from(1_900_000_000));
        QuorumJobParams {
            mandate: EventId::all_zeros(),
            commit: "ab".repeat(20),
            release: None,
            source: None,
        }
        .apply(&mut outer);
        let relay = RelayUrl::parse("ws://127.0.0.1:7777").unwrap();
        let outer_id = EventId::from_byte_array([7; 32]);

        let inner = inner_request(
            &outer,
            outer_id,
            Kind::from_u16(5051),
            Some(inner_dvm),
            std::slice::from_ref(&relay),
        )
        .unwrap();
        assert_eq!(inner.kind, Kind::from_u16(5051));
        assert_eq!(inner.inputs, outer.inputs);
        let keys: Vec<&str> = inner.params.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["model"]);
        assert_eq!(inner.providers, [inner_dvm]);
        assert_eq!(inner.relays, [relay]);
        assert_eq!(inner.bid_msats, Some(1000));
        assert_eq!(inner.expiration, outer.expiration);
        assert_eq!(inner.parent, Some(outer_id));
        assert_eq!(QuorumJobParams::from_request(&inner).unwrap(), None);

        let open = inner_request(&outer, outer_id, Kind::from_u16(5050), None, &[]).unwrap();
        assert!(open.providers.is_empty());
    }

    #[test]
    fn the_inner_kind_must_be_a_job_request_kind() {
        let outer = JobRequest::new(Kind::from_u16(5050)).unwrap();
        let err = inner_request(&outer, EventId::all_zeros(), Kind::from_u16(1), None, &[]);
        assert!(err.is_err());
    }
}
