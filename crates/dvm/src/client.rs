//! The customer side of a job: publish a request, follow its feedback live, return its outcome.
//!
//! Several providers may answer one open request; the first terminal answer (a result, or
//! `error` feedback) decides. Address a provider (`p` tag) to hear only from it.

use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::nip89::Announcement;
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobRequest, JobResult, Nip90Error};

use crate::publish::{self, PublishError, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no relay given")]
    NoRelays,
    #[error("cannot add relay {url}: {reason}")]
    Relay { url: String, reason: String },
    #[error("cannot build the request: {0}")]
    Request(#[from] Nip90Error),
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error("cannot subscribe for answers: {0}")]
    Subscribe(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no DVM took the job within {0:?}")]
    NotTaken(Duration),
    #[error("the DVM working on it fell silent for {0:?} (it may have died)")]
    Silent(Duration),
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// A provider published a result; `content` is decrypted if the request was encrypted.
    Result {
        request: Event,
        event: Event,
        provider: PublicKey,
        content: String,
    },
    /// A provider answered with `error` feedback; for an encrypted request it is opened
    /// (decrypted with the customer's key): `extra` holds the reason and `content` the log tail,
    /// in the clear.
    Error {
        request: Event,
        provider: PublicKey,
        feedback: JobFeedback,
    },
}

impl JobOutcome {
    /// The DVM that answered.
    pub fn provider(&self) -> &PublicKey {
        match self {
            JobOutcome::Result { provider, .. } | JobOutcome::Error { provider, .. } => provider,
        }
    }

    /// The change the answer carries, sealed to the payer (docs/protocol.md §17.4).
    pub fn sealed_change(&self) -> Option<&str> {
        match self {
            JobOutcome::Result { event, .. } => quorum_proto::payment::change_of(event),
            JobOutcome::Error { feedback, .. } => feedback.change.as_deref(),
        }
    }
}

/// Progress reports while a job runs (the CLI prints them).
pub trait JobReporter: Send {
    /// Feedback that does not end the job: processing, partial, payment-required, and the
    /// `error` of one provider while others still work on an open request; `content` is
    /// decrypted.
    fn feedback(&mut self, provider: &PublicKey, feedback: &JobFeedback, content: &str);
}

/// Ignores progress.
pub struct Quiet;

impl JobReporter for Quiet {
    fn feedback(&mut self, _: &PublicKey, _: &JobFeedback, _: &str) {}
}

/// How long to wait for signs of life from the DVMs of a job.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// No feedback at all this long after publishing: nobody took the job.
    pub until_taken: Duration,
    /// No feedback this long from a DVM that said `processing`: it is gone. DVMs of this
    /// runtime repeat `processing` every 30 s while they work (see `DvmConfig::heartbeat`).
    pub silence: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            until_taken: Duration::from_secs(60),
            silence: Duration::from_secs(150),
        }
    }
}

/// A customer connected to some relays, signing (and NIP-44 encrypting and decrypting) with
/// one signer: a local key, or a NIP-46 bunker that holds the key elsewhere.
pub struct JobClient {
    client: Client,
    signer: std::sync::Arc<dyn NostrSigner>,
    public_key: PublicKey,
    patience: Patience,
    /// `created_at` of the last request. Two identical requests signed by one key in the same
    /// second are the same event (same id): the second would be a relay duplicate whose
    /// answers this client has already seen. Each request is therefore stamped at least one
    /// second after the previous one.
    last_created: std::sync::Mutex<Timestamp>,
}

impl JobClient {
    pub async fn connect(
        relays: &[RelayUrl],
        signer: impl IntoNostrSigner,
    ) -> Result<JobClient, ClientError> {
        if relays.is_empty() {
            return Err(ClientError::NoRelays);
        }
        let signer = signer.into_nostr_signer();
        // Asked once: a bunker answers over the network, and the key does not change.
        let public_key = signer
            .get_public_key()
            .await
            .map_err(|e| ClientError::Sign(format!("the signer has no public key: {e}")))?;
        let client = Client::builder().signer(signer.clone()).build();
        for url in relays {
            client
                .add_relay(url.clone())
                .await
                .map_err(|e| ClientError::Relay {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        }
        client.connect().await;
        publish::wait_for_any(&client, Duration::from_secs(5)).await;
        Ok(JobClient {
            client,
            signer,
            public_key,
            patience: Patience::default(),
            last_created: std::sync::Mutex::new(Timestamp::from(0)),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The clear text of `content` that `other` NIP-44 encrypted to this client (or that this
    /// client encrypted to `other`: the conversation key is the same from both sides), or
    /// `content` itself when it is not `encrypted`.
    async fn decrypt(
        &self,
        encrypted: bool,
        content: &str,
        other: &PublicKey,
    ) -> Result<String, String> {
        if !encrypted || content.is_empty() {
            return Ok(content.to_string());
        }
        self.signer
            .nip44_decrypt(other, content)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sets how long [`JobClient::run`] waits for signs of life before giving up on a job.
    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// Events matching `filter` on the client's relays (stored ones, up to `timeout`).
    pub async fn fetch(
        &self,
        filter: Filter,
        timeout: Duration,
    ) -> Result<Vec<Event>, ClientError> {
        // Not waiting for relays known to be failing: they would hold every read up.
        publish::fetch(&self.client, filter, timeout)
            .await
            .map_err(|e| ClientError::Subscribe(e.to_string()))
    }

    /// The clear content of a result for one of this client's requests, if `event` is a valid
    /// result that answers a request this client signed.
    pub async fn open_result(&self, event: &Event) -> Option<(JobResult, String)> {
        let result = JobResult::from_event(event).ok()?;
        if result.request.pubkey != self.public_key {
            return None;
        }
        let content = self
            .decrypt(result.encrypted, &result.content, &event.pubkey)
            .await
            .ok()?;
        Some((result, content))
    }

    /// A request this client signed, parsed (and decrypted with our key if it was encrypted to
    /// its provider: NIP-44's conversation key is the same from both sides).
    pub async fn open_request(&self, request: &Event) -> Option<JobRequest> {
        if request.pubkey != self.public_key {
            return None;
        }
        if !JobRequest::is_encrypted(request) {
            return JobRequest::from_event(request).ok();
        }
        let provider = JobRequest::encrypted_to(request).ok()?;
        let plaintext = self.decrypt(true, &request.content, &provider).await.ok()?;
        JobRequest::from_event_with_plaintext(request, &plaintext).ok()
    }

    /// The DVMs that announce (NIP-89) that they serve `kind`, newest announcement per DVM,
    /// skipping announcements that are not Quorum CI offers.
    pub async fn discover(
        &self,
        kind: Kind,
        timeout: Duration,
    ) -> Result<Vec<(PublicKey, Announcement)>, ClientError> {
        let filter = Filter::new()
            .kind(quorum_proto::nip89::HANDLER_INFORMATION)
            .custom_tag(
                SingleLetterTag::lowercase(Alphabet::K),
                kind.as_u16().to_string(),
            );
        let events = publish::fetch(&self.client, filter, timeout)
            .await
            .map_err(|e| ClientError::Subscribe(e.to_string()))?;
        let mut newest: std::collections::BTreeMap<PublicKey, (Timestamp, Announcement)> =
            Default::default();
        for event in events {
            if event.verify().is_err() {
                continue;
            }
            let Ok(announcement) = Announcement::from_event(&event) else {
                continue;
            };
            let keep = newest
                .get(&event.pubkey)
                .is_none_or(|(at, _)| *at < event.created_at);
            if keep {
                newest.insert(event.pubkey, (event.created_at, announcement));
            }
        }
        Ok(newest
            .into_iter()
            .map(|(key, (_, announcement))| (key, announcement))
            .collect())
    }

    /// Signs `request` (NIP-44 encrypted to its one provider if `encrypt`), stamped at least a
    /// second after this client's previous request.
    async fn sign(&self, request: &JobRequest, encrypt: bool) -> Result<Event, ClientError> {
        let builder = if encrypt {
            let (provider, plaintext) = request.secret_payload()?;
            let ciphertext = self
                .signer
                .nip44_encrypt(&provider, &plaintext)
                .await
                .map_err(|e| ClientError::Sign(format!("cannot encrypt the request: {e}")))?;
            request.to_event_builder_with_ciphertext(ciphertext)
        } else {
            request.to_event_builder()
        };
        let created_at = {
            let mut last = self.last_created.lock().expect("timestamp lock");
            let next = Timestamp::now().max(*last + 1);
            *last = next;
            next
        };
        builder
            .custom_created_at(created_at)
            .sign(&self.signer)
            .await
            .map_err(|e| ClientError::Sign(e.to_string()))
    }

    /// Signs `builder` with this client's key and publishes it (for non-job events the client
    /// owns, such as approval requests).
    pub async fn publish_event(&self, builder: EventBuilder) -> Result<Event, ClientError> {
        let event = builder
            .sign(&self.signer)
            .await
            .map_err(|e| ClientError::Sign(e.to_string()))?;
        publish::publish(&self.client, &event, RetryPolicy::default()).await?;
        Ok(event)
    }

    /// The relays this client reads from and publishes to.
    pub async fn relays(&self) -> Vec<RelayUrl> {
        self.client.relays().await.into_keys().collect()
    }

    /// Copies `events` (already signed, by anyone) to `relays`, which this client need not be
    /// connected to — e.g. those a repository's announcement lists, where its followers look.
    /// Best effort and bounded: everything is over after `timeout`. Returns, per relay that
    /// did not take every event, why.
    pub async fn copy_to(
        events: &[Event],
        relays: &[RelayUrl],
        timeout: Duration,
    ) -> Vec<(RelayUrl, String)> {
        if events.is_empty() || relays.is_empty() {
            return Vec::new();
        }
        let client = Client::builder().build();
        let mut failures: std::collections::BTreeMap<RelayUrl, String> = Default::default();
        for url in relays {
            if let Err(e) = client.add_relay(url.clone()).await {
                failures.insert(url.clone(), e.to_string());
            }
        }
        let copy = async {
            client.connect().await;
            client.wait_for_connection(timeout / 2).await;
            for event in events {
                let targets: Vec<RelayUrl> = relays
                    .iter()
                    .filter(|url| !failures.contains_key(*url))
                    .cloned()
                    .collect();
                if targets.is_empty() {
                    break;
                }
                match client.send_event_to(targets.clone(), event).await {
                    Ok(output) => {
                        for (url, reason) in output.failed {
                            failures.entry(url).or_insert(reason);
                        }
                    }
                    Err(e) => {
                        for url in targets {
                            failures.entry(url).or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
        };
        if tokio::time::timeout(timeout, copy).await.is_err() {
            for url in relays {
                failures
                    .entry(url.clone())
                    .or_insert_with(|| format!("not done within {timeout:?}"));
            }
        }
        client.shutdown().await;
        failures.into_iter().collect()
    }

    /// Publishes an event someone else signed (e.g. through a NIP-46 bunker).
    pub async fn publish_signed(&self, event: &Event) -> Result<(), ClientError> {
        publish::publish(&self.client, event, RetryPolicy::default()).await?;
        Ok(())
    }

    /// Publishes `request` without following it (for requests whose answers someone else
    /// reads); returns the published event.
    pub async fn submit(&self, request: &JobRequest, encrypt: bool) -> Result<Event, ClientError> {
        let event = self.sign(request, encrypt).await?;
        publish::publish(&self.client, &event, RetryPolicy::default()).await?;
        Ok(event)
    }

    /// Publishes `request` (NIP-44 encrypted to its one provider if `encrypt`), follows it,
    /// and returns the first terminal answer.
    pub async fn run(
        &self,
        request: &JobRequest,
        encrypt: bool,
        timeout: Duration,
        reporter: &mut dyn JobReporter,
    ) -> Result<JobOutcome, ClientError> {
        let event = self.sign(request, encrypt).await?;
        self.follow_inner(&event, request.providers.clone(), true, timeout, reporter)
            .await
    }

    /// Publishes `request`, which names several providers (a quorum job), and collects each
    /// provider's terminal answer (its result or its `error`), one per provider. Returns the
    /// published request and the answers once every provider answered, once `enough` says the
    /// answers so far suffice, or at `timeout` (with whatever arrived). Fails only if nobody
    /// took the job at all.
    pub async fn run_many(
        &self,
        request: &JobRequest,
        timeout: Duration,
        reporter: &mut dyn JobReporter,
        enough: impl Fn(&[JobOutcome]) -> bool,
    ) -> Result<(Event, Vec<JobOutcome>), ClientError> {
        let event = self.sign(request, false).await?;
        let answers = self
            .collect_many(&event, true, timeout, reporter, enough)
            .await?;
        Ok((event, answers))
    }

    /// [`JobClient::run_many`] for a request someone else published (the next step of a
    /// quorum chain, signed by the quorum key): answers already on the relays count.
    pub async fn follow_many(
        &self,
        event: &Event,
        timeout: Duration,
        reporter: &mut dyn JobReporter,
        enough: impl Fn(&[JobOutcome]) -> bool,
    ) -> Result<Vec<JobOutcome>, ClientError> {
        self.collect_many(event, false, timeout, reporter, enough)
            .await
    }

    async fn collect_many(
        &self,
        event: &Event,
        publish_it: bool,
        timeout: Duration,
        reporter: &mut dyn JobReporter,
        enough: impl Fn(&[JobOutcome]) -> bool,
    ) -> Result<Vec<JobOutcome>, ClientError> {
        let wanted: std::collections::HashSet<PublicKey> =
            event.tags.public_keys().copied().collect();
        let mut notifications = self.client.notifications();
        let mut kinds = vec![quorum_proto::kinds::JOB_FEEDBACK];
        kinds.extend(quorum_proto::kinds::result_kind_for(event.kind));
        let subscription = self
            .client
            .subscribe(Filter::new().kinds(kinds).event(event.id), None)
            .await
            .map_err(|e| ClientError::Subscribe(e.to_string()))?;
        if publish_it {
            publish::publish(&self.client, event, RetryPolicy::default()).await?;
        }
        let mut answers: Vec<JobOutcome> = Vec::new();
        let mut heard: std::collections::HashSet<PublicKey> = Default::default();
        let deadline = tokio::time::Instant::now() + timeout;
        let taken_by = tokio::time::Instant::now() + self.patience.until_taken;
        let answered = |answers: &[JobOutcome]| -> std::collections::HashSet<PublicKey> {
            answers
                .iter()
                .map(|a| match a {
                    JobOutcome::Result { provider, .. } | JobOutcome::Error { provider, .. } => {
                        *provider
                    }
                })
                .collect()
        };
        let outcome = loop {
            if !wanted.is_empty() && answered(&answers).len() == wanted.len() {
                break Ok(());
            }
            if !answers.is_empty() && enough(&answers) {
                break Ok(());
            }
            let wake = if heard.is_empty() {
                deadline.min(taken_by)
            } else {
                deadline
            };
            let notification = match tokio::time::timeout_at(wake, notifications.recv()).await {
                Err(_) if heard.is_empty() && wake < deadline => {
                    break Err(ClientError::NotTaken(self.patience.until_taken));
                }
                Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break Ok(()),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event: answer, .. } = notification else {
                continue;
            };
            if !answer.tags.event_ids().any(|id| *id == event.id)
                || (!wanted.is_empty() && !wanted.contains(&answer.pubkey))
                || answer.verify().is_err()
            {
                continue;
            }
            heard.insert(answer.pubkey);
            if answered(&answers).contains(&answer.pubkey) {
                continue;
            }
            if let Some(outcome) = self.interpret(event, &answer, reporter).await {
                answers.push(outcome);
            }
        };
        self.client.unsubscribe(&subscription.val).await;
        outcome.map(|()| answers)
    }

    /// Follows a request someone else published (the next step of a naive chain) to its first
    /// terminal answer; answers already on the relays count.
    pub async fn follow(
        &self,
        event: &Event,
        timeout: Duration,
        reporter: &mut dyn JobReporter,
    ) -> Result<JobOutcome, ClientError> {
        let providers = event.tags.public_keys().copied().collect();
        self.follow_inner(event, providers, false, timeout, reporter)
            .await
    }

    /// Waits for a job request matching `filter` and `accept` (stored or live).
    pub async fn await_request(
        &self,
        filter: Filter,
        accept: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event, ClientError> {
        let mut notifications = self.client.notifications();
        let subscription = self
            .client
            .subscribe(filter, None)
            .await
            .map_err(|e| ClientError::Subscribe(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let found = loop {
            match tokio::time::timeout_at(deadline, notifications.recv()).await {
                Err(_) => break Err(ClientError::NotTaken(timeout)),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => break Err(ClientError::NotTaken(timeout)),
                Ok(Ok(RelayPoolNotification::Event { event, .. }))
                    if event.verify().is_ok() && accept(&event) =>
                {
                    break Ok(*event);
                }
                Ok(Ok(_)) => {}
            }
        };
        self.client.unsubscribe(&subscription.val).await;
        found
    }

    async fn follow_inner(
        &self,
        event: &Event,
        wanted: Vec<PublicKey>,
        publish_it: bool,
        timeout: Duration,
        reporter: &mut dyn JobReporter,
    ) -> Result<JobOutcome, ClientError> {
        // Subscribe before publishing, so that no answer can slip past.
        let mut notifications = self.client.notifications();
        let mut kinds = vec![quorum_proto::kinds::JOB_FEEDBACK];
        kinds.extend(quorum_proto::kinds::result_kind_for(event.kind));
        self.client
            .subscribe(Filter::new().kinds(kinds).event(event.id), None)
            .await
            .map_err(|e| ClientError::Subscribe(e.to_string()))?;
        if publish_it {
            publish::publish(&self.client, event, RetryPolicy::default()).await?;
        }
        let event = event.clone();
        let mut working: std::collections::HashSet<PublicKey> = Default::default();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut alive_until = tokio::time::Instant::now() + self.patience.until_taken;
        loop {
            let wake = deadline.min(alive_until);
            let notification = match tokio::time::timeout_at(wake, notifications.recv()).await {
                Err(_) if wake == deadline => return Err(ClientError::Timeout(timeout)),
                Err(_) if working.is_empty() => {
                    return Err(ClientError::NotTaken(self.patience.until_taken));
                }
                Err(_) => return Err(ClientError::Silent(self.patience.silence)),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(ClientError::Timeout(timeout));
                }
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event: answer, .. } = notification else {
                continue;
            };
            if !answer.tags.event_ids().any(|id| *id == event.id)
                || (!wanted.is_empty() && !wanted.contains(&answer.pubkey))
                || answer.verify().is_err()
            {
                continue;
            }
            match self.interpret(&event, &answer, reporter).await {
                Some(JobOutcome::Error {
                    provider, feedback, ..
                }) if working.iter().any(|other| *other != provider) => {
                    // Another provider is still at it: this one's failure is not the verdict.
                    working.remove(&provider);
                    reporter.feedback(&provider, &feedback, &feedback.content);
                }
                Some(outcome) => return Ok(outcome),
                None => {
                    working.insert(answer.pubkey);
                    alive_until = tokio::time::Instant::now() + self.patience.silence;
                }
            }
        }
    }

    async fn interpret(
        &self,
        request: &Event,
        answer: &Event,
        reporter: &mut dyn JobReporter,
    ) -> Option<JobOutcome> {
        let provider = answer.pubkey;
        if answer.kind == quorum_proto::kinds::JOB_FEEDBACK {
            let mut feedback = JobFeedback::from_event(answer).ok()?;
            if feedback.status == FeedbackStatus::Error {
                if feedback.encrypted {
                    // The reason of an encrypted job's failure travels encrypted (NIP-90: the
                    // content of feedback on an encrypted request is encrypted too).
                    match self.decrypt(true, &feedback.content, &provider).await {
                        Ok(clear) => crate::runtime::open_error(&mut feedback, clear),
                        Err(err) => {
                            tracing::warn!(provider = %provider, "cannot decrypt error feedback: {err}")
                        }
                    }
                }
                return Some(JobOutcome::Error {
                    request: request.clone(),
                    provider,
                    feedback,
                });
            }
            let content = self
                .decrypt(feedback.encrypted, &feedback.content, &provider)
                .await
                .unwrap_or_default();
            reporter.feedback(&provider, &feedback, &content);
            // A DVM this request was addressed to will not work unpaid, and this client pays
            // only up front (docs/protocol.md §17.4): waiting cannot help, so it ends the job.
            if feedback.status == FeedbackStatus::PaymentRequired
                && request.tags.public_keys().any(|p| *p == provider)
            {
                return Some(JobOutcome::Error {
                    request: request.clone(),
                    provider,
                    feedback,
                });
            }
            return None;
        }
        let result = match JobResult::from_event(answer) {
            Ok(result) if result.request.id == request.id => result,
            Ok(_) => return None,
            Err(err) => {
                tracing::warn!(provider = %provider, "ignoring an invalid result: {err}");
                return None;
            }
        };
        let content = match self
            .decrypt(result.encrypted, &result.content, &provider)
            .await
        {
            Ok(content) => content,
            Err(err) => {
                tracing::warn!(provider = %provider, "cannot decrypt a result: {err}");
                return None;
            }
        };
        Some(JobOutcome::Result {
            request: request.clone(),
            event: answer.clone(),
            provider,
            content,
        })
    }

    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

/// The lines of `next` that come after what `prev` already showed: `partial` feedback carries
/// overlapping log tails, and a viewer wants each line once.
pub fn new_lines<'a>(prev: &str, next: &'a str) -> Vec<&'a str> {
    let next_lines: Vec<&str> = next.lines().collect();
    let Some(last_seen) = prev.lines().last() else {
        return next_lines;
    };
    match next_lines.iter().rposition(|line| *line == last_seen) {
        Some(i) => next_lines[i + 1..].to_vec(),
        None => next_lines,
    }
}

#[cfg(test)]
mod tests {
    use super::new_lines;

    #[test]
    fn only_new_tail_lines() {
        assert_eq!(new_lines("", "a\nb"), ["a", "b"]);
        assert_eq!(new_lines("a\nb", "a\nb\nc"), ["c"]);
        assert_eq!(new_lines("x\ny", "b\nc"), ["b", "c"]);
    }
}
