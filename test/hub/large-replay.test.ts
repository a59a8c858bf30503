import t from 'tap'
import { dataEvents, openStream } from '../helpers/clients.js'
import { startServer, storeOverrides } from '../helpers/server.js'

const EVENTS = 3000
const TEXT = 'x'.repeat(62 * 1024 - 200)

/**
 * A replay never ends early: 3,000 events of 62 KB (186 MB) in one room on FerretDB, replayed whole
 * to five followers opened afterwards. The hot history holds the newest ~2,400 (each costs about three
 * times its JSON there); the oldest ~600 are paged from the store, and a 500-event page is 31 MB,
 * past the server's 16 MiB batch: pages come back shorter than asked (the byte bound, the batch
 * limit) and none may be taken for the end. Every follower gets all 3,000, in order, then `live`.
 * (FerretDB scans the collection for every page, ~25 s each on a busy machine: the store part is
 * kept to a page or two per follower so the test stays within minutes.)
 */
t.test('3,000 events of 62 KB in one room on FerretDB, replayed to 5 followers', async (t) => {
  const base = storeOverrides('mongodb') as { store: { mongodb: Record<string, unknown> } }
  const store = { ...base.store, mongodb: { ...base.store.mongodb, cappedSize: 512 * 1024 * 1024, cappedMax: 10_000 } }
  // A replay page goes out whole (31 MB here): the slow-client bound on replay output is the
  // memory-budget work's; here the clients read as fast as they can and must not be cut for it.
  const streams = { maxBufferedBytes: 256 * 1024 * 1024, heartbeatSeconds: 600, historyMaxBytes: 1024 * 1024 * 1024, historyMaxEvents: 2400 }
  const s = await startServer({ store, streams })
  t.teardown(() => s.close())
  const room = 'large'
  const posted: number[] = []
  let started = Date.now()
  for (let i = 0; i < EVENTS; i += 50) {
    const batch = Array.from({ length: Math.min(50, EVENTS - i) }, (_, j) => ({ type: 'message', room, time: new Date().toISOString(), data: { n: i + j, text: TEXT } }))
    posted.push(...(await s.app.ingest.submit(batch)).map((r) => r.id))
  }
  t.equal(posted.length, EVENTS)
  t.comment(`stored ${EVENTS} events of 62 KB in ${Date.now() - started} ms; the hot history starts after ${posted.indexOf(s.app.hub.history.from) + 1} of them`)
  t.ok(s.app.hub.history.from > posted[0], 'the oldest events are not in the hot history: the replay pages the store')
  started = Date.now()
  const results = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => {
      const f = openStream(i % 2 === 0 ? 'sse' : 'ws', s, `/messages?room=${room}`)
      try {
        await f.waitFor((es) => es.some((e) => e.type === 'live'), 400_000, 'live')
        const before = f.events.findIndex((e) => e.type === 'live')
        return { ids: dataEvents(f.events.slice(0, before)).map((e) => Number(e.id)), resets: f.events.filter((e) => e.type === 'reset').length }
      } finally {
        f.close()
      }
    }),
  )
  for (const [i, r] of results.entries()) {
    t.equal(r.resets, 0, `follower ${i}: no reset`)
    t.equal(r.ids.length, EVENTS, `follower ${i}: all ${EVENTS} events before live`)
    t.ok(r.ids.every((id, k) => id === posted[k]), `follower ${i}: exactly the stored sequence`)
  }
  t.equal(s.app.hub.stats.replaysFromStore, 5, 'every replay read the store')
  t.comment(`5 followers replayed ${EVENTS} events of 62 KB in ${Date.now() - started} ms`)
})
