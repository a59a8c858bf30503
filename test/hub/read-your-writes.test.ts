import t, { type Test } from 'tap'
import { openStream, type Received } from '../helpers/clients.js'
import { natsClient, natsOverrides, natsUrl, removeNatsStreams } from '../helpers/nats.js'
import { startServer, storeOverrides, type TestServer } from '../helpers/server.js'
import { waitUntil } from '../helpers/wait.js'

const TRIES = 40
// Six scenarios of 80 posts and streams on FerretDB: 2 minutes on a quiet machine, over tap's 5 on a busy one.
t.setTimeout(900_000)
/**
 * The live wait, generous: on a busy machine the NATS writer or the FerretDB tail can lag seconds,
 * and past the wait an event not stored yet comes after `live` (the fallback, counted and printed).
 */
const streams = { liveWaitMs: 15_000 }

/**
 * Post, get 2xx, open a stream at once (SSE and WebSocket, `TRIES` each, alternating, half of them
 * resuming from the previous event, half asking for the room's whole live state): the acknowledged
 * event must come in the replay, before `live`, and `live` must carry a position at or past it.
 */
async function postThenStream(t: Test, poster: TestServer, reader: TestServer, room: string): Promise<void> {
  let previous: string | undefined
  const late: string[] = []
  const started = Date.now()
  for (let i = 0; i < 2 * TRIES; i++) {
    // A 503 is no acknowledgement: the client sends it again with the same key (README), and the
    // rule applies to the 202. Printed: on a busy machine the store's deadline can pass.
    let r = await poster.post({ room, text: `m${i}` }, { 'idempotency-key': `${room}-${i}` })
    for (let retry = 0; r.status === 503 && retry < 3; retry++) {
      t.comment(`post ${i} answered 503 (${JSON.stringify(r.body)}): sent again with its key`)
      r = await poster.post({ room, text: `m${i}` }, { 'idempotency-key': `${room}-${i}` })
    }
    if (!t.equal(r.status, 202, 'acknowledged')) {
      t.comment(JSON.stringify(r.body))
      return
    }
    const id = String(r.body.id)
    const transport = i % 2 === 0 ? 'sse' : 'ws'
    const resume = i % 4 < 2 ? previous : undefined
    const s = openStream(transport, reader, `/messages?room=${room}`, resume)
    try {
      await s.waitFor((es) => es.some((e) => e.type === 'live') && es.some((e) => e.id === id), 15_000, `event ${id} and live (${transport})`)
      const events: Received[] = s.events
      const at = events.findIndex((e) => e.id === id && e.type !== 'live')
      const live = events.findIndex((e) => e.type === 'live')
      if (at > live || BigInt(events[live].id) < BigInt(id)) late.push(`${transport} ${id} (${resume === undefined ? 'whole state' : `after ${resume}`})`)
      const ids = events.filter((e) => e.type !== 'live').map((e) => e.id)
      t.equal(new Set(ids).size, ids.length, 'no duplicate')
    } finally {
      s.close()
    }
    previous = id
  }
  const { positionQueries, liveWaitsExpired } = reader.app.hub.stats
  t.comment(`reader: ${positionQueries} position queries, ${liveWaitsExpired} live waits past the deadline (gap read from the store)`)
  t.same(late, [], `${2 * TRIES} streams opened right after a 202: every acknowledged event before live (${Date.now() - started} ms)`)
}

t.test('embedded store: post, then a stream at once', async (t) => {
  const s = await startServer({ ...storeOverrides('memory'), streams })
  t.teardown(() => s.close())
  await postThenStream(t, s, s, 'ryw-embedded')
})

t.test('MongoDB store (FerretDB): post, then a stream at once, same instance', async (t) => {
  const s = await startServer({ ...storeOverrides('mongodb'), streams })
  t.teardown(() => s.close())
  await postThenStream(t, s, s, 'ryw-mongo')
})

t.test('MongoDB store (FerretDB), two instances: post to one, open the stream on the other', async (t) => {
  const a = await startServer({ ...storeOverrides('mongodb'), streams })
  t.teardown(() => a.close())
  const b = await startServer({ store: a.config.store, streams })
  t.teardown(() => b.close())
  await postThenStream(t, a, b, 'ryw-two')
  await postThenStream(t, b, a, 'ryw-two-back')
})

/** Instances on one FerretDB collection and one JetStream stream; closed, then the stream removed. */
async function natsInstances(t: Test, n: number): Promise<TestServer[]> {
  const url = natsUrl()
  const first = await startServer({ ...natsOverrides(url), ...storeOverrides('mongodb'), streams })
  const servers = [first]
  for (let i = 1; i < n; i++) servers.push(await startServer({ store: first.config.store, nats: first.config.nats, streams }))
  t.teardown(async () => {
    for (const s of servers) await s.close()
    const nc = await natsClient(url)
    await removeNatsStreams(nc, first.config.nats.stream)
    await nc.close()
  })
  return servers
}

t.test('NATS + MongoDB store (FerretDB): post, then a stream at once', async (t) => {
  const [s] = await natsInstances(t, 1)
  await postThenStream(t, s, s, 'ryw-nats')
})

t.test('NATS + MongoDB store (FerretDB), two instances: post to one, open the stream on the other', async (t) => {
  const [a, b] = await natsInstances(t, 2)
  await postThenStream(t, a, b, 'ryw-nats-two')
  await postThenStream(t, b, a, 'ryw-nats-two-back')
})

t.test('NATS: a dead-lettered message as the newest does not hold streams for the live wait', async (t) => {
  const url = natsUrl()
  const s = await startServer({ ...natsOverrides(url), ...storeOverrides('mongodb'), streams: { liveWaitMs: 20_000 } })
  const nc = await natsClient(url)
  t.teardown(async () => {
    await s.close()
    await removeNatsStreams(nc, s.config.nats.stream)
    await nc.close()
  })
  const r = await s.post({ room: 'dl', text: 'stored' })
  t.equal(r.status, 202)
  // Not an event: the writer dead-letters it, and it never reaches the store.
  const subject = s.config.nats.subject.replace('>', 'dl')
  await nc.jetstream().publish(subject, Buffer.from('not json'))
  await waitUntil(() => ((s.app.nats?.state.deadLettered ?? 0) >= 1 ? true : undefined), 20_000, 'the dead letter')
  for (const transport of ['sse', 'ws'] as const) {
    const started = Date.now()
    const c = openStream(transport, s, '/messages?room=dl')
    t.teardown(() => c.close())
    await c.waitFor((es) => es.some((e) => e.type === 'live'), 15_000, 'live')
    const ms = Date.now() - started
    t.ok(ms < 10_000, `${transport}: live after ${ms} ms, well inside the 20 s live wait`)
    t.ok(c.events.findIndex((e) => e.id === String(r.body.id)) < c.events.findIndex((e) => e.type === 'live'), 'the stored event before live')
  }
  t.equal(s.app.hub.stats.liveWaitsExpired, 0, 'no live wait ran out')
})
