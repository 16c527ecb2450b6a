// A minimal NIP-90 DVM written with nostr-tools, knowing nothing of Quorum CI: a "malware
// scanner" (kind 5500, result 6500) as any third party might run one. Quorum CI must be able to
// use it as a pipeline step (`uses: dvm`) and, later, behind a wrapper DVM.
//
// usage: node dvm-scanner.mjs <relay-url> [kind]
//
// For each request it can read, it publishes `processing` feedback, fetches the `url` input,
// and answers with a result whose content is `CLEAN sha256=<hex> bytes=<n>` (or `error`
// feedback if the URL cannot be fetched). It prints `dvm: <pubkey hex>` once subscribed and
// runs until killed.

import { createHash } from 'node:crypto'
import WebSocket from 'ws'
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay'
import { finalizeEvent, generateSecretKey, getPublicKey } from 'nostr-tools/pure'

useWebSocketImplementation(WebSocket)

const [url, kindArg = '5500'] = process.argv.slice(2)
if (!url) {
  console.error('usage: node dvm-scanner.mjs <relay-url> [kind]')
  process.exit(2)
}
const kind = Number(kindArg)
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

async function handle(request) {
  if (seen.has(request.id)) return
  seen.add(request.id)
  const providers = request.tags.filter((t) => t[0] === 'p').map((t) => t[1])
  if (providers.length > 0 && !providers.includes(pubkey)) return
  const input = request.tags.find((t) => t[0] === 'i' && t[2] === 'url')
  if (!input) return feedback(request, 'error', 'no url input')
  await feedback(request, 'processing')
  try {
    const response = await fetch(input[1])
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const bytes = Buffer.from(await response.arrayBuffer())
    const sha = createHash('sha256').update(bytes).digest('hex')
    await relay.publish(
      sign({
        kind: kind + 1000,
        content: `CLEAN sha256=${sha} bytes=${bytes.length}`,
        tags: [
          ['request', JSON.stringify(request)],
          ['e', request.id],
          ['p', request.pubkey],
          ['i', input[1], 'url'],
        ],
      }),
    )
  } catch (e) {
    await feedback(request, 'error', `cannot fetch ${input[1]}: ${e.message}`)
  }
}

relay.subscribe([{ kinds: [kind], since: Math.floor(Date.now() / 1000) - 60 }], {
  onevent: (event) => {
    handle(event).catch((e) => console.error(`request ${event.id}: ${e}`))
  },
  oneose: () => console.log(`dvm: ${pubkey}`),
})
