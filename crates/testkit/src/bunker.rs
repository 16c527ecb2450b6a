//! A NIP-46 remote signer ("bunker") as a bunker app runs it, on nostr-connect's own
//! implementation: tests give a command its `bunker://` URI and check that the key it holds
//! signed, while that key never reached the command.

use nostr_connect::prelude::{
    Keys, NostrConnectKeys, NostrConnectRemoteSigner, NostrConnectRequest,
    NostrConnectSignerActions, PublicKey,
};

/// A bunker serving `user`'s key over `relay`, approving every request, until dropped.
pub struct Bunker {
    uri: String,
    serving: tokio::task::JoinHandle<()>,
}

struct ApproveAll;

impl NostrConnectSignerActions for ApproveAll {
    fn approve(&self, _: &PublicKey, _: &NostrConnectRequest) -> bool {
        true
    }
}

impl Bunker {
    /// Starts serving (needs a Tokio runtime).
    pub fn serve(relay: &str, user: Keys) -> Bunker {
        let signer = NostrConnectRemoteSigner::new(
            NostrConnectKeys {
                signer: Keys::generate(),
                user,
            },
            [relay],
            None,
            None,
        )
        .expect("a bunker on a valid relay URL");
        let uri = signer.bunker_uri().to_string();
        let serving = tokio::spawn(async move {
            let _ = signer.serve(ApproveAll).await;
        });
        Bunker { uri, serving }
    }

    /// The `bunker://` URI a client connects with (it holds the connection secret).
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl Drop for Bunker {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
