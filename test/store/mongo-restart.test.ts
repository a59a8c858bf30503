import t from 'tap'
import { MongoClient } from 'mongodb'
import { dataEvents, isLive, openStream, type StreamClient } from '../helpers/clients.js'
import { freshCollection, ownFerretDb, TEST_DATABASE } from '../helpers/mongo.js'
import { startServer } from '../helpers/server.js'

t.test('FerretDB stopped and restarted while 20 clients follow and events keep coming: every client ends with the store', async (t) => {
  // Its own FerretDB: restarting the one other test files share would break them.
  const fdb = await ownFerretDb()
  const collection = freshCollection('restart')
  const server = await startServer({ store: { type: 'mongodb', mongodb: { url: fdb.url, database: TEST_DATABASE, collection } } })
  let posting = true
  const clients: StreamClient[] = []
  // One teardown, in order: stop posting, clients, server, then FerretDB.
  t.teardown(async () => {
    posting = false
    clients.forEach((c) => c.close())
    await server.close()
    await fdb.destroy()
  })

  const path = '/messages?room=rs'
  for (let i = 0; i < 20; i++) clients.push(openStream(i % 2 === 0 ? 'sse' : 'ws', server, path))
  await Promise.all(clients.map((c) => c.waitFor(isLive, 20_000, 'live')))

  // A poster that keeps going through the outage; posts fail while FerretDB is down.
  let down = false
  let postedWhileDown = 0
  let inFlight = false
  let ok = 0
  let failed = 0
  const answers: { text: string; status: number; body: any }[] = []
  const poster = (async () => {
    for (let i = 0; posting; i++) {
      if (down) postedWhileDown++
      inFlight = true
      const res = await server.post({ text: `p${i}`, room: 'rs' }).catch(() => ({ status: 0, body: null }))
      answers.push({ text: `p${i}`, ...res })
      inFlight = false
      if (res.status === 201 || res.status === 202) ok++
      else failed++
      await new Promise((r) => setTimeout(r, 20))
    }
  })()

  const waitPosted = async (n: number) => {
    const deadline = Date.now() + 60_000
    while (ok < n) {
      if (Date.now() > deadline) throw new Error(`only ${ok} posts succeeded`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  await waitPosted(20)
  await fdb.stop(true) // kill -9
  down = true
  if (inFlight) postedWhileDown++
  const okAtStop = ok
  await new Promise((r) => setTimeout(r, 1500))
  await fdb.start()
  down = false
  await waitPosted(okAtStop + 20)
  posting = false
  await poster
  // A post made while FerretDB is down waits for it (server selection) or fails; either way the
  // store decides what the clients must end with.
  t.ok(postedWhileDown > 0, `posts kept coming while FerretDB was down (${postedWhileDown} started, ${failed} failed, ${ok} accepted)`)

  const client = new MongoClient(fdb.url)
  t.teardown(() => client.close())
  const docs = await client.db(TEST_DATABASE).collection(collection).find({ room: 'rs' }, { projection: { _id: 1, data: 1 } }).sort({ _id: 1 }).toArray()
  const stored = docs.map((d) => String(d._id))
  const idOfText = new Map(docs.map((d) => [d.data.text as string, String(d._id)]))
  // The answer to a POST is the truth: 202 means stored under that id, a 5xx means not stored
  // unless it says the outcome is unknown (then a retry with an Idempotency-Key is safe).
  for (const a of answers) {
    if (a.status === 202) t.equal(idOfText.get(a.text), a.body.id, `${a.text}: 202 and stored under its id`)
    else if (/may have been stored/.test(a.body?.message ?? '')) t.equal(a.status, 503, `${a.text}: outcome unknown, said so`)
    else {
      t.ok(a.status >= 500, `${a.text}: ${a.status} ${a.body?.message}`)
      t.notOk(idOfText.has(a.text), `${a.text}: ${a.status} and not stored`)
    }
  }
  t.equal(stored.length, ok + answers.filter((a) => a.status !== 202 && idOfText.has(a.text)).length, 'nothing stored that was not answered 202 or "may have been stored"')

  await Promise.all(clients.map((c) => c.waitFor((es) => dataEvents(es).length >= stored.length, 30_000, `${stored.length} events`)))
  await new Promise((r) => setTimeout(r, 300))
  clients.forEach((c, i) => t.same(dataEvents(c.events).map((e) => e.id), stored, `client ${i} has exactly the store's sequence`))
  const errors = (server.app.store as unknown as { tailStats: { errors: number; opens: number } }).tailStats
  t.ok(errors.opens > 1, `the tail re-opened after the restart (${errors.opens} opens, ${errors.errors} errors)`)
})
