import t from 'tap'
import { frameOf, type StoredEvent } from '../../src/event.js'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { History } from '../../src/hub/history.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import { MongoEventStore } from '../../src/store/mongo-store.js'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { mongoConfig } from '../helpers/mongo.js'
import { startServer, type TestServer } from '../helpers/server.js'

const at = (id: number, extra: Partial<StoredEvent> = {}): StoredEvent => ({ id, type: 'T', time: new Date().toISOString(), data: { id }, ...extra })
const ids = (frames: { id: number }[]): number[] => frames.map((f) => f.id)

t.test('History: per-stream reads, bounded by count and bytes, and what it covers', async (t) => {
  const h = new History({ maxBytes: 1 << 20, maxEvents: 5 })
  t.notOk(h.covers(null) || h.covers(0), 'not warm yet: it serves nothing')
  h.warm([], 0, true)
  t.ok(h.covers(null), 'warmed whole from an empty store: it holds the whole live state')
  for (let id = 1; id <= 4; id++) h.add(at(id, id % 2 === 0 ? { room: 'a' } : { competitionId: 'c' }), frameOf(at(id)))
  t.same(ids(h.read({ kind: 'room', room: 'a' }, 0, 10)), [2, 4])
  t.same(ids(h.read({ kind: 'room', room: null }, 0, 10)), [2, 4])
  t.same(ids(h.read({ kind: 'competition', competitionId: 'c' }, 1, 10)), [3])
  t.same(ids(h.read({ kind: 'room', room: 'a' }, 0, 1)), [2], 'at most limit')
  for (let id = 5; id <= 8; id++) h.add(at(id, { room: 'a' }), frameOf(at(id)))
  t.equal(h.events, 5, 'the oldest go past maxEvents')
  t.equal(h.from, 3, 'it is complete after the newest id it dropped')
  t.notOk(h.covers(null), 'no longer the whole live state')
  t.notOk(h.covers(2))
  t.ok(h.covers(3), 'a resume at its start is served from memory')
  t.same(ids(h.read({ kind: 'room', room: 'a' }, 3, 10)), [4, 5, 6, 7, 8])
  t.same(ids(h.read({ kind: 'competition', competitionId: 'c' }, 0, 10)), [], 'an emptied stream has nothing')

  const small = new History({ maxBytes: 3 * (frameOf(at(1)).sse.length * 2 + 200), maxEvents: 1000 })
  small.add(at(11, { room: 'b' }), frameOf(at(11)))
  small.warm([{ event: at(10, { room: 'b' }), frame: frameOf(at(10)) }], 9, false)
  t.same(ids(small.read({ kind: 'room', room: 'b' }, 0, 10)), [10, 11], 'what the warm-up read goes before what arrived meanwhile')
  t.ok(small.covers(9) && !small.covers(8) && !small.covers(null), 'complete after the floor it was given')
  for (let id = 12; id <= 20; id++) small.add(at(id, { room: 'b' }), frameOf(at(id)))
  t.ok(small.events < 10 && small.bytes <= 3 * (frameOf(at(1)).sse.length * 2 + 200), `bounded by bytes (${small.events} events, ${small.bytes} bytes)`)

  const off = new History({ maxBytes: 0, maxEvents: 1000 })
  off.warm([], 0, true)
  t.notOk(off.covers(null) || off.covers(5), 'a zero bound turns it off')
})

t.test('History: holds frames and metadata, never the parsed data; bytes are the frames\' serialised size', async (t) => {
  const h = new History({ maxBytes: 1 << 20, maxEvents: 1000 })
  h.warm([], 0, true)
  const data = { a: Array.from({ length: 20_000 }, () => ({})) }
  const e = at(1, { room: 'big', data })
  const frame = frameOf(e)
  h.add(e, frame)
  t.ok(h.bytes >= frame.sse.length && h.bytes < 2 * frame.sse.length + 1024, `${h.bytes} bytes for a ${frame.sse.length}-byte record`)
  t.equal(frame.json.buffer, frame.sse.buffer, 'the JSON is a view into the SSE record: one copy of the bytes')
  const held = (h as unknown as { all: { toArray(): { event: object }[] } }).all.toArray()[0].event
  t.notOk('data' in held, 'the entry keeps no data tree')
  t.same(ids(h.read({ kind: 'room', room: 'big' }, 0, 10)), [1])
})

async function postAll(s: TestServer, n: number, room: (i: number) => string): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const r = await s.post({ text: `m${i}`, room: room(i) })
    if (r.status !== 202) throw new Error(`post ${i}: ${r.status}`)
    out.push(Number(r.body.id))
  }
  return out
}

t.test('resume ids before, at, inside and after the history\'s start, on a store that holds more: each exact', async (t) => {
  const s = await startServer({ store: { type: 'memory', capacity: 1000 }, streams: { historyMaxEvents: 100 } })
  t.teardown(() => s.close())
  const posted = await postAll(s, 300, (i) => (i % 3 === 0 ? 'other' : 'h'))
  const history = s.app.hub.history
  t.equal(history.events, 100)
  const start = history.from
  const stored = (await s.app.store.read({ kind: 'room', room: 'h' }, 0, 1000)).map((e) => e.id)
  const cases: [string, number][] = [
    ['long before the history', posted[10]],
    ['just before its start', posted[posted.indexOf(start) - 1]],
    ['at its start', start],
    ['inside it', posted[250]],
    ['the newest event', posted[299]],
  ]
  for (const [name, resume] of cases) {
    for (const transport of ['sse', 'ws'] as const) {
      const c = openStream(transport, s, '/messages?room=h', String(resume))
      t.teardown(() => c.close())
      await c.waitFor(isLive, 10_000, `${name} ${transport}: live`)
      t.notOk(c.events.some((e) => e.type === 'reset'), `${name} ${transport}: no reset`)
      t.same(dataEvents(c.events).map((e) => Number(e.id)), stored.filter((id) => id > resume), `${name} ${transport}: exactly the store's events after it`)
      c.close()
    }
  }
  const newer = openStream('sse', s, '/messages?room=h', String(posted[299] + 1))
  t.teardown(() => newer.close())
  await newer.waitFor(isLive, 10_000, 'live')
  t.equal(newer.events[0].type, 'reset', 'after the newest: reset')
  t.same(dataEvents(newer.events).map((e) => Number(e.id)), stored, 'then the whole live state')
})

t.test('MongoDB store: 200 resumes inside the history issue no store query; one before it reads only the missing part', async (t) => {
  const store = new MongoEventStore(mongoConfig(), { clientOptions: { monitorCommands: true } })
  await store.open()
  const reads: { filter: Record<string, unknown> }[] = []
  // Replay reads go on the replay client, the wrap check on the main one.
  for (const client of [store.client, store.replayClient]) {
    client.on('commandStarted', (e) => {
      // Replay reads and the wrap check; the tail's own cursor and its idle check are not resumes.
      const c = e.command as { find?: string; tailable?: boolean; filter?: Record<string, unknown>; sort?: Record<string, number> | Map<string, number> }
      // The tail's polls on FerretDB read the newest documents (reverse natural order), like the warm-up.
      const newestFirst = (c.sort instanceof Map ? c.sort.get('$natural') : c.sort?.$natural) === -1
      // Reads of the events collection (the FerretDB tail's head document is another one).
      if (e.commandName === 'find' && c.find === store.config.collection && c.tailable !== true && !newestFirst) reads.push({ filter: c.filter ?? {} })
    })
  }
  // 300 events, then a server whose history holds the newest 100 (warmed with one read at start).
  const pre = await store.append(Array.from({ length: 300 }, (_, i) => ({ type: 'message', room: 'q', time: new Date().toISOString(), data: { text: `m${i}` } })))
  const s = await startServer({ streams: { historyMaxEvents: 100 } }, { store })
  t.teardown(async () => {
    await s.close()
    await store.close()
  })
  t.equal(s.app.hub.history.from, pre[199].id, 'the history starts after the 200th event')
  const before = reads.length
  const clients = Array.from({ length: 200 }, (_, i) => openStream(i % 2 === 0 ? 'sse' : 'ws', s, '/messages?room=q', String(pre[200 + (i % 99)].id)))
  t.teardown(() => clients.forEach((c) => c.close()))
  await Promise.all(clients.map((c) => c.waitFor(isLive, 30_000, 'live')))
  clients.forEach((c, i) => {
    const from = 200 + (i % 99)
    if (i % 37 === 0) t.same(dataEvents(c.events).map((e) => Number(e.id)), pre.slice(from + 1).map((e) => e.id), `client ${i} exact`)
    else if (dataEvents(c.events).length !== 299 - from) t.fail(`client ${i}: ${dataEvents(c.events).length} events, expected ${299 - from}`)
  })
  // Read-your-writes asks the store for its newest position (one query shared by the requests that
  // arrive while it runs: an edge read without a filter); no resume reads events from the store.
  const eventReads = reads.slice(before).filter((r) => Object.keys(r.filter).length > 0)
  t.equal(eventReads.length, 0, '200 resumes inside the history: no replay query')
  t.ok(s.app.hub.stats.positionQueries < 200, `${s.app.hub.stats.positionQueries} shared position queries for 200 resumes`)

  const old = openStream('sse', s, '/messages?room=q', String(pre[49].id))
  t.teardown(() => old.close())
  await old.waitFor(isLive, 10_000, 'live')
  t.same(dataEvents(old.events).map((e) => Number(e.id)), pre.slice(50).map((e) => e.id), 'a resume before the history: exact')
  const replayReads = reads.slice(before).filter((r) => r.filter.room !== undefined)
  t.equal(replayReads.length, 1, 'one page from the store')
  t.same(replayReads[0].filter._id, { $gt: pre[49].id, $lte: pre[199].id }, 'for exactly the part before the history')
})

/** The embedded store, holding its warm-up read until released. */
class GatedWarmStore extends MemoryEventStore {
  release!: () => void
  private readonly gate = new Promise<void>((r) => (this.release = r))
  override async newestEvents(limit: number): Promise<StoredEvent[]> {
    await this.gate
    return super.newestEvents(limit)
  }
}

t.test('the history warms in the background: the server listens at once, /ready says warming, replays meanwhile read the store exactly', async (t) => {
  const store = new GatedWarmStore(1000)
  const before = await store.append(Array.from({ length: 5 }, (_, i) => ({ type: 'message', room: 'w', time: new Date().toISOString(), data: { text: `m${i}` } })))
  const app = await buildApp(loadConfig({ env: {}, overrides: { host: '127.0.0.1', port: 0, logLevel: 'silent' } }), { store })
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  const address = app.server.address() as { port: number }
  const server = { url: `http://127.0.0.1:${address.port}`, wsUrl: `ws://127.0.0.1:${address.port}` }
  const ready = await fetch(`${server.url}/ready`)
  t.equal(ready.status, 503, 'not ready while warming')
  t.match(await ready.json(), { history: 'warming' })
  const c = openStream('sse', server, '/messages?room=w', String(before[1].id))
  t.teardown(() => c.close())
  await c.waitFor(isLive, 5000, 'live')
  t.same(dataEvents(c.events).map((e) => Number(e.id)), before.slice(2).map((e) => e.id), 'exact, from the store')
  t.equal(app.hub.stats.replaysFromStore, 1)
  const [during] = await store.append([{ type: 'message', room: 'w', time: new Date().toISOString(), data: { text: 'during' } }])
  store.release()
  await app.hub.warmed
  t.equal((await fetch(`${server.url}/ready`)).status, 200, 'ready once warm')
  const after = openStream('ws', server, '/messages?room=w', String(before[0].id))
  t.teardown(() => after.close())
  await after.waitFor(isLive, 5000, 'live')
  t.same(dataEvents(after.events).map((e) => Number(e.id)), [...before.slice(1).map((e) => e.id), during.id], 'the warm-up read and what came meanwhile, in order')
  t.equal(app.hub.stats.replaysFromMemory, 1, 'served from memory')
})
