import t from 'tap'
import { MongoClient } from 'mongodb'
import type { NewEvent } from '../../src/event.js'
import { StoreRejectedError } from '../../src/store/event-store.js'
import { MongoEventStore } from '../../src/store/mongo-store.js'
import { freshCollection, mongoConfig, mongoUrl, openMongoStore, TEST_DATABASE } from '../helpers/mongo.js'
import { storeContract } from './contract.js'

// The one contract every EventStore passes, unchanged, on a fresh capped collection per test.
t.test('EventStore contract', async (t) => {
  storeContract(t, () => openMongoStore({ cappedMax: 1000 }))
})

t.test('a capped collection is created with the configured size and max, and the replay indexes', async (t) => {
  const store = await openMongoStore({ cappedMax: 1234, cappedSize: 1 << 20 })
  t.teardown(() => store.close())
  const db = store.client.db(TEST_DATABASE)
  const stats = await db.command({ collStats: store.config.collection })
  t.equal(stats.capped, true)
  t.equal(Number(stats.max), 1234)
  const names = (await db.collection(store.config.collection).indexes()).map((i) => i.name).sort()
  t.same(names, ['_id_', 'competitionId_id', 'idempotency_scoped_key', 'room_id', 'type_time_id'])
  // Opening again (a second process, a restart) uses what is there.
  const again = new MongoEventStore(store.config)
  t.teardown(() => again.close())
  await again.open()
  t.same(await again.bounds(), { oldest: null, newest: null })
})

t.test('idempotency keys: one unique index, so two instances writing one key at once store it once (40 trials)', async (t) => {
  const a = await openMongoStore()
  t.teardown(() => a.close())
  const b = new MongoEventStore(a.config)
  t.teardown(() => b.close())
  await b.open()
  const keyed = (key: string, i: number): NewEvent => ({ type: 'message', room: 'r', time: new Date().toISOString(), data: { i }, idempotencyKey: key, idempotencyDigest: 'same-body' })
  let duplicates = 0
  let differentAnswers = 0
  for (let trial = 0; trial < 40; trial++) {
    const key = `trial-${trial}`
    const [[x], [y]] = await Promise.all([a.append([keyed(key, 1)]), b.append([keyed(key, 2)])])
    if (x.id !== y.id) differentAnswers++
    const held = await a.client.db(TEST_DATABASE).collection(a.config.collection).countDocuments({ ik: key })
    if (held !== 1) duplicates++
  }
  t.equal(duplicates, 0, 'no key stored twice')
  t.equal(differentAnswers, 0, 'both instances answer the one stored id')
  const index = (await a.client.db(TEST_DATABASE).collection(a.config.collection).indexes()).find((i) => i.name === 'idempotency_scoped_key')
  t.equal(index?.unique, true, 'the key index is unique')
})

t.test('an old collection with the plain key index (and duplicate old keys) is migrated on open', async (t) => {
  const client = new MongoClient(mongoUrl())
  t.teardown(() => client.close())
  const name = freshCollection('oldkeys')
  const db = client.db(TEST_DATABASE)
  await db.createCollection(name, { capped: true, size: 1 << 20, max: 1000 })
  await db.collection(name).createIndex({ k: 1 }, { name: 'idempotency_key' })
  const old = (id: number) => ({ _id: id as never, type: 'message', room: 'r', time: new Date().toISOString(), data: { id }, at: new Date(), k: 'dup' })
  await db.collection(name).insertMany([old(1), old(2)])
  const store = new MongoEventStore(mongoConfig({ collection: name }))
  t.teardown(() => store.close())
  await store.open()
  const names = (await db.collection(name).indexes()).map((i) => i.name)
  t.notOk(names.includes('idempotency_key'), 'the old index is dropped')
  t.ok(names.includes('idempotency_scoped_key'), 'the unique one is there despite the old duplicates')
  const [e] = await store.append([{ type: 'message', room: 'r', time: new Date().toISOString(), data: {}, idempotencyKey: 'dup' }])
  t.ok(e.id > 2, 'an old unscoped key is not a new key: stored')
  t.same((await store.read({ kind: 'room', room: 'r' }, 0, 10)).map((x) => x.id), [1, 2, e.id], 'old events are kept')
})

t.test('an existing collection that is not capped is a startup error naming it and the fix', async (t) => {
  const client = new MongoClient(mongoUrl())
  t.teardown(() => client.close())
  const name = freshCollection('plain')
  await client.db(TEST_DATABASE).createCollection(name)
  await client.db(TEST_DATABASE).collection(name).insertOne({ _id: 1 as never, keep: 'me' })
  const store = new MongoEventStore(mongoConfig({ collection: name }))
  t.teardown(() => store.close())
  await t.rejects(store.open(), { name: 'CollectionNotCappedError', message: new RegExp(`"${TEST_DATABASE}\\.${name}" exists but is not capped.*drop.*convertToCapped.*store\\.mongodb\\.collection`, 's') })
  t.equal(await client.db(TEST_DATABASE).collection(name).countDocuments(), 1, 'the collection is left as it was')
})

t.test('several stores appending to one collection at once: ids unique, natural order is id order', async (t) => {
  // What is tested is the ids; id conflicts between three writers on a busy machine may take longer than the default deadline.
  const config = mongoConfig({ timeoutMs: 60_000 })
  const stores = [new MongoEventStore(config), new MongoEventStore(config), new MongoEventStore(config)]
  t.teardown(() => Promise.all(stores.map((s) => s.close())))
  for (const s of stores) await s.open()
  const got = await Promise.all(
    stores.map(async (s, k) => {
      const ids: number[] = []
      for (let i = 0; i < 15; i++) {
        const batch = [0, 1, 2].map((j) => ({ type: 'T', room: 'c', time: new Date().toISOString(), data: { k, i, j } }))
        const stored = await s.append(batch)
        t.same(stored.map((e) => e.data), batch.map((e) => e.data), 'all of a batch stored, in order')
        ids.push(...stored.map((e) => e.id))
      }
      return ids
    }),
  )
  const all = got.flat().sort((a, b) => a - b)
  t.equal(new Set(all).size, 135, '135 unique ids')
  got.forEach((ids, k) => t.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]), `store ${k}: its ids increase`))
  const client = new MongoClient(mongoUrl())
  t.teardown(() => client.close())
  const natural = (await client.db(TEST_DATABASE).collection(config.collection).find({}, { projection: { _id: 1 } }).toArray()).map((d) => Number(d._id))
  t.same(natural, all, 'natural (insertion) order equals id order')
})

t.test('concurrent appends in one process share inserts: each caller gets its own events, ids follow call order', async (t) => {
  const store = new MongoEventStore(mongoConfig(), { clientOptions: { monitorCommands: true } })
  t.teardown(() => store.close())
  await store.open()
  let inserts = 0
  store.client.on('commandStarted', (e) => {
    if (e.commandName === 'insert') inserts++
  })
  const calls = Array.from({ length: 200 }, (_, i) => [{ type: 'T', room: 'c', time: new Date().toISOString(), data: { i } }])
  const given = store.append([{ type: 'T', room: 'c', time: new Date().toISOString(), data: { given: true } }], [1])
  const results = await Promise.all([given, ...calls.map((batch) => store.append(batch))])
  const ids = results.slice(1).map((stored, i) => {
    t.same(stored.map((e) => e.data), calls[i].map((e) => e.data), `call ${i} got its own event back`)
    return stored[0].id
  })
  t.ok(ids.every((id, i) => i === 0 || id === ids[i - 1] + 1), 'ids are consecutive in call order')
  t.equal(results[0][0]?.id, 1, 'an append with its own id keeps it')
  t.ok(inserts <= 10, `201 appends took ${inserts} inserts (one per round trip, not one per caller)`)
  t.same((await store.read({ kind: 'room', room: 'c' }, 0, 1000)).map((e) => e.id), [1, ...ids], 'the store holds each event once, in id order')
})

t.test('the tail re-anchors on the last seen id and still hands over each event once, in order', async (t) => {
  const store = await openMongoStore({}, { reanchorAfter: 7 })
  t.teardown(() => store.close())
  const seen: number[] = []
  const tail = store.tail(0, { onEvents: (es) => seen.push(...es.map((e) => e.id)) })
  t.teardown(() => tail.close())
  const stored: number[] = []
  for (let i = 0; i < 12; i++) {
    const batch = Array.from({ length: 5 }, (_, j) => ({ type: 'T', time: new Date().toISOString(), data: { i, j } }))
    stored.push(...(await store.append(batch)).map((e) => e.id))
  }
  const deadline = Date.now() + 15_000
  while (seen.length < stored.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  await new Promise((r) => setTimeout(r, 300))
  t.same(seen, stored)
  t.ok(store.tailStats.opens > 2, `the cursor was re-opened (${store.tailStats.opens} opens)`)
  t.equal(store.tailStats.errors, 0)
})

t.test('a group commit with one event the store refuses: every caller learns the truth about its own event (2xx ⇔ stored)', async (t) => {
  const store = await openMongoStore()
  t.teardown(() => store.close())
  const ev = (i: number, data: Record<string, unknown> = { i }): NewEvent => ({ type: 'T', room: 'g', time: new Date().toISOString(), data })
  // Past the decoder on purpose: FerretDB and MongoDB refuse a "." in a key name.
  const poison = ev(15, { 'a.b': 1 })
  const calls = Array.from({ length: 30 }, (_, i) => (i === 15 ? poison : ev(i)))
  const outcomes = await Promise.allSettled(calls.map((e) => store.append([e])))
  const stored = new Set((await store.read({ kind: 'room', room: 'g' }, 0, 100)).map((e) => e.data.i))
  outcomes.forEach((o, i) => {
    if (i === 15) {
      t.equal(o.status, 'rejected', 'the poison event is refused')
      t.type(o.status === 'rejected' ? o.reason : null, StoreRejectedError)
      t.notOk(stored.has(undefined), 'and not stored')
    } else {
      t.equal(o.status, 'fulfilled', `innocent call ${i} succeeds`)
      t.ok(stored.has(i), `and its event is stored`)
    }
  })
  t.equal(stored.size, 29, 'each innocent event stored once')
})

t.test('each document carries the id stored before it, so the oldest one names the newest dropped id', async (t) => {
  const store = await openMongoStore()
  t.teardown(() => store.close())
  const first = await store.append([{ type: 'T', time: new Date().toISOString(), data: {} }])
  const rest = await store.append(Array.from({ length: 4 }, (_, i) => ({ type: 'T', time: new Date().toISOString(), data: { i } })))
  t.equal(await store.evictedThrough(), 0, 'nothing dropped yet')
  const client = new MongoClient(mongoUrl())
  t.teardown(() => client.close())
  t.equal(((await client.db(TEST_DATABASE).collection(store.config.collection).findOne({ _id: rest[0].id } as object)) as { prev?: number } | null)?.prev, first[0].id)
})
