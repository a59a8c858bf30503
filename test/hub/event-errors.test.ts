import t from 'tap'
import type { NewEvent, StoredEvent } from '../../src/event.js'
import type { ReadOptions, Tail, TailHandlers } from '../../src/store/event-store.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import type { StreamFilter } from '../../src/stream.js'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { startServer } from '../helpers/server.js'

/**
 * A store that hands out an event that cannot be serialised in place of the one stored with
 * `data.poison`, as a MongoDB collection written by another tool could (the embedded store itself
 * keeps only what serialises).
 */
class PoisonedStore extends MemoryEventStore {
  private readonly poisoned = (e: StoredEvent): StoredEvent =>
    e.data.poison === true ? { ...e, data: { bad: { toJSON: () => { throw new Error('cannot serialise') } } } } : e

  override tail(afterId: number, handlers: TailHandlers): Tail {
    return super.tail(afterId, { ...handlers, onEvents: (events) => handlers.onEvents(events.map(this.poisoned)) })
  }

  override async read(filter: StreamFilter, afterId: number, limit: number, opts?: ReadOptions): Promise<StoredEvent[]> {
    return (await super.read(filter, afterId, limit, opts)).map(this.poisoned)
  }

  override async newestEvents(limit: number, maxBytes?: number): Promise<StoredEvent[]> {
    return (await super.newestEvents(limit, maxBytes)).map(this.poisoned)
  }
}

// Defence in depth (#13): the decoder admits nothing that fails to serialise, but a store can hold
// what it never checked (a document written by another tool). Here one comes straight from the store.
t.test('an event that cannot be serialised is logged, counted and skipped; every stream and the process go on', async (t) => {
  const store = new PoisonedStore(100)
  const server = await startServer({}, { store })
  t.teardown(() => server.close())
  const ev = (data: Record<string, unknown>): NewEvent => ({ type: 'T', room: 'x', time: new Date().toISOString(), data })
  const live = ['sse', 'ws'].map((tr) => openStream(tr as 'sse' | 'ws', server, '/messages?room=x'))
  t.teardown(() => live.forEach((c) => c.close()))
  await Promise.all(live.map((c) => c.waitFor(isLive, 5000, 'live')))

  const poison = ev({ poison: true })
  const [before, , after] = await store.append([ev({ n: 1 }), poison, ev({ n: 2 })])
  for (const c of live) {
    await c.waitFor((es) => dataEvents(es).length >= 2, 5000, 'the two good events')
    t.same(dataEvents(c.events).map((e) => Number(e.id)), [before.id, after.id], 'live: the good events, in order')
  }
  const replay = openStream('sse', server, '/messages?room=x')
  t.teardown(() => replay.close())
  await replay.waitFor(isLive, 5000, 'replay live')
  t.same(dataEvents(replay.events).map((e) => Number(e.id)), [before.id, after.id], 'replay: the same')
  t.equal(server.app.hub.stats.eventErrors, 1, 'counted once (serialised once per process)')
  const metrics = await (await fetch(`${server.url}/metrics`)).text()
  t.match(metrics, /tailcast_event_errors_total 1/)
  t.equal((await fetch(`${server.url}/health`)).status, 200, 'the process is up')
})
