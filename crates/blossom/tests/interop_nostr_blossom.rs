//! rust-nostr's `nostr-blossom` 0.44 client (a third-party implementation) against our server:
//! upload, get (whole and ranged), has, delete. Its `list_blobs` builds a wrong URL
//! (`/<pubkey>` instead of `/list/<pubkey>`), so list is not exercised with it.

mod common;

use common::*;
use nostr_blossom::prelude::BlossomClient as ThirdPartyClient;
use quorum_proto::nostr::Keys;
use quorum_proto::nostr::hashes::Hash;
use quorum_proto::nostr::hashes::sha256::Hash as Sha256Hash;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_blossom_client_against_our_server() {
    init_tracing();
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let keys = Keys::generate();
        let client = ThirdPartyClient::new(s.url.clone());
        let data = blob(42, 300_000);
        let h = sha(&data);
        let hash = Sha256Hash::from_byte_array(*h.as_bytes());

        // nostr-blossom 0.44 treats every status but 200 as an error, including BUD-02's
        // "201 Created" for a new blob; so the first upload "fails" with 201 and stores the blob.
        match client
            .upload_blob(
                data.clone(),
                Some("application/pdf".into()),
                None,
                Some(&keys),
            )
            .await
        {
            Ok(d) => assert_eq!(d.sha256, hash),
            Err(nostr_blossom::error::Error::Response { res, .. }) => {
                assert_eq!(res.status().as_u16(), 201, "unexpected refusal")
            }
            Err(e) => panic!("upload failed: {e}"),
        }
        assert!(s.server.store().contains(&h));
        assert!(
            s.server
                .store()
                .get(&h)
                .unwrap()
                .is_owner(&keys.public_key())
        );
        // The second upload of the same bytes is a 200 with a descriptor it can parse.
        let d = client
            .upload_blob(
                data.clone(),
                Some("application/pdf".into()),
                None,
                Some(&keys),
            )
            .await
            .unwrap();
        assert_eq!(d.sha256, hash);
        assert_eq!(d.size as usize, data.len());
        assert_eq!(d.mime_type.as_deref(), Some("application/pdf"));
        assert!(d.url.as_str().ends_with(&format!("{h}.pdf")));

        let got = client
            .get_blob(hash, None, None, None::<&Keys>)
            .await
            .unwrap();
        assert_eq!(got, data);
        let part = client
            .get_blob(hash, Some("bytes=10-19".into()), None, Some(&keys))
            .await
            .unwrap();
        assert_eq!(part, &data[10..20]);
        assert!(client.has_blob(hash, None, Some(&keys)).await.unwrap());

        // Someone else's delete is refused; the owner's works.
        let stranger = Keys::generate();
        assert!(client.delete_blob(hash, None, &stranger).await.is_err());
        assert!(client.has_blob(hash, None, None::<&Keys>).await.unwrap());
        client.delete_blob(hash, None, &keys).await.unwrap();
        assert!(!client.has_blob(hash, None, None::<&Keys>).await.unwrap());
        assert!(s.server.store().is_empty());
    })
    .await
    .unwrap();
}
