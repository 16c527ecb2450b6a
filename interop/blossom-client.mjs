// hzrd149's blossom-client-sdk (the reference Blossom client) against a Blossom server.
//
// usage: node blossom-client.mjs <server-url> <secret-key-hex> [size-bytes]
//
// Uploads a random blob (BUD-06 HEAD /upload first, then PUT /upload with a BUD-11 token from
// nostr-tools' finalizeEvent), downloads it and re-hashes it, lists the key's blobs, deletes the
// blob and checks it is gone. Prints one JSON line with what it saw; exits non-zero on an
// unexpected failure (with the error on stderr).

import { createHash, randomBytes } from "node:crypto";
import { finalizeEvent, getPublicKey } from "nostr-tools/pure";
import { hexToBytes } from "nostr-tools/utils";
import {
  Actions,
  createUploadAuth,
  createListAuth,
  createDeleteAuth,
  createDownloadAuth,
} from "blossom-client-sdk";

const [server, skHex, sizeArg] = process.argv.slice(2);
if (!server || !/^[0-9a-f]{64}$/.test(skHex ?? "")) {
  console.error("usage: node blossom-client.mjs <server-url> <secret-key-hex> [size-bytes]");
  process.exit(2);
}
const sk = hexToBytes(skHex);
const pubkey = getPublicKey(sk);
const signer = async (draft) => finalizeEvent(draft, sk);
const size = Number(sizeArg ?? 200000);

const bytes = randomBytes(size);
const sha256 = createHash("sha256").update(bytes).digest("hex");
const blob = new Blob([bytes], { type: "application/octet-stream" });
const authTypes = [];

const result = { pubkey, sha256, size };

// Upload: the SDK probes HEAD /upload without auth, gets 401, then signs (scoped to the
// server's hostname and the hash).
const descriptor = await Actions.uploadBlob(server, blob, {
  onAuth: async (srv, hash, type) => {
    authTypes.push(type);
    return createUploadAuth(signer, hash, { servers: srv, type });
  },
});
result.descriptor = descriptor;
result.authTypes = authTypes;

// Download and re-hash.
const response = await Actions.downloadBlob(server, sha256, {
  onAuth: async (srv, hash) => createDownloadAuth(signer, [srv, hash]),
});
const fetched = Buffer.from(await response.arrayBuffer());
result.fetchedSha256 = createHash("sha256").update(fetched).digest("hex");
result.fetchedSize = fetched.length;
result.contentType = response.headers.get("content-type");

// List.
const list = await Actions.listBlobs(server, pubkey, {
  onAuth: async (srv) => createListAuth(signer, { servers: srv }),
});
result.listed = list.map((d) => d.sha256);

// Delete, then check.
result.deleted = await Actions.deleteBlob(server, sha256, {
  onAuth: async (srv, hash) => createDeleteAuth(signer, hash, { servers: srv }),
});
result.hasAfterDelete = await Actions.hasBlob(server, sha256);

console.log(JSON.stringify(result));
