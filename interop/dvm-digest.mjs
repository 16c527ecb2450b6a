// A minimal NIP-90 DVM written with nostr-tools, knowing nothing of Quorum CI: a "text digest"
// service (kind 5050 by default, result kind + 1000) as any third party might run one.
//
// usage: node dvm-digest.mjs <relay-url> [--kind K] [--lie] [--blossom SERVER-URL]
//
// For each request it may take (open, or `p`-tagging it), it publishes `processing` feedback
// and answers with a result whose content is `sha256=<hex of the UTF-8 text> words=<n>` for
// the request's first `text` input. A request without a `text` input, or an encrypted one,
// gets `error` feedback. With `--lie` it reports one word more than there are: a dishonest or
// broken DVM. It prints `dvm: <pubkey hex>` once subscribed and runs until killed.
//
// A request with `["param", "output", "blossom"]` gets its digest as a file instead: the DVM
// uploads the digest text to the `--blossom` server (hzrd149's blossom-client-sdk, a BUD-11
// token signed with its key) and answers `{"artifacts":[{"name":"digest.txt","sha256":…,
// "url":…}]}`, as DVMs that produce files commonly do. With `--lie` it uploads the lying
// digest but claims the sha256 of the honest one: a DVM that names the hash everyone else will
// answer without serving those bytes.

import { createHash } from 'node:crypto'
import WebSocket from 'ws'
import { Actions, createUploadAuth } from 'blossom-client-sdk'
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay'
import { finalizeEvent, generateSecretKey, getPublicKey } from 'nostr-tools/pure'

useWebSocketImplementation(WebSocket)

const usage = 'usage: node dvm-digest.mjs <relay-url> [--kind K] [--lie] [--blossom SERVER-URL]'
const args = process.argv.slice(2)
let url
let kind = 5050
let lie = false
let blossom
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--lie') lie = true
  else if (args[i] === '--kind') kind = Number(args[++i])
  else if (args[i] === '--blossom') blossom = args[++i]
  else if (!url) url = args[i]
  else {
    console.error(usage)
    process.exit(2)
  }
}
if (!url || !Number.isInteger(kind) || kind < 5000 || kind > 5999) {
  console.error(usage)
  process.exit(2)
}

const secret = generateSecretKey()
const pubkey = getPublicKey(secret)
const relay = await Relay.connect(url)
const seen = new Set()

const sign = (template) =>
  finalizeEvent({ created_at: Math.floor(Date.now() / 1000), ...template }, secret)

const feedback = (request, status, extra) =>
  relay.publish(
    sign({
      kind: 7000,
      content: '',
      tags: [['status', status, extra ?? ''], ['e', request.id], ['p', request.pubkey]],
    }),
  )

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

function digest(text, lying = lie) {
  const sha = sha256(Buffer.from(text, 'utf8'))
  const words = text.split(/\s+/).filter((w) => w.length > 0).length
  return `sha256=${sha} words=${lying ? words + 1 : words}`
}

// The digest as a file on the Blossom server, and the content that names it.
async function asFile(text) {
  const bytes = Buffer.from(digest(text), 'utf8')
  const signer = async (draft) => finalizeEvent(draft, secret)
  const descriptor = await Actions.uploadBlob(blossom, new Blob([bytes]), {
    onAuth: async (server, hash, type) => createUploadAuth(signer, hash, { servers: server, type }),
  })
  const claimed = lie ? sha256(Buffer.from(digest(text, false), 'utf8')) : descriptor.sha256
  return JSON.stringify({
    artifacts: [{ name: 'digest.txt', sha256: claimed, url: descriptor.url }],
  })
}

async function handle(request) {
  if (seen.has(request.id)) return
  seen.add(request.id)
  const providers = request.tags.filter((t) => t[0] === 'p').map((t) => t[1])
  if (providers.length > 0 && !providers.includes(pubkey)) return
  if (request.tags.some((t) => t[0] === 'encrypted')) {
    return feedback(request, 'error', 'encrypted requests are not supported')
  }
  const input = request.tags.find((t) => t[0] === 'i' && t[2] === 'text')
  if (!input) return feedback(request, 'error', 'no text input')
  const output = request.tags.find((t) => t[0] === 'param' && t[1] === 'output')?.[2]
  if (output !== undefined && (output !== 'blossom' || !blossom)) {
    return feedback(request, 'error', `cannot answer with output ${output}`)
  }
  await feedback(request, 'processing')
  let content
  try {
    content = output === 'blossom' ? await asFile(input[1]) : digest(input[1])
  } catch (e) {
    return feedback(request, 'error', `cannot store the digest: ${e}`)
  }
  await relay.publish(
    sign({
      kind: kind + 1000,
      content,
      tags: [
        ['request', JSON.stringify(request)],
        ['e', request.id],
        ['p', request.pubkey],
        ['i', input[1], 'text'],
      ],
    }),
  )
}

relay.subscribe([{ kinds: [kind], since: Math.floor(Date.now() / 1000) - 60 }], {
  onevent: (event) => {
    handle(event).catch((e) => console.error(`request ${event.id}: ${e}`))
  },
  oneose: () => console.log(`dvm: ${pubkey}`),
})
