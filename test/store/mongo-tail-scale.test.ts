import t from 'tap'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { mongoConfig } from '../helpers/mongo.js'
import { startServer } from '../helpers/server.js'
import { waitUntil } from '../helpers/wait.js'
import { MongoEventStore } from '../../src/store/mongo-store.js'

const SMALL = 1_000
const LARGE = 20_000
const POSTS = 10

/**
 * Issue #21 row 14: on FerretDB every query of the events collection reads all of it, and the
 * tailable cursor ran one at every poll, so live delivery slowed as the collection grew (p50 1.9 s
 * at 20,000 events). The tail now polls the head and reads new events from the recent collection
 * (src/store/mongo-head.ts): delivery at 20,000 stored events is as fast as at 1,000, and so is a
 * stream's time to `live` (its position query reads the head, not the collection).
 */
t.test(`FerretDB: live delivery and time to live at ${LARGE} stored events as at ${SMALL}`, async (t) => {
  const server = await startServer({ store: { type: 'mongodb', capacity: 2 * LARGE, timeoutMs: 30_000, mongodb: mongoConfig({ cappedSize: 256 * 1024 * 1024, cappedMax: 2 * LARGE }) } })
  t.teardown(() => server.close())
  const store = server.app.store as MongoEventStore
  t.ok(store.isFerretDb, 'the test store is FerretDB')

  const seed = async (upTo: number): Promise<void> => {
    for (let have = (await store.newest()) ?? 0; have < upTo; ) {
      const n = Math.min(1000, upTo - have)
      const stored = await store.append(Array.from({ length: n }, (_, i) => ({ type: 'message', room: 'seed', time: new Date().toISOString(), data: { text: `s${have + i}` } })))
      have = stored[stored.length - 1].id
    }
    const last = (await store.newest()) ?? 0
    await waitUntil(() => (server.app.hub.position >= last ? true : undefined), 120_000, `the tail past the ${upTo} seeded events`)
  }

  /** POST one event at a time to a followed room: ms from the POST to the follower's receipt; and ms to `live` of a new stream. */
  const measure = async (tag: string): Promise<{ deliver: number[]; live: number[] }> => {
    const follower = openStream('sse', server, `/messages?room=${tag}`)
    await follower.waitFor(isLive, 30_000, `${tag}: the follower is live`)
    const deliver: number[] = []
    const live: number[] = []
    for (let i = 0; i < POSTS; i++) {
      const sent = performance.now()
      const res = await server.post({ text: `${tag}${i}`, room: tag })
      t.equal(res.status, 202, `${tag}${i} accepted`)
      await follower.waitFor((es) => dataEvents(es).some((e) => e.id === res.body.id), 30_000, `${tag}${i} delivered`)
      deliver.push((dataEvents(follower.events).find((e) => e.id === res.body.id)?.receivedAt ?? Infinity) - sent)
      const opened = performance.now()
      const s = openStream(i % 2 === 0 ? 'sse' : 'ws', server, `/messages?room=${tag}`)
      await s.waitFor(isLive, 30_000, `${tag}: stream ${i} live`)
      live.push(performance.now() - opened)
      t.ok(dataEvents(s.events).some((e) => e.id === res.body.id), `${tag}: stream ${i} replays the event posted before it, before live`)
      s.close()
    }
    follower.close()
    return { deliver, live }
  }

  const p50 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const show = (xs: number[]): string => xs.map(Math.round).join(' ')
  await seed(SMALL)
  const small = await measure('small')
  await seed(LARGE)
  const opensBefore = store.tailStats.opens
  const large = await measure('large')
  t.comment(`at ${SMALL}: delivery ms ${show(small.deliver)}; time to live ms ${show(small.live)}`)
  t.comment(`at ${LARGE}: delivery ms ${show(large.deliver)}; time to live ms ${show(large.live)}`)
  t.ok(store.tailStats.opens > opensBefore, 'the tail polled meanwhile')
  // "As fast": within a small factor and a margin for a busy machine (the old tail: p50 1.9 s at 20,000, 0.16 s max at 1,000).
  t.ok(p50(large.deliver) <= 3 * p50(small.deliver) + 150, `delivery p50 ${Math.round(p50(large.deliver))} ms at ${LARGE} vs ${Math.round(p50(small.deliver))} ms at ${SMALL}`)
  t.ok(p50(large.live) <= 3 * p50(small.live) + 150, `time to live p50 ${Math.round(p50(large.live))} ms at ${LARGE} vs ${Math.round(p50(small.live))} ms at ${SMALL}`)
})
