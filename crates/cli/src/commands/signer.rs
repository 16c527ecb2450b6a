//! Who signs a maintainer's events (verdicts on approval gates, mandates): a local key file, or
//! a NIP-46 remote signer (bunker), so that the maintainer's key need not be on this machine.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_proto::nostr::{Event, EventBuilder, Keys, PublicKey};

pub enum Signer {
    Local(Keys),
    Bunker(Box<nostr_connect::prelude::NostrConnect>),
}

impl Signer {
    /// The signer `--key FILE` or `--bunker URI` names (exactly one of them).
    pub async fn open(key: Option<&Path>, bunker: Option<&str>) -> anyhow::Result<Signer> {
        use nostr_connect::prelude::{NostrConnect, NostrConnectURI};
        match (key, bunker) {
            (Some(path), _) => Ok(Signer::Local(quorum_dvm::keyfile::load(path)?)),
            (None, Some(uri)) => {
                // The URI's secret is a credential: never echo it.
                let uri = NostrConnectURI::parse(uri)
                    .map_err(|_| anyhow::anyhow!("--bunker is not a bunker:// URI"))?;
                let bunker =
                    NostrConnect::new(uri, Keys::generate(), Duration::from_secs(120), None)
                        .context("cannot use the bunker")?;
                Ok(Signer::Bunker(Box::new(bunker)))
            }
            (None, None) => bail!("give --key FILE or --bunker URI"),
        }
    }

    /// The signer `--key FILE | --bunker URI` of a maintainer's command names.
    pub async fn from_args(args: &crate::cli::MaintainerSigner) -> anyhow::Result<Signer> {
        Signer::open(args.key.as_deref(), args.bunker.as_deref()).await
    }

    pub async fn public_key(&self) -> anyhow::Result<PublicKey> {
        use quorum_proto::nostr::NostrSigner;
        match self {
            Signer::Local(keys) => Ok(keys.public_key()),
            Signer::Bunker(bunker) => bunker
                .get_public_key()
                .await
                .context("the bunker did not answer"),
        }
    }

    pub async fn sign(&self, builder: EventBuilder) -> anyhow::Result<Event> {
        match self {
            Signer::Local(keys) => Ok(builder.sign_with_keys(keys)?),
            Signer::Bunker(bunker) => builder
                .sign(bunker.as_ref())
                .await
                .context("the bunker did not sign"),
        }
    }

    /// The signer as the router's release takes it (`ReleaseOptions::nip82_signer`), and the
    /// bunker connection to shut down once the release is published.
    pub fn into_shared(
        self,
    ) -> (
        std::sync::Arc<dyn quorum_proto::nostr::NostrSigner>,
        Option<std::sync::Arc<nostr_connect::prelude::NostrConnect>>,
    ) {
        match self {
            Signer::Local(keys) => (std::sync::Arc::new(keys), None),
            Signer::Bunker(bunker) => {
                let bunker = std::sync::Arc::new(*bunker);
                (bunker.clone(), Some(bunker))
            }
        }
    }

    /// The local key, for what only a local key can do (dealing shares: NIP-44 from it).
    pub fn local(&self) -> Option<&Keys> {
        match self {
            Signer::Local(keys) => Some(keys),
            Signer::Bunker(_) => None,
        }
    }

    pub async fn shutdown(self) {
        if let Signer::Bunker(bunker) = self {
            bunker.shutdown().await;
        }
    }
}
