//! Naive chains: a job request that carries the rest of its pipeline.
//!
//! The `chain` param holds, as JSON, the steps after this one. The DVM that finishes the job
//! publishes the request for the next step itself, signed with its own key: the step's kind,
//! provider, inputs and params, plus a `job` input naming this request, an `upstream_result`
//! param pinning the exact result it published (several DVMs may answer one request), the
//! remaining chain, and the chain's root as `e`, so that whoever started it can follow every
//! step on the relays. Every DVM in the chain is trusted: that is what "naive" means.

use nostr::{Event, EventId, Kind, PublicKey};
use serde::{Deserialize, Serialize};

use crate::nip90::{InputType, JobInput, JobParam, JobRequest, Nip90Error};

/// The param holding the rest of the chain.
pub const PARAM_CHAIN: &str = "chain";
/// The param pinning the upstream step's result event.
pub const PARAM_UPSTREAM_RESULT: &str = "upstream_result";
/// The marker of the `job` input naming the upstream request.
pub const MARKER_UPSTREAM: &str = "upstream";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("`chain` param is not a JSON list of steps: {0}")]
    Json(String),
    #[error("chain step: {0}")]
    Step(#[from] Nip90Error),
    #[error("chain step provider {0:?} is not a 64-hex public key")]
    Provider(String),
}

/// One step of a chain: a job request minus what the previous DVM fills in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStep {
    pub kind: u16,
    /// The DVM to ask (hex), or anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// More DVMs the step is addressed to (hex): a quorum step names every member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    /// `i` tags without the leading "i": `[data, type, relay?, marker?]`.
    #[serde(default)]
    pub inputs: Vec<Vec<String>>,
    /// `param` tags without the leading "param": `[key, value…]`.
    #[serde(default)]
    pub params: Vec<Vec<String>>,
}

impl ChainStep {
    /// The step a request describes (its kind, provider, inputs and params).
    pub fn of(request: &JobRequest) -> Self {
        let tag_values = |tag: nostr::Tag| tag.to_vec().split_off(1);
        ChainStep {
            kind: request.kind.as_u16(),
            provider: request.providers.first().map(PublicKey::to_hex),
            also: request
                .providers
                .iter()
                .skip(1)
                .map(PublicKey::to_hex)
                .collect(),
            inputs: request
                .inputs
                .iter()
                .map(|i| tag_values(i.to_tag()))
                .collect(),
            params: request
                .params
                .iter()
                .map(|p| tag_values(p.to_tag()))
                .collect(),
        }
    }

    fn to_request(&self) -> Result<JobRequest, ChainError> {
        let mut request = JobRequest::new(Kind::from_u16(self.kind))?;
        for provider in self.provider.iter().chain(&self.also) {
            request.providers.push(
                PublicKey::from_hex(provider)
                    .map_err(|_| ChainError::Provider(provider.clone()))?,
            );
        }
        for values in &self.inputs {
            let [data, kind, rest @ ..] = values.as_slice() else {
                return Err(ChainError::Json("an input needs data and a type".into()));
            };
            let input_type: InputType = kind.parse()?;
            request.inputs.push(JobInput {
                data: data.clone(),
                input_type,
                relay: None,
                marker: rest.get(1).filter(|m| !m.is_empty()).cloned(),
            });
        }
        for values in &self.params {
            let [key, rest @ ..] = values.as_slice() else {
                return Err(ChainError::Json("a param needs a key".into()));
            };
            request.params.push(JobParam {
                key: key.clone(),
                values: rest.to_vec(),
            });
        }
        Ok(request)
    }
}

/// Encodes the steps after this one as the `chain` param value.
pub fn encode(steps: &[ChainStep]) -> String {
    serde_json::to_string(steps).expect("chain steps serialise")
}

/// The next request of the chain `request` carries, once `result` answered it; `None` when the
/// request carries no chain (or an empty one).
pub fn next_request(
    request_event: &Event,
    request: &JobRequest,
    result: EventId,
) -> Option<Result<JobRequest, ChainError>> {
    let chain = request.param_value(PARAM_CHAIN)?;
    let steps: Vec<ChainStep> = match serde_json::from_str(chain) {
        Ok(steps) => steps,
        Err(err) => return Some(Err(ChainError::Json(err.to_string()))),
    };
    let (first, rest) = steps.split_first()?;
    Some(first.to_request().map(|mut next| {
        next.inputs
            .push(JobInput::job(request_event.id, None).with_marker(MARKER_UPSTREAM));
        next.params
            .push(JobParam::new(PARAM_UPSTREAM_RESULT, result.to_hex()));
        if !rest.is_empty() {
            next.params.push(JobParam::new(PARAM_CHAIN, encode(rest)));
        }
        next.parent = Some(request.parent.unwrap_or(request_event.id));
        next
    }))
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    #[test]
    fn each_step_publishes_the_next_with_the_rest_and_pins_the_result() {
        let keys = Keys::generate();
        let provider = Keys::generate().public_key();
        let step = |name: &str| {
            JobRequest::new(Kind::from_u16(5702))
                .unwrap()
                .input(JobInput::url("https://git.example/r.git").with_marker("repo"))
                .param("job", name)
                .provider(provider)
        };
        let mut first = step("a");
        first.params.push(JobParam::new(
            PARAM_CHAIN,
            encode(&[ChainStep::of(&step("b")), ChainStep::of(&step("c"))]),
        ));
        let first_event = first.to_event_builder().sign_with_keys(&keys).unwrap();
        let result = EventId::all_zeros();

        let second = next_request(&first_event, &first, result).unwrap().unwrap();
        assert_eq!(second.param_value("job"), Some("b"));
        assert_eq!(second.providers, vec![provider]);
        assert_eq!(
            second.param_value(PARAM_UPSTREAM_RESULT),
            Some(result.to_hex().as_str())
        );
        assert_eq!(
            second.parent,
            Some(first_event.id),
            "the root is the first request"
        );
        let upstream = second
            .inputs
            .iter()
            .find(|i| i.marker.as_deref() == Some(MARKER_UPSTREAM));
        assert_eq!(upstream.unwrap().event_id(), Some(first_event.id));

        let second_event = second.to_event_builder().sign_with_keys(&keys).unwrap();
        let third = next_request(&second_event, &second, result)
            .unwrap()
            .unwrap();
        assert_eq!(third.param_value("job"), Some("c"));
        assert_eq!(
            third.parent,
            Some(first_event.id),
            "the root stays the same"
        );
        assert_eq!(third.param_value(PARAM_CHAIN), None, "the chain ends");
        let third_event = third.to_event_builder().sign_with_keys(&keys).unwrap();
        assert!(next_request(&third_event, &third, result).is_none());
    }

    #[test]
    fn a_broken_chain_is_an_error_not_a_guess() {
        let keys = Keys::generate();
        let request = JobRequest::new(Kind::from_u16(5702))
            .unwrap()
            .param(PARAM_CHAIN, "[{\"kind\": 42}]");
        let event = request.to_event_builder().sign_with_keys(&keys).unwrap();
        assert!(matches!(
            next_request(&event, &request, EventId::all_zeros()),
            Some(Err(ChainError::Step(_)))
        ));
        let garbage = JobRequest::new(Kind::from_u16(5702))
            .unwrap()
            .param(PARAM_CHAIN, "{");
        let event = garbage.to_event_builder().sign_with_keys(&keys).unwrap();
        assert!(matches!(
            next_request(&event, &garbage, EventId::all_zeros()),
            Some(Err(ChainError::Json(_)))
        ));
    }
}
