import t, { type Test } from 'tap'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { mongoConfig } from '../helpers/mongo.js'
import { startServer } from '../helpers/server.js'
import { MongoEventStore } from '../../src/store/mongo-store.js'

/** Delivery times (post sent to event received) of `n` posts, one after another, on a server over a collection of `size` events. */
async function deliveryOnCollectionOf(t: Test, size: number, n: number): Promise<number[]> {
  // The collection is full before the server starts, as on a restart.
  const mongodb = mongoConfig({ cappedMax: 100_000, cappedSize: 256 * 1024 * 1024 })
  // Seeding is not what is measured: a generous deadline for its large inserts on a busy machine.
  const seed = new MongoEventStore({ ...mongodb, timeoutMs: 60_000 })
  await seed.open()
  try {
    const now = new Date().toISOString()
    for (let done = 0; done < size; done += 500) {
      await seed.append(Array.from({ length: Math.min(500, size - done) }, (_, i) => ({ type: 'message', room: 'bulk', time: now, data: { text: `b${done + i}` } })))
    }
  } finally {
    await seed.close()
  }
  const server = await startServer({ store: { type: 'mongodb', mongodb }, streams: { historyMaxEvents: 1000 } })
  t.teardown(() => server.close())
  const live = openStream('sse', server, '/messages?room=fresh')
  t.teardown(() => live.close())
  await live.waitFor(isLive, 10_000, 'live')
  const ms: number[] = []
  for (let i = 0; i < n; i++) {
    const sent = performance.now()
    const res = await server.post({ text: `x${i}`, room: 'fresh' })
    await live.waitFor((es) => dataEvents(es).some((e) => e.id === res.body.id), 15_000, `x${i}`)
    ms.push((dataEvents(live.events).find((e) => e.id === res.body.id)?.receivedAt ?? Infinity) - sent)
    await new Promise((r) => setTimeout(r, 50))
  }
  await server.close()
  return ms
}

t.test('live delivery on a 20,000-event FerretDB collection is as fast as on a 1,000-event one (the tail costs the new events, not the collection)', async (t) => {
  const small = await deliveryOnCollectionOf(t, 1000, 10)
  const large = await deliveryOnCollectionOf(t, 20_000, 10)
  const p50 = (xs: number[]): number => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)])
  const max = (xs: number[]): number => Math.round(Math.max(...xs))
  t.comment(`1,000 events: p50 ${p50(small)} ms, max ${max(small)} ms; 20,000 events: p50 ${p50(large)} ms, max ${max(large)} ms`)
  // Before, the tail re-scanned the collection on every poll: p50 1.9 s, max 3.0 s at 20,000.
  t.ok(p50(large) < p50(small) + 400, `p50 at 20,000 (${p50(large)} ms) close to p50 at 1,000 (${p50(small)} ms)`)
  t.ok(max(large) < max(small) + 1000, `max at 20,000 (${max(large)} ms) close to max at 1,000 (${max(small)} ms)`)
})
