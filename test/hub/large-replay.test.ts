import t from 'tap'
import { dataEvents, openStream } from '../helpers/clients.js'
import { startServer, storeOverrides } from '../helpers/server.js'

const EVENTS = 3000
const TEXT = 'x'.repeat(62 * 1024 - 200)

/**
 * A replay never ends early: 3,000 events of 62 KB (186 MB) in one room on FerretDB, replayed to
 * five followers opened afterwards. A 500-event page is 31 MB, past the server's 16 MiB batch; pages
 * come back shorter than asked (the byte bound, the batch limit) and none may be taken for the end.
 * With the default hot history (64 MiB: the newest ~1,000 events) the replay pages the store up to
 * the history's floor, then memory; without one, the store up to the end. Every follower gets all
 * 3,000, in order, then `live`.
 */
t.test('3,000 events of 62 KB in one room on FerretDB, replayed to 5 followers on each of two instances', async (t) => {
  const base = storeOverrides('mongodb') as { store: { mongodb: Record<string, unknown> } }
  const store = { ...base.store, mongodb: { ...base.store.mongodb, cappedSize: 512 * 1024 * 1024, cappedMax: 10_000 } }
  // A replay page goes out whole (31 MB here): the slow-client bound on replay output is the
  // memory-budget work's; here the clients read as fast as they can and must not be cut for it.
  const streams = { maxBufferedBytes: 256 * 1024 * 1024, heartbeatSeconds: 600 }
  // The default hot history (64 MiB: the newest ~1,000 events): store pages up to its floor, then memory.
  const a = await startServer({ store, streams })
  t.teardown(() => a.close())
  const room = 'large'
  const posted: number[] = []
  let started = Date.now()
  for (let i = 0; i < EVENTS; i += 50) {
    const batch = Array.from({ length: Math.min(50, EVENTS - i) }, (_, j) => ({ type: 'message', room, time: new Date().toISOString(), data: { n: i + j, text: TEXT } }))
    posted.push(...(await a.app.ingest.submit(batch)).map((r) => r.id))
  }
  t.equal(posted.length, EVENTS)
  t.comment(`stored ${EVENTS} events of 62 KB in ${Date.now() - started} ms`)
  // No hot history: the store to the end.
  const b = await startServer({ store, streams: { ...streams, historyMaxEvents: 0 } })
  t.teardown(() => b.close())
  for (const [name, s] of [['hot history', a], ['no hot history', b]] as const) {
    started = Date.now()
    const results = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => {
        const f = openStream(i % 2 === 0 ? 'sse' : 'ws', s, `/messages?room=${room}`)
        try {
          await f.waitFor((es) => es.some((e) => e.type === 'live'), 240_000, 'live')
          const before = f.events.findIndex((e) => e.type === 'live')
          return { ids: dataEvents(f.events.slice(0, before)).map((e) => Number(e.id)), resets: f.events.filter((e) => e.type === 'reset').length }
        } finally {
          f.close()
        }
      }),
    )
    for (const [i, r] of results.entries()) {
      t.equal(r.resets, 0, `${name}, follower ${i}: no reset`)
      t.equal(r.ids.length, EVENTS, `${name}, follower ${i}: all ${EVENTS} events before live`)
      t.ok(r.ids.every((id, k) => id === posted[k]), `${name}, follower ${i}: exactly the stored sequence`)
    }
    t.comment(`${name}: 5 followers replayed ${EVENTS} events of 62 KB in ${Date.now() - started} ms`)
  }
})
