// nostr-tools (the most used independent Nostr implementation) as a second opinion on what a
// relay serves and accepts.
//
// usage: node relay-verify.mjs <relay-url> <filter-json> [publish-content]
//
// 1. REQs <filter-json> and collects every stored event until EOSE. nostr-tools' own signature
//    check is switched off on the subscription so that an invalid event is *counted* rather than
//    silently dropped; each event is then checked here with verifyEvent (signature) and by
//    recomputing getEventHash (id).
// 2. Publishes a kind-1 event signed by nostr-tools (finalizeEvent, fresh key) and records
//    whether the relay answered OK true.
//
// Prints one JSON line:
//   {"count":N,"valid":N,"invalid":[ids],"published":{"ok":bool,"message":str,"event":{...}}}
// Exits non-zero only if the relay cannot be reached or does not answer in time.

import WebSocket from 'ws'
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay'
import { finalizeEvent, generateSecretKey, getEventHash, verifyEvent } from 'nostr-tools/pure'

useWebSocketImplementation(WebSocket)

const [url, filterJson, content = 'published by nostr-tools'] = process.argv.slice(2)
if (!url || !filterJson) {
  console.error('usage: node relay-verify.mjs <relay-url> <filter-json> [publish-content]')
  process.exit(2)
}
const filter = JSON.parse(filterJson)

const fail = (msg) => {
  console.error(msg)
  process.exit(1)
}
const timer = setTimeout(() => fail('relay-verify: timed out'), 20_000)

const relay = await Relay.connect(url, { verifyEvent: () => true }).catch((e) =>
  fail(`cannot connect to ${url}: ${e}`),
)

const events = await new Promise((resolve, reject) => {
  const got = []
  const sub = relay.subscribe([filter], {
    onevent: (event) => got.push(event),
    oneose: () => {
      // Resolve first: close() reports "closed by caller" through onclose.
      resolve(got)
      sub.close()
    },
    onclose: (reason) => reject(new Error(`subscription closed: ${reason}`)),
  })
}).catch((e) => fail(`REQ failed: ${e}`))

const invalid = []
let valid = 0
for (const event of events) {
  // A fresh copy: verifyEvent caches its verdict on the object.
  const copy = JSON.parse(JSON.stringify(event))
  if (getEventHash(copy) === copy.id && verifyEvent(copy)) valid++
  else invalid.push(event.id)
}

const event = finalizeEvent(
  { kind: 1, created_at: Math.floor(Date.now() / 1000), tags: [['t', 'interop']], content },
  generateSecretKey(),
)
let published
try {
  const message = await relay.publish(event)
  published = { ok: true, message: message ?? '', event }
} catch (e) {
  published = { ok: false, message: String(e?.message ?? e), event }
}

relay.close()
clearTimeout(timer)
console.log(JSON.stringify({ count: events.length, valid, invalid, published }))
