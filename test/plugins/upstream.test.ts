import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import { dataEvents, isLive, openSse, openWs } from '../helpers/clients.js'
import { freePort, startServer, type TestServer } from '../helpers/server.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const fast = { reconnectMinMs: 50, reconnectMaxMs: 300 }

function relayOf(upstreamUrl: string, port = 0, extra: Record<string, unknown> = {}): Promise<TestServer> {
  return startServer({ port, upstream: { url: upstreamUrl, ...fast, ...extra } })
}

t.test('producer -> relay (WS) -> relay (SSE) -> consumer: the middle relay restarts while events flow', async (t) => {
  const producer = await startServer()
  let relay1 = await relayOf(`${producer.wsUrl}/messages?room=chain`)
  const port1 = Number(new URL(relay1.url).port)
  const relay2 = await relayOf(`${relay1.url}/messages?room=chain`)
  const consumer = openWs(`${relay2.wsUrl}/messages?room=chain`)
  const sseConsumer = openSse(`${relay2.url}/messages?room=chain`)
  t.teardown(async () => {
    consumer.close()
    sseConsumer.close()
    await relay2.close()
    await relay1.close()
    await producer.close()
  })
  await consumer.waitFor(isLive, 5000, 'consumer live')
  await sseConsumer.waitFor(isLive, 5000, 'sse consumer live')

  const posted: string[] = []
  const refusedPosts: number[] = []
  for (let i = 0; i < 300; i++) {
    if (i === 100) {
      await relay1.close()
      // Events keep flowing into the producer while the middle relay is down.
    }
    if (i === 150) {
      // Back on the same port with an empty embedded store: it rebuilds from the producer.
      relay1 = await relayOf(`${producer.wsUrl}/messages?room=chain`, port1)
    }
    if (i === 220) {
      // And once more keeping its store: it resumes after its newest id.
      const kept = new MemoryEventStore(10_000)
      await relay1.close()
      const warm = await startServer({ upstream: { url: `${producer.wsUrl}/messages?room=chain`, ...fast } }, { store: kept })
      await sleep(200)
      await warm.close()
      relay1 = await startServer({ port: port1, upstream: { url: `${producer.wsUrl}/messages?room=chain`, ...fast } }, { store: kept })
    }
    const res = await producer.post({ text: `m${i}`, room: 'chain' })
    if (res.status === 202) posted.push(res.body.id as string)
    else refusedPosts.push(res.status)
    await sleep(3)
  }
  t.same(refusedPosts, [], 'the producer accepted every event')
  const all = (ev: { type: string }[]): boolean => dataEvents(ev as never).length >= 300
  await consumer.waitFor(all, 20_000, 'the consumer to get 300 events')
  await sseConsumer.waitFor(all, 20_000, 'the SSE consumer to get 300 events')
  await sleep(200)
  for (const [name, c] of [['WS consumer', consumer], ['SSE consumer', sseConsumer]] as const) {
    t.same(dataEvents(c.events).map((e) => e.id), posted, `${name}: exactly the producer's sequence, upstream ids kept`)
    t.same(dataEvents(c.events).map((e) => e.data.text), posted.map((_, i) => `m${i}`))
    t.notOk(c.events.some((e) => e.type === 'reset'), `${name}: no reset`)
  }

  // A consumer resuming on the last relay resumes exactly.
  const resumed = openSse(`${relay2.url}/messages?room=chain`, { 'last-event-id': posted[199] })
  t.teardown(() => resumed.close())
  await resumed.waitFor(isLive, 5000, 'resumed live')
  t.same(dataEvents(resumed.events).map((e) => e.id), posted.slice(200), 'resume on the last relay is exact')

  const post = await relay2.post({ text: 'x', room: 'chain' })
  t.equal(post.status, 409, 'a relay is read-only')
  t.match(post.body.message, /read-only relay/)
  const posting = await (await fetch(`${relay2.url}/posting`)).json()
  t.match(posting, { enabled: false, reason: /read-only relay/ }, 'GET /posting tells a page not to offer sending')
  t.equal(relay2.app.upstream?.position, Number(posted[299]), 'relay status knows its position')
  const ready = await fetch(`${relay2.url}/ready`)
  t.same(await ready.json(), { status: 'ready', store: 'ok', upstream: 'connected' })
})

t.test('an upstream that refuses, then comes up: streams get 503 naming the problem until the relay follows it', async (t) => {
  const port = await freePort() // nothing listens there yet
  const relay = await relayOf(`ws://127.0.0.1:${port}/messages?room=late`, 0, { catchUpTimeoutMs: 300 })
  t.teardown(() => relay.close())
  const started = Date.now()
  const early = openWs(`${relay.wsUrl}/messages?room=late`)
  t.teardown(() => early.close())
  t.equal(await early.status, 503, 'a stream request is refused while the upstream is not followed')
  t.ok(Date.now() - started >= 250, 'after waiting for the upstream (bounded)')
  t.match(await early.errorBody, { statusCode: 503, error: 'Service Unavailable', message: new RegExp(`not yet following the upstream ws://127\\.0\\.0\\.1:${port}/messages\\?room=late \\(upstream\\.url, env TAILCAST_UPSTREAM\\): connect ECONNREFUSED`) })
  const sse = openSse(`${relay.url}/messages?room=late`)
  t.teardown(() => sse.close())
  t.equal(await sse.status, 503, 'over SSE too')
  t.match(await sse.errorBody, { message: /ECONNREFUSED/ })
  const ready = await fetch(`${relay.url}/ready`)
  t.equal(ready.status, 503, '/ready: not ready')
  t.match(await ready.json(), { status: 'not ready', store: 'ok', upstream: /not yet following .*ECONNREFUSED/ })
  t.equal(relay.app.upstream?.connected, false, 'not connected while the upstream refuses')

  const producer = await startServer({ port })
  t.teardown(() => producer.close())
  for (let i = 0; (await fetch(`${relay.url}/ready`)).status !== 200; i++) {
    if (i > 250) throw new Error('the relay did not become ready once the upstream was up')
    await sleep(20)
  }
  t.same(await (await fetch(`${relay.url}/ready`)).json(), { status: 'ready', store: 'ok', upstream: 'connected' }, 'ready once it follows the upstream')
  const consumer = openWs(`${relay.wsUrl}/messages?room=late`)
  t.teardown(() => consumer.close())
  await consumer.waitFor(isLive, 5000, 'the stream works once the upstream is followed')
  const ids: string[] = []
  for (let i = 0; i < 5; i++) ids.push((await producer.post({ text: `late${i}`, room: 'late' })).body.id)
  await consumer.waitFor((ev) => dataEvents(ev).length >= 5, 10_000, 'events once the upstream is up')
  t.same(dataEvents(consumer.events).map((e) => e.id), ids)
})

t.test('an upstream URL that is wrong (a 404, /health which is JSON, a redirect) stops the relay: /ready and streams say why', async (t) => {
  const producer = await startServer()
  t.teardown(() => producer.close())
  const redirect = http.createServer((_req, res) => res.writeHead(301, { location: `${producer.url}/messages?room=a&token=hunter2` }).end())
  await new Promise<void>((r) => redirect.listen(0, '127.0.0.1', r))
  t.teardown(() => redirect.close())
  const cases: [string, string, RegExp][] = [
    ['404 over SSE', `${producer.url}/nowhere`, /answered 404/],
    ['404 over WebSocket', `${producer.wsUrl}/nowhere?token=hunter2`, /ws:\/\/127\.0\.0\.1:\d+\/nowhere\?token=\[redacted\] answered 404/],
    ['/health over SSE', `${producer.url}/health`, /answered 200: application\/json.*, not a stream \(a tailcast stream URL is \/messages, \/v1\/competitions or \/v1\/competitions\/ID\)/],
    ['/health over WebSocket', `${producer.wsUrl}/health`, /\/health answered 101: switched to WebSocket, then closed it \(1005\) before any message: not a stream/],
    ['a redirect', `http://127.0.0.1:${(redirect.address() as AddressInfo).port}/messages`, /answered 301: a redirect to http:\/\/127\.0\.0\.1:\d+\/messages\?room=a&token=\[redacted\]: give that URL/],
  ]
  for (const [name, url, reason] of cases) {
    // A token in the URL makes the upstream private: this relay serves it on purpose (upstream.public).
    const relay = await relayOf(url, 0, { catchUpTimeoutMs: 5000, public: true })
    for (let i = 0; i < 250 && relay.app.upstream?.stopped === null; i++) await sleep(20)
    t.match(relay.app.upstream?.stopped, reason, `${name}: the status says why relaying stopped`)
    const ready = await fetch(`${relay.url}/ready`)
    t.equal(ready.status, 503, `${name}: /ready 503`)
    const readyBody = await ready.json()
    t.match(readyBody, { status: 'not ready', upstream: reason }, `${name}: /ready names the problem`)
    for (const open of [openSse, openWs]) {
      const c = open === openSse ? openSse(`${relay.url}/v1/competitions`) : openWs(`${relay.wsUrl}/messages`)
      t.equal(await c.status, 503, `${name}: a stream request gets 503 at once`)
      t.match(await c.errorBody, { statusCode: 503, error: 'Service Unavailable', message: reason })
      c.close()
    }
    t.notMatch(JSON.stringify(readyBody), /hunter2/, `${name}: no credential shown`)
    await relay.close()
  }
})

t.test('serve --upstream config: env TAILCAST_UPSTREAM and a bad URL', async (t) => {
  const { loadConfig } = await import('../../src/config.js')
  t.equal(loadConfig({ env: { TAILCAST_UPSTREAM: 'ws://127.0.0.1:9/v1/competitions' } }).upstream.url, 'ws://127.0.0.1:9/v1/competitions')
  t.throws(() => loadConfig({ env: { TAILCAST_UPSTREAM: 'ftp://x' } }), /upstream\.url/)
})

t.test('upstream reset: a restarted empty upstream is followed on; a replaced history stops the relay, never mixed in', async (t) => {
  let producer = await startServer()
  const port = Number(new URL(producer.url).port)
  const relay = await relayOf(`${producer.wsUrl}/messages?room=r`)
  const consumer = openWs(`${relay.wsUrl}/messages?room=r`)
  t.teardown(async () => {
    consumer.close()
    await relay.close()
    await producer.close()
  })
  await consumer.waitFor(isLive, 5000, 'live')
  const ids: string[] = []
  for (let i = 0; i < 3; i++) ids.push((await producer.post({ text: `a${i}`, room: 'r' })).body.id)
  await consumer.waitFor((ev) => dataEvents(ev).length >= 3, 5000, 'first events')

  // The upstream restarts on a fresh embedded store: its ids are clock-seeded, so they keep increasing.
  await producer.close()
  producer = await startServer({ port })
  await sleep(300)
  for (let i = 0; i < 3; i++) ids.push((await producer.post({ text: `b${i}`, room: 'r' })).body.id)
  await consumer.waitFor((ev) => dataEvents(ev).length >= 6, 5000, 'events of the restarted upstream')
  t.same(dataEvents(consumer.events).map((e) => e.id), ids, 'the relay followed the restarted upstream')
  t.equal(relay.app.upstream?.stopped, null)

  // Now an upstream whose ids are below the relay's: another history. The relay must not mix it in.
  await producer.close()
  const other = new MemoryEventStore(100)
  const time = new Date().toISOString()
  await other.append([{ type: 'message', room: 'r', time, data: { text: 'c0' } }, { type: 'message', room: 'r', time, data: { text: 'c1' } }], [1000, 1001])
  producer = await startServer({ port }, { store: other })
  for (let i = 0; i < 100 && relay.app.upstream?.stopped === null; i++) await sleep(30)
  t.match(relay.app.upstream?.stopped, /replaced its history/, 'relaying stopped with the reason')
  await sleep(200)
  t.same(dataEvents(consumer.events).map((e) => e.id), ids, 'nothing of the other history reached the consumer')
  t.same((await relay.app.store.bounds()).newest, Number(ids[5]))
})

t.test('a relay\'s control events carry the upstream\'s position: a client moves from the producer to the relay without a reset', async (t) => {
  // The producer's heartbeats tell the relay its position between events of the relayed stream.
  const producer = await startServer({ streams: { heartbeatSeconds: 0.1 } })
  const relay = await relayOf(`${producer.url}/v1/competitions/c1`)
  t.teardown(async () => {
    await relay.close()
    await producer.close()
  })
  for (let i = 0; i < 3; i++) t.equal((await producer.post({ type: 'LapCompleted', competitionId: 'c1', data: { i } })).status, 202)
  // Events of another competition move the producer's position past c1's last event.
  for (let i = 0; i < 3; i++) t.equal((await producer.post({ type: 'LapCompleted', competitionId: 'c2', data: { i } })).status, 202)
  const onProducer = openSse(`${producer.url}/v1/competitions/c1`)
  t.teardown(() => onProducer.close())
  await onProducer.waitFor(isLive, 5000, 'live on the producer')
  const live = onProducer.events.find((e) => e.type === 'live')
  const lastC1 = dataEvents(onProducer.events).at(-1)
  t.ok(Number(live?.id) > Number(lastC1?.id), `the producer's live position ${live?.id} is past c1's last event ${lastC1?.id}`)
  // The relay has caught up with c1 when its own stream is live.
  const warm = openSse(`${relay.url}/v1/competitions/c1`)
  t.teardown(() => warm.close())
  await warm.waitFor((es) => isLive(es) && dataEvents(es).length === 3, 5000, 'relay caught up')
  for (let tries = 0; relay.app.hub.position < Number(live?.id); tries++) {
    if (tries > 100) throw new Error(`the relay never learned the producer's position ${live?.id} (has ${relay.app.hub.position})`)
    await sleep(50)
  }

  for (const open of [openSse, openWs]) {
    const moved = open === openSse ? openSse(`${relay.url}/v1/competitions/c1`, { 'last-event-id': String(live?.id) }) : openWs(`${relay.wsUrl}/v1/competitions/c1?lastEventId=${live?.id}`)
    t.teardown(() => moved.close())
    await moved.waitFor(isLive, 5000, 'live on the relay')
    t.same(moved.events.map((e) => e.type), ['live'], 'no reset, nothing replayed twice: just live')
    t.equal(moved.events[0].id, live?.id, 'at the same position')
    moved.close()
  }
})
