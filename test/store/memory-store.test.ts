import t from 'tap'
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
