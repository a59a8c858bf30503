import t from 'tap'
import { MongoClient } from 'mongodb'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { freshCollection, ownFerretDb, TEST_DATABASE } from '../helpers/mongo.js'
import { startServer } from '../helpers/server.js'
import { waitUntil } from '../helpers/wait.js'

// The default store deadline (store.timeoutMs), and what a busy machine may add to it.
const DEADLINE_MS = 5000
const MARGIN_MS = 3000

t.test('a frozen store (FerretDB SIGSTOPped): POST, /ready and a replay answer within the store deadline; a retry with the same key stores the event once', async (t) => {
  // Its own FerretDB: freezing the one other test files share would stall them.
  const fdb = await ownFerretDb()
  const collection = freshCollection('frozen')
  // A history of 5 events: a resume further back reads the store.
  const server = await startServer({ store: { type: 'mongodb', mongodb: { url: fdb.url, database: TEST_DATABASE, collection } }, streams: { historyMaxEvents: 5 } })
  t.teardown(async () => {
    fdb.thaw()
    await server.close()
    await fdb.destroy()
  })
  t.equal(server.config.store.timeoutMs, DEADLINE_MS, 'the default deadline is 5 s')
  const ids: string[] = []
  for (let i = 0; i < 20; i++) ids.push((await server.post({ text: `f${i}`, room: 'fz' })).body.id)
  await waitUntil(async () => ((await fetch(`${server.url}/ready`)).status === 200 ? true : undefined), 20_000, '/ready before the freeze')
  // Live delivery reached the newest event: the hub's tail is past them all.
  const follower = openStream('sse', server, '/messages?room=fz')
  t.teardown(() => follower.close())
  await follower.waitFor((es) => isLive(es) && dataEvents(es).length === 20, 20_000, 'all 20 then live')

  await fdb.freeze()
  const timed = async <T>(p: Promise<T>): Promise<{ ms: number; v: T }> => {
    const started = Date.now()
    const v = await p
    return { ms: Date.now() - started, v }
  }
  const key = 'frozen-retry-1'
  const replay = openStream('sse', server, '/messages?room=fz', ids[1])
  t.teardown(() => replay.close())
  const [post, ready, replayEnd] = await Promise.all([
    timed(server.post({ text: 'during', room: 'fz' }, { 'idempotency-key': key })),
    timed(fetch(`${server.url}/ready`).then(async (r) => ({ status: r.status, body: (await r.json()) as { store?: string } }))),
    timed(replay.ended),
  ])
  t.equal(post.v.status, 503, `POST: 503 (${post.ms} ms)`)
  t.match(post.v.body.message, /may have been stored: retry with the same Idempotency-Key/, 'POST: says the event may have been stored and how to retry')
  t.ok(post.ms < DEADLINE_MS + MARGIN_MS, `POST answered within the deadline (${post.ms} ms)`)
  t.equal(ready.v.status, 503, `/ready: 503 (${ready.ms} ms)`)
  t.match(ready.v.body.store, /no answer within 5000 ms/, '/ready names the store and the deadline')
  t.ok(ready.ms < DEADLINE_MS + MARGIN_MS, `/ready answered within the deadline (${ready.ms} ms)`)
  t.ok(replayEnd.ms < DEADLINE_MS + MARGIN_MS, `a replay that reads the store ended within the deadline (${replayEnd.ms} ms), not hanging`)
  t.notOk(isLive(replay.events), 'the replay did not claim to be live')

  fdb.thaw()
  await waitUntil(async () => ((await fetch(`${server.url}/ready`)).status === 200 ? true : undefined), 30_000, '/ready after the thaw')
  const retry = await server.post({ text: 'during', room: 'fz' }, { 'idempotency-key': key })
  t.ok(retry.status === 202 || retry.status === 201, `the retry with the same key is accepted (${retry.status})`)
  const again = await server.post({ text: 'during', room: 'fz' }, { 'idempotency-key': key })
  t.equal(again.body.id, retry.body.id, 'and a second retry gets the same id')
  const client = new MongoClient(fdb.url)
  t.teardown(() => client.close())
  const stored = await client.db(TEST_DATABASE).collection(collection).countDocuments({ 'data.text': 'during' })
  t.equal(stored, 1, 'the event is stored once')
  // The replay the freeze ended is exact once the store answers again.
  const resumed = openStream('sse', server, '/messages?room=fz', ids[1])
  t.teardown(() => resumed.close())
  await resumed.waitFor(isLive, 20_000, 'live after the thaw')
  t.same(dataEvents(resumed.events).map((e) => e.id), [...ids.slice(2), retry.body.id], 'a replay after the thaw is exact')
})
