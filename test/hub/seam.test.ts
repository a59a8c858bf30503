import t from 'tap'
import { dataEvents, isLive, openStream, type Received, type StreamClient } from '../helpers/clients.js'
import type { StoredEvent } from '../../src/event.js'
import type { ReadOptions } from '../../src/store/event-store.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import type { StreamFilter } from '../../src/stream.js'
import { startServer } from '../helpers/server.js'

/** The embedded store with slow reads, so that replays overlap live events as they do on MongoDB. */
class SlowReadStore extends MemoryEventStore {
  override async read(filter: StreamFilter, afterId: number, limit: number, opts?: ReadOptions): Promise<StoredEvent[]> {
    const events = await super.read(filter, afterId, limit, opts)
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 20))
    return events
  }
}

/**
 * The replay/live seam under load: 1,000 events are posted while 50 clients connect at random
 * moments from random resume points, and half of them drop and resume mid-run. Every client must end
 * with exactly the store's sequence after its first resume point: strictly increasing, no gap, no
 * duplicate.
 */
const VARIANTS = [
  ['', 10_000, 10_000],
  [' (live hold overflowing during replays)', 3, 10_000],
  // The hot history holds the newest 200: older resume points page through the store, then memory.
  [' (hot history smaller than the store)', 10_000, 200],
  [' (hot history smaller than the store, live hold overflowing)', 3, 200],
] as const
for (const [label, maxPendingEvents, historyMaxEvents] of VARIANTS)
t.test(`1,000 events, 50 clients joining and resuming at random points${label}`, async (t) => {
  const s = await startServer({ streams: { replayPageSize: 50, maxPendingEvents, historyMaxEvents } }, { store: new SlowReadStore(10_000) })
  t.teardown(() => s.close())
  const ROOM = 'seam'
  const TOTAL = 1000
  const CLIENTS = 50
  let seed = 42
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)

  const posted: string[] = []
  let posting = true
  const poster = (async () => {
    for (let i = 0; i < TOTAL; i += 5) {
      const batch = await Promise.all(Array.from({ length: 5 }, (_, j) => s.post({ text: `m${i + j}`, room: ROOM })))
      for (const r of batch) {
        if (r.status !== 202) throw new Error(`POST ${r.status}`)
        posted.push(r.body.id)
      }
      if (i % 50 === 0) await new Promise((r) => setImmediate(r))
    }
    posting = false
  })()

  interface Follower {
    from: string | undefined
    seen: Received[]
    current: StreamClient
    reconnects: number
  }
  const followers: Follower[] = []
  const joins: Promise<void>[] = []
  for (let i = 0; i < CLIENTS; i++) {
    joins.push(
      (async () => {
        await new Promise((r) => setTimeout(r, rand() * 800))
        const from = posted.length > 0 && rand() < 0.7 ? posted[Math.floor(rand() * posted.length)] : undefined
        const transport = rand() < 0.5 ? 'sse' : 'ws'
        const f: Follower = { from, seen: [], current: openStream(transport, s, `/messages?room=${ROOM}`, from), reconnects: 0 }
        followers.push(f)
        if (rand() < 0.5) {
          // Drop mid-run and resume from the last event received.
          await new Promise((r) => setTimeout(r, 100 + rand() * 500))
          f.current.close()
          await f.current.ended
          f.seen.push(...dataEvents(f.current.events))
          const last = f.seen.length > 0 ? f.seen[f.seen.length - 1].id : from
          f.current = openStream(transport, s, `/messages?room=${ROOM}`, last)
          f.reconnects++
        }
      })(),
    )
  }
  await Promise.all(joins)
  await poster
  t.notOk(posting)
  const final = posted[posted.length - 1]
  await Promise.all(followers.map((f) => f.current.waitFor((es) => es.some((e) => e.id === final), 20_000, `event ${final}`)))

  const stored = (await s.app.store.read({ kind: 'room', room: ROOM }, 0, 10_000)).map((e) => String(e.id))
  t.equal(stored.length, TOTAL)
  t.same(new Set(stored), new Set(posted), 'the store holds what was posted')
  let resets = 0
  for (const f of followers) {
    const events = [...f.seen, ...dataEvents(f.current.events)].map((e) => e.id)
    if (f.current.events.some((e) => e.type === 'reset')) resets++
    const start = f.from === undefined ? 0 : stored.indexOf(f.from) + 1
    const expected = stored.slice(start)
    const increasing = events.every((id, i) => i === 0 || BigInt(id) > BigInt(events[i - 1]))
    if (!increasing || events.length !== expected.length || events.some((id, i) => id !== expected[i])) {
      t.fail(`client from ${f.from} (${f.reconnects} reconnects): got ${events.length} events, expected ${expected.length}`)
    }
    f.current.close()
  }
  t.equal(resets, 0, 'no client needed a reset')
  t.equal(followers.length, CLIENTS)
  t.ok(followers.every((f) => isLive(f.current.events)), 'every client reached live')
  t.pass(`${followers.length} clients, ${followers.filter((f) => f.reconnects > 0).length} resumed mid-run, all exact`)
})
