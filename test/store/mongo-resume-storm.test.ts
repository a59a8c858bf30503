import t from 'tap'
import { dataEvents, isLive, openStream, type StreamClient } from '../helpers/clients.js'
import { mongoConfig } from '../helpers/mongo.js'
import { startServer } from '../helpers/server.js'
import { waitUntil } from '../helpers/wait.js'
import { MongoEventStore } from '../../src/store/mongo-store.js'

const STORM = 500
const BOUND_MS = 3000

t.test(`${STORM} resumes older than the history at once (FerretDB): live delivery and POSTs to other streams stay under ${BOUND_MS / 1000} s; leaving clients cancel their queued reads`, async (t) => {
  const mongodb = mongoConfig()
  // A history of 50 events and pages of 50: each old resume reads the store page after page.
  const server = await startServer({ store: { type: 'mongodb', mongodb }, streams: { historyMaxEvents: 50, replayPageSize: 50 } })
  t.teardown(() => server.close())
  const store = server.app.store as MongoEventStore
  const seeded = await store.append(Array.from({ length: 600 }, (_, i) => ({ type: 'message', room: 'old', time: new Date().toISOString(), data: { text: `o${i}` } })))
  await waitUntil(() => (server.app.hub.position >= seeded[seeded.length - 1].id ? true : undefined), 20_000, 'the tail past the seeded events')

  const live = openStream('sse', server, '/messages?room=fresh')
  t.teardown(() => live.close())
  await live.waitFor(isLive, 10_000, 'the live follower is live')

  /** Posts to the other stream, each timed to its answer and to its delivery. */
  const postAndDeliver = async (n: number, tag: string): Promise<{ postMs: number[]; deliverMs: number[] }> => {
    const postMs: number[] = []
    const deliverMs: number[] = []
    for (let i = 0; i < n; i++) {
      const sent = performance.now()
      const res = await server.post({ text: `${tag}${i}`, room: 'fresh' })
      postMs.push(performance.now() - sent)
      if (res.status !== 202) throw new Error(`${tag}${i}: ${res.status} ${JSON.stringify(res.body)}`)
      await live.waitFor((es) => dataEvents(es).some((e) => e.id === res.body.id), 15_000, `${tag}${i} delivered`)
      const got = dataEvents(live.events).find((e) => e.id === res.body.id)
      deliverMs.push((got?.receivedAt ?? Infinity) - sent)
      await new Promise((r) => setTimeout(r, 100))
    }
    return { postMs, deliverMs }
  }
  // The same without the storm first: what this (shared, busy) machine costs anyway.
  const quiet = await postAndDeliver(5, 'quiet')

  const storm: StreamClient[] = Array.from({ length: STORM }, (_, i) => openStream(i % 2 === 0 ? 'sse' : 'ws', server, '/messages?room=old', String(seeded[0].id)))
  t.teardown(() => storm.forEach((c) => c.close()))
  await waitUntil(() => (store.readQueue.queued > STORM / 2 ? true : undefined), 30_000, 'the storm queued its reads')
  const { postMs, deliverMs } = await postAndDeliver(15, 'live')
  const max = (xs: number[]): number => Math.round(Math.max(...xs))
  const show = (xs: number[]): string => xs.map(Math.round).join(' ')
  t.comment(`without the storm: POST ms ${show(quiet.postMs)}; delivery ms ${show(quiet.deliverMs)}`)
  t.comment(`during the storm: POST ms ${show(postMs)}; delivery ms ${show(deliverMs)}`)
  // The target is 3 s; a machine already slow without the storm gets that slowness on top.
  const bound = BOUND_MS + 3 * max([...quiet.postMs, ...quiet.deliverMs])
  t.ok(store.readQueue.queued > 0, `the storm was still queued while the posts went through (${store.readQueue.queued} reads waiting)`)
  t.ok(max(postMs) < bound, `POST to another stream during the storm: max ${max(postMs)} ms (bound ${bound} ms)`)
  t.ok(max(deliverMs) < bound, `live delivery to another stream during the storm: max ${max(deliverMs)} ms, post to receipt (bound ${bound} ms)`)
  t.ok(store.readQueue.running <= store.readQueue.concurrency, `store reads in flight stay bounded (${store.readQueue.running})`)
  t.ok(store.readQueue.stats.completed > 0, `old resumes progress (${store.readQueue.stats.completed} pages read)`)

  // The storm leaves: its queued reads are dropped, the queue drains without reading them.
  const completedAtLeave = store.readQueue.stats.completed
  storm.forEach((c) => c.close())
  await waitUntil(() => (store.readQueue.queued === 0 && store.readQueue.running === 0 ? true : undefined), 15_000, 'the read queue to drain')
  t.ok(store.readQueue.stats.cancelled > 0, `leaving clients cancelled their queued reads (${store.readQueue.stats.cancelled})`)
  t.ok(store.readQueue.stats.completed - completedAtLeave <= store.readQueue.concurrency * 2, `no queued read ran after its client left (${store.readQueue.stats.completed - completedAtLeave} finished, those in flight)`)
})

t.test('the read queue serves readers round robin: one reader with many pages does not hold back another one', async (t) => {
  const store = new MongoEventStore({ ...mongoConfig(), replayConcurrency: 1 })
  await store.open()
  t.teardown(() => store.close())
  await store.append(Array.from({ length: 20 }, (_, i) => ({ type: 'message', room: 'rr', time: new Date().toISOString(), data: { i } })))
  const order: string[] = []
  const a = new AbortController()
  const b = new AbortController()
  const reads = [
    ...Array.from({ length: 5 }, (_, i) => store.read({ kind: 'room', room: 'rr' }, i, 1, { signal: a.signal }).then(() => order.push('a'))),
    store.read({ kind: 'room', room: 'rr' }, 0, 1, { signal: b.signal }).then(() => order.push('b')),
  ]
  await Promise.all(reads)
  // a's first read starts at once and its second was queued before b's: b's turn comes next.
  t.ok(order.indexOf('b') <= 2, `b's one read did not wait for a's five (${order.join('')})`)
  // A reader that left: its queued read fails at once and is never sent.
  const c = new AbortController()
  const blocker = store.read({ kind: 'room', room: 'rr' }, 0, 20)
  const queued = store.read({ kind: 'room', room: 'rr' }, 0, 20, { signal: c.signal })
  c.abort()
  await t.rejects(queued, { name: 'ReadAbortedError' }, 'a cancelled queued read rejects')
  await blocker
  t.equal(store.readQueue.stats.cancelled, 1, 'and counts as cancelled')
})
