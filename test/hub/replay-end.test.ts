import t from 'tap'
import { dataEvents, openStream } from '../helpers/clients.js'
import type { StoredEvent } from '../../src/event.js'
import type { ReadOptions } from '../../src/store/event-store.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import type { StreamFilter } from '../../src/stream.js'
import { startServer } from '../helpers/server.js'

/**
 * A store whose pages come back shorter than asked, as MongoDB's do when a page passes the server's
 * 16 MiB batch or the byte bound (`maxBytes`): at most a few events per read; the options asked
 * for are recorded.
 */
class ShortPageStore extends MemoryEventStore {
  readonly asked: ReadOptions[] = []
  override async read(filter: StreamFilter, afterId: number, limit: number, opts: ReadOptions = {}): Promise<StoredEvent[]> {
    this.asked.push(opts)
    return (await super.read(filter, afterId, limit, opts)).slice(0, 3 + Math.floor(Math.random() * 5))
  }
}

/**
 * A replay ends only at the position it set out to reach: 2,000 events in one room, replayed to
 * five followers from the store alone (no hot history) and from the store up to the history's
 * start; every page is shorter than asked, and none may be taken for the end.
 */
for (const historyMaxEvents of [0, 300])
t.test(`short store pages are never the end of a replay (hot history of ${historyMaxEvents})`, async (t) => {
  const store = new ShortPageStore(10_000)
  const stored = await store.append(Array.from({ length: 2000 }, (_, i) => ({ type: 'message', room: 'short', time: new Date().toISOString(), data: { i } })))
  const s = await startServer({ streams: { historyMaxEvents, replayPageSize: 100, replayPageBytes: 64 * 1024 } }, { store })
  t.teardown(() => s.close())
  const followers = Array.from({ length: 5 }, (_, i) => openStream(i % 2 === 0 ? 'sse' : 'ws', s, '/messages?room=short', i < 2 ? undefined : String(stored[100 * i].id)))
  t.teardown(() => followers.forEach((f) => f.close()))
  await Promise.all(followers.map((f) => f.waitFor((es) => es.some((e) => e.type === 'live'), 30_000, 'live')))
  followers.forEach((f, i) => {
    const live = f.events.findIndex((e) => e.type === 'live')
    const got = dataEvents(f.events.slice(0, live)).map((e) => Number(e.id))
    const from = i < 2 ? 0 : 100 * i + 1
    t.same(got, stored.slice(from).map((e) => e.id), `follower ${i}: every event after its resume point before live`)
  })
  const replayReads = store.asked.filter((o) => o.signal !== undefined)
  t.ok(replayReads.length > 0 && replayReads.every((o) => o.maxBytes === 64 * 1024 && o.upTo !== undefined), `${replayReads.length} replay pages, each bounded in bytes, up to a position, cancellable`)
})
