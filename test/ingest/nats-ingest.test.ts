import { ANONYMOUS_SCOPE, scopedKey } from '../../src/idempotency.js'
import t from 'tap'
import type { NewEvent } from '../../src/event.js'
import type { EventStore } from '../../src/store/event-store.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import { dataEvents, isLive, openSse, openWs } from '../helpers/clients.js'
import { natsTestServer, ownNatsServer } from '../helpers/nats.js'
import { startServer } from '../helpers/server.js'

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))

t.test('events published with a NATS client and POSTed events show up in SSE and WebSocket streams', async (t) => {
  const { server, nc } = await natsTestServer(t)
  const cfg = server.config.nats
  const sse = openSse(`${server.url}/v1/competitions/c1`)
  const ws = openWs(`${server.wsUrl}/v1/competitions/c1`)
  t.teardown(() => (sse.close(), ws.close()))
  await sse.waitFor(isLive, 5000, 'sse live')
  await ws.waitFor(isLive, 5000, 'ws live')

  const js = nc.jetstream()
  const prefix = cfg.subject.slice(0, -1)
  const a = await js.publish(`${prefix}competition.c1`, enc({ type: 'ScoreEvent', competitionId: 'c1', data: { n: 1 } }))
  const b = await js.publish(`${prefix}anything.else`, enc({ type: 'ScoreEvent', competitionId: 'c1', time: '2026-11-22T18:00:00Z', data: { n: 2 } }))
  const posted = await server.post({ type: 'ScoreEvent', competitionId: 'c1', data: { n: 3 } })
  t.equal(posted.status, 202, 'POST accepted')
  const c = await js.publish(`${prefix}competition.c1`, enc({ type: 'ScoreEvent', competitionId: 'c1', data: { n: 4 } }))
  t.ok(Number(posted.body.id) > b.seq && Number(posted.body.id) < c.seq, `POST answered with its stream sequence ${posted.body.id}`)

  const expected = [String(a.seq), String(b.seq), posted.body.id, String(c.seq)]
  for (const client of [sse, ws]) {
    await client.waitFor((ev) => dataEvents(ev).length >= 4, 10_000, '4 events')
    const got = dataEvents(client.events)
    t.same(got.map((e) => e.id), expected, 'ids are the stream sequences, in publish order')
    t.same(got.map((e) => e.data.n), [1, 2, 3, 4], 'the events')
  }
  const [first, second] = dataEvents(sse.events)
  t.equal(first.sseId, first.id, 'SSE id: field is the event id')
  t.equal(second.time, '2026-11-22T18:00:00.000Z', 'a given time is kept (normalised)')
  t.ok(Math.abs(Date.parse(first.time) - Date.now()) < 60_000, 'a missing time is the time JetStream stored the message')
})

/** The real embedded store, with its first write slowed past the ack wait. */
function slowFirstWrite(inner: EventStore, delayMs: number): EventStore & { appends: number } {
  let appends = 0
  return {
    kind: inner.kind,
    get appends() {
      return appends
    },
    open: () => inner.open(),
    async append(events: NewEvent[], ids?: number[]) {
      if (appends++ === 0) await new Promise((r) => setTimeout(r, delayMs))
      return inner.append(events, ids)
    },
    findByKey: (k) => inner.findByKey(k),
    read: (f, a, l, o) => inner.read(f, a, l, o),
    bounds: () => inner.bounds(),
    newest: () => inner.newest(),
    newestEvents: (n, b) => inner.newestEvents(n, b),
    evictedThrough: () => inner.evictedThrough(),
    tail: (a, h) => inner.tail(a, h),
    ping: () => inner.ping(),
    close: () => inner.close(),
  }
}

t.test('a message redelivered after its ack wait elapsed is not stored twice', async (t) => {
  const store = slowFirstWrite(new MemoryEventStore(1000), 2500)
  const { server, nc } = await natsTestServer(t, { ackWaitSeconds: 1 }, { store })
  const cfg = server.config.nats
  const sse = openSse(`${server.url}/messages?room=r`)
  t.teardown(() => sse.close())
  await sse.waitFor(isLive, 5000, 'live')

  const js = nc.jetstream()
  const seqs: number[] = []
  for (let i = 0; i < 3; i++) seqs.push((await js.publish(`${cfg.subject.slice(0, -1)}room.r`, enc({ text: `m${i}`, room: 'r' }))).seq)
  await sse.waitFor((ev) => dataEvents(ev).length >= 3, 10_000, '3 events')

  // Wait until JetStream has redelivered (ack wait 1 s, first write 2.5 s) and the writer skipped them.
  const jsm = await nc.jetstreamManager()
  const until = Date.now() + 10_000
  let info = await jsm.consumers.info(cfg.stream, cfg.durable)
  // delivered.consumer_seq counts deliveries, delivered.stream_seq the last message delivered.
  while ((info.delivered.consumer_seq <= info.delivered.stream_seq || info.num_ack_pending > 0 || server.app.nats!.state.redeliveriesSkipped === 0) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100))
    info = await jsm.consumers.info(cfg.stream, cfg.durable)
  }
  t.ok(info.delivered.consumer_seq > info.delivered.stream_seq, `JetStream made ${info.delivered.consumer_seq} deliveries of ${info.delivered.stream_seq} messages`)
  t.ok(server.app.nats!.state.redeliveriesSkipped >= 1, `the writer recognised ${server.app.nats!.state.redeliveriesSkipped} redelivery(ies) as stored`)
  t.equal(info.num_ack_pending, 0, 'everything acked')
  await new Promise((r) => setTimeout(r, 300))
  t.same(dataEvents(sse.events).map((e) => Number(e.id)), seqs, 'the stream has each event once')
  t.same((await store.read({ kind: 'room', room: 'r' }, 0, 100)).map((e) => e.id), seqs, 'the store has each event once')
})

t.test('Idempotency-Key through NATS: a retry gets the first id (JetStream message id, then the stored key)', async (t) => {
  const { server } = await natsTestServer(t)
  const follower = openSse(`${server.url}/messages?room=k`)
  t.teardown(() => follower.close())
  await follower.waitFor(isLive, 5000, 'live')
  const key = { 'idempotency-key': 'nats-key-1' }
  const first = await server.post({ text: 'once', room: 'k' }, key)
  t.equal(first.status, 202)
  const retry = await server.post({ text: 'once', room: 'k' }, key)
  t.same(retry.body, { id: first.body.id }, 'the immediate retry (inside the duplicate window) gets the first id')
  await follower.waitFor((es) => dataEvents(es).length >= 1, 10_000, 'the event')
  t.equal((await server.app.store.findByKey(scopedKey(ANONYMOUS_SCOPE, 'nats-key-1')))?.id, Number(first.body.id), 'the writer stored the key, scoped to its publisher, with the event')
  const later = await server.post({ text: 'once', room: 'k' }, key)
  t.same(later.body, { id: first.body.id }, 'a later retry is answered from the store')
  const second = await server.post({ text: 'two', room: 'k' })
  await follower.waitFor((es) => dataEvents(es).length >= 2, 10_000, 'the next event')
  t.same(dataEvents(follower.events).map((e) => e.id), [first.body.id, second.body.id], 'stored once')
  // Another body under the key: 422, whether JetStream or the store answers it.
  const now = await server.post({ text: 'other', room: 'k' }, key)
  t.equal(now.status, 422, 'a reuse with another body is refused')
  const raced = await Promise.all([server.post({ text: 'x', room: 'k' }, { 'idempotency-key': 'nats-race' }), server.post({ text: 'y', room: 'k' }, { 'idempotency-key': 'nats-race' })])
  t.same(raced.map((r) => r.status).sort(), [202, 422], 'two bodies at once under one key: one stored, one refused')
  await follower.waitFor((es) => dataEvents(es).length >= 3, 10_000, 'the raced event')
  t.equal(dataEvents(follower.events).length, 3, 'nothing else stored')
})

t.test('a NATS server without JetStream stops the start with what to do (no waiting for it as for a cluster electing leaders)', async (t) => {
  const plain = await ownNatsServer({ jetstream: false })
  t.teardown(() => plain.dispose())
  await t.rejects(startServer({ nats: { url: plain.url } }), /NATS \(nats\.url\) has no JetStream: .*start nats-server with JetStream \(-js\)/)
})

t.test('memory budget: NATS messages waiting for the store count in tailcast_memory_bytes{part="ingest"}, headers included', async (t) => {
  const inner = new MemoryEventStore(1000)
  let open!: () => void
  const gate = new Promise<void>((r) => (open = r))
  const store = slowFirstWrite(inner, 0)
  const append = store.append.bind(store)
  store.append = async (events, ids) => {
    await gate
    return append(events, ids)
  }
  const { server, nc } = await natsTestServer(t, {}, { store })
  const cfg = server.config.nats
  const ingestBytes = async (): Promise<number> => {
    const text = await (await fetch(`${server.url}/metrics`)).text()
    return Number(/^tailcast_memory_bytes\{part="ingest"\} (\d+)/m.exec(text)?.[1])
  }
  t.equal(await ingestBytes(), 0, 'nothing held before any message')
  const js = nc.jetstream()
  const payload = 'p'.repeat(30_000)
  const h = (await import('nats')).headers()
  h.set('X-Padding', 'h'.repeat(2000))
  for (let i = 0; i < 20; i++) await js.publish(`${cfg.subject.slice(0, -1)}room.mem`, enc({ type: 'T', room: 'mem', data: { i, payload } }), { headers: h })
  // Held until the store answers: wait for the writer to have taken all 20 (bounded).
  let held = 0
  const until = Date.now() + 20_000
  while ((held = await ingestBytes()) < 20 * 32_000 && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  t.ok(held >= 20 * 32_000 && held < 20 * 40_000, `20 messages of 30 KB with 2 KB of headers held: ${held} bytes`) || t.comment(JSON.stringify(server.app.nats!.state))
  open()
  const until2 = Date.now() + 20_000
  while ((await inner.read({ kind: 'room', room: 'mem' }, 0, 100)).length < 20 && Date.now() < until2) await new Promise((r) => setTimeout(r, 50))
  t.equal((await inner.read({ kind: 'room', room: 'mem' }, 0, 100)).length, 20, 'all stored once the store answers')
  t.equal(await ingestBytes(), 0, 'and no longer held')
})
