import t from 'tap'
import { openMongoStore, TEST_DATABASE } from '../helpers/mongo.js'

const event = (text: string) => ({ type: 'T', room: 'h', time: new Date().toISOString(), data: { text } })

/**
 * The head (FerretDB: `<collection>_head`, see src/store/mongo-head.ts) is at or past every
 * acknowledged id; it is no proof of what is stored. Session 7 saw it ahead of the collection under
 * load (the topology test: 98 ids announced, not in the collection), and the NATS writer, whose
 * events carry their own ids, skipped them as already stored: lost for good. Made here by raising
 * the head past the collection by hand.
 */
t.test('a head ahead of the collection: events with ids of their own are stored, and bounds() answers from the collection', async (t) => {
  const store = await openMongoStore()
  t.teardown(() => store.close())
  if (store.announced === undefined) {
    t.comment('this store keeps no head (a real MongoDB): nothing to check')
    t.pass('no head')
    return
  }
  t.same((await store.append([event('a'), event('b'), event('c')], [1, 2, 3])).map((e) => e.id), [1, 2, 3])
  await store.client.db(TEST_DATABASE).collection<{ _id: string; id: number }>(`${store.config.collection}_head`).updateOne({ _id: 'head' }, { $set: { id: 100 } })
  t.equal(await store.newest(), 100, 'the position query answers from the head')
  t.same(await store.bounds(), { oldest: 1, newest: 3 }, 'bounds() (where a writer with ids of its own starts) answers from the collection')
  // A moment later than the last write: the writer's own "nobody wrote since" guess does not apply.
  await new Promise((r) => setTimeout(r, 1100))
  t.same((await store.append([event('d'), event('e')], [4, 5])).map((e) => e.id), [4, 5], 'ids 4 and 5 are stored, not taken for redeliveries')
  t.same((await store.read({ kind: 'room', room: 'h' }, 0, 10)).map((e) => e.id), [1, 2, 3, 4, 5])
  t.same((await store.append([event('e')], [5])).map((e) => e.id), [], 'a real redelivery is still skipped')
})

t.test('many instances raising a missing head at once (starting together): none fails, the head is the newest id', async (t) => {
  const first = await openMongoStore()
  t.teardown(() => first.close())
  if (first.announced === undefined) {
    t.pass('no head on a real MongoDB')
    return
  }
  await first.append([event('a'), event('b')])
  const head = first.client.db(TEST_DATABASE).collection<{ _id: string; id: number }>(`${first.config.collection}_head`)
  for (let round = 0; round < 5; round++) {
    await head.deleteMany({})
    // Each instance's start (bounds(), read by the hub before it starts) raises the head to the
    // collection's newest id: the first upserts race on one _id.
    const stores = await Promise.all(Array.from({ length: 8 }, () => openMongoStore({ collection: first.config.collection })))
    await Promise.all(stores.map((s) => s.bounds()))
    for (const s of stores) await s.close()
    t.equal((await head.findOne({ _id: 'head' }))?.id, 2, `round ${round}: 8 started at once, the head is 2`)
  }
})
