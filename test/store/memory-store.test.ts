import t from 'tap'
import { StoreRejectedError } from '../../src/store/event-store.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import { storeContract } from './contract.js'

storeContract(t, async () => new MemoryEventStore(100))

t.test('ids are seeded from the clock, so a new store issues ids above an old one', async (t) => {
  const before = new MemoryEventStore(10, { now: Date.now() - 60_000 })
  const [a] = await before.append([{ type: 'T', time: new Date().toISOString(), data: {} }])
  const after = new MemoryEventStore(10)
  const [b] = await after.append([{ type: 'T', time: new Date().toISOString(), data: {} }])
  t.ok(b.id > a.id)
})

t.test('an id from before this store existed counts as dropped (an earlier run may have held it)', async (t) => {
  const store = new MemoryEventStore(10)
  const seeded = await store.evictedThrough()
  t.ok(seeded > 0, 'an empty store counts everything before its clock seed as dropped')
  const [a] = await store.append([{ type: 'T', time: new Date().toISOString(), data: {} }])
  t.equal(await store.evictedThrough(), seeded, 'ids it assigns are above that')
  t.ok(a.id > seeded)
  const relay = new MemoryEventStore(10)
  await relay.append([{ type: 'T', time: new Date().toISOString(), data: {} }], [42])
  t.equal(await relay.evictedThrough(), 41, 'a given id below the seed: what came before it is unknown')
})

t.test('a full ring drops its oldest events first', async (t) => {
  const store = new MemoryEventStore(10)
  const stored = await store.append(Array.from({ length: 15 }, (_, i) => ({ type: 'T', time: new Date().toISOString(), data: { i } })))
  t.same(await store.bounds(), { oldest: stored[5].id, newest: stored[14].id })
  t.equal(await store.evictedThrough(), stored[4].id, 'the newest dropped id: a resume from it is exact')
  const kept = await store.read({ kind: 'competitions', windowMs: 1 }, 0, 100)
  t.same(kept, [], 'no CompetitionActivatedEvent in the ring')
  t.equal((await store.read({ kind: 'room', room: null }, 0, 100)).length, 0)
})

const ev = (i: number, extra: Record<string, unknown> = {}) => ({ type: 'T', room: 'r', time: new Date().toISOString(), data: { i }, ...extra })

t.test('bounded in bytes as well as count: the oldest go first, and evictedThrough stays exact', async (t) => {
  const big = 'x'.repeat(10_000)
  const store = new MemoryEventStore(1000, { maxBytes: 50_000 })
  const stored = await store.append(Array.from({ length: 10 }, (_, i) => ev(i, { data: { i, big } })))
  t.ok(store.bytes <= 50_000, `${store.bytes} bytes held`)
  t.ok(store.events >= 3 && store.events < 10, `${store.events} events held: past the byte bound, not the count`)
  const oldest = (await store.bounds()).oldest as number
  const dropped = stored.filter((e) => e.id < oldest)
  t.equal(await store.evictedThrough(), dropped[dropped.length - 1].id, 'the newest dropped id')
  const kept = await store.read({ kind: 'room', room: 'r' }, 0, 100)
  t.same(kept.map((e) => e.data.i), stored.filter((e) => e.id >= oldest).map((e) => e.data.i), 'what is kept reads back whole')
  const alone = new MemoryEventStore(10, { maxBytes: 100 })
  await alone.append([ev(1, { data: { big } })])
  t.equal(alone.events, 1, 'an event larger than the bound is still kept, alone')
})

t.test('holds serialised bytes, not parsed trees: an event of 20,000 empty objects costs its JSON', async (t) => {
  const store = new MemoryEventStore(10)
  const a = Array.from({ length: 20_000 }, () => ({}))
  await store.append([ev(1, { data: { a } })])
  t.ok(store.bytes < 70_000, `${store.bytes} bytes for ~60 KB of JSON`)
  const [back] = await store.read({ kind: 'room', room: 'r' }, 0, 1)
  t.equal((back.data.a as unknown[]).length, 20_000, 'read back whole')
  t.not(back.data.a, a, 'parsed from its bytes, not the object posted')
})

t.test('read: maxBytes bounds a page (at least one event), upTo bounds its ids; newestEvents takes a byte bound', async (t) => {
  const store = new MemoryEventStore(100)
  const big = 'x'.repeat(1000)
  const stored = await store.append(Array.from({ length: 20 }, (_, i) => ev(i, { data: { i, big } })))
  const size = Buffer.byteLength(JSON.stringify({ id: String(stored[0].id), type: 'T', room: 'r', time: stored[0].time, data: stored[0].data }))
  const page = await store.read({ kind: 'room', room: 'r' }, 0, 100, { maxBytes: 5 * size })
  t.ok(page.length >= 4 && page.length <= 5, `${page.length} events within ${5 * size} bytes`)
  t.same(page.map((e) => e.id), stored.slice(0, page.length).map((e) => e.id), 'the oldest first, none skipped')
  t.equal((await store.read({ kind: 'room', room: 'r' }, 0, 100, { maxBytes: 1 })).length, 1, 'at least one event')
  t.same((await store.read({ kind: 'room', room: 'r' }, 0, 100, { upTo: stored[2].id })).map((e) => e.id), stored.slice(0, 3).map((e) => e.id))
  const newest = await store.newestEvents(100, 3 * size)
  t.ok(newest.length >= 2 && newest.length <= 3, `${newest.length} newest within ${3 * size} bytes`)
  t.equal(newest[newest.length - 1].id, stored[19].id)
  t.same((await store.newestEvents(100, 1)).map((e) => e.id), [stored[19].id], 'at least the newest: an empty answer means an empty store')
})

t.test('an idempotency key is found again, and forgotten with its event', async (t) => {
  const store = new MemoryEventStore(2)
  const [a] = await store.append([ev(1, { idempotencyKey: 'k' })])
  t.same((await store.findByKey('k'))?.data, { i: 1 })
  t.equal((await store.append([ev(2, { idempotencyKey: 'k' })]))[0].id, a.id)
  await store.append([ev(3), ev(4)])
  t.equal(await store.findByKey('k'), null, 'dropped with its event')
})

t.test('an event that cannot be serialised is refused (the ring holds bytes); the ones before it are stored', async (t) => {
  const store = new MemoryEventStore(10)
  const err = await store.append([ev(1), ev(2, { data: { bad: { toJSON: () => { throw new Error('nope') } } } }), ev(3)]).catch((e: unknown) => e)
  t.ok(err instanceof StoreRejectedError, 'StoreRejectedError')
  t.equal((err as StoreRejectedError).index, 1)
  t.equal((err as StoreRejectedError).stored.length, 1)
  t.same((await store.read({ kind: 'room', room: 'r' }, 0, 10)).map((e) => e.data.i), [1])
})
