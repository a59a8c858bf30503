import t from 'tap'
import { MongoEventStore } from '../../src/store/mongo-store.js'
import { dataEvents, isLive, openStream, type Received } from '../helpers/clients.js'
import { mongoConfig } from '../helpers/mongo.js'
import { startServer } from '../helpers/server.js'

const ids = (es: Received[]) => dataEvents(es).map((e) => Number(e.id))

t.test('wrap: a resume id the capped collection has overwritten gets reset, the full live state, live', async (t) => {
  const mongodb = mongoConfig({ cappedMax: 20 })
  // The hot history no larger than the collection, so these resumes are the store's to answer.
  const server = await startServer({ store: { type: 'mongodb', mongodb }, streams: { historyMaxEvents: 20 } })
  t.teardown(() => server.close())
  const path = '/messages?room=wrap'
  // A client that follows the whole time: the tail must survive the cleanup under it.
  const follower = openStream('sse', server, path)
  t.teardown(() => follower.close())
  await follower.waitFor(isLive, 10_000, 'live')

  const posted: number[] = []
  for (let i = 0; i < 10; i++) posted.push(Number((await server.post({ text: `m${i}`, room: 'wrap' })).body.id))
  const resumeId = String(posted[2])
  for (let i = 10; i < 60; i++) posted.push(Number((await server.post({ text: `m${i}`, room: 'wrap' })).body.id))
  t.equal(new Set(posted).size, 60, 'every post got an id')

  // FerretDB enforces `max` by a periodic cleanup (MongoDB on every insert): wait for it.
  const deadline = Date.now() + 20_000
  for (;;) {
    // After a cleanup that followed the last post, the collection holds at most `max` and stays so.
    const { oldest, newest } = await server.app.store.bounds()
    if (oldest !== null && newest !== null && oldest > posted[2] && newest - oldest < 20) break
    if (Date.now() > deadline) throw new Error(`capped cleanup did not run within 20 s (oldest ${oldest})`)
    await new Promise((r) => setTimeout(r, 200))
  }
  const { oldest, newest } = await server.app.store.bounds()
  t.ok(newest === posted[59] && oldest === posted[40], `the collection wrapped to its max of 20 (oldest ${oldest}, newest ${newest})`)
  const stored = (await server.app.store.read({ kind: 'room', room: 'wrap' }, 0, 1000)).map((e) => e.id)

  await follower.waitFor((es) => dataEvents(es).length >= 60, 15_000, '60 events on the follower')
  t.same(ids(follower.events), posted, 'the follower got every event once, in order, through the cleanup')

  for (const transport of ['sse', 'ws'] as const) {
    const c = openStream(transport, server, path, resumeId)
    t.teardown(() => c.close())
    await c.waitFor(isLive, 10_000, `${transport} live`)
    const types = c.events.map((e) => e.type)
    t.equal(types[0], 'reset', `${transport}: reset first`)
    t.match(c.events[0].data, { lastEventId: resumeId, reason: /older than the oldest/ })
    t.equal(types[types.length - 1], 'live', `${transport}: live last`)
    t.same(ids(c.events), stored, `${transport}: then the full live state`)
    c.close()
  }

  // Row 14 of #13: the id just before the oldest stored one missed nothing, so it resumes exactly.
  t.equal(await server.app.store.evictedThrough(), posted[39], 'the newest dropped id is known')
  for (const transport of ['sse', 'ws'] as const) {
    const c = openStream(transport, server, path, String(posted[39]))
    t.teardown(() => c.close())
    await c.waitFor(isLive, 10_000, `${transport} live`)
    t.notOk(c.events.some((e) => e.type === 'reset'), `${transport}: no reset at the wrap boundary`)
    t.same(ids(c.events), posted.slice(40), `${transport}: exactly the events after it`)
    c.close()
  }
})

t.test('one tailing cursor per process, whatever the number of clients (200 here)', async (t) => {
  // The tailable cursor MongoDB gets (on FerretDB the store polls instead unless told otherwise).
  const store = new MongoEventStore(mongoConfig(), { clientOptions: { monitorCommands: true }, tail: 'awaitData' })
  const tailFinds = new Map<number, boolean>()
  let openCursors = 0
  const getMoreCursors = new Set<string>()
  let replayFinds = 0
  store.client.on('commandStarted', (e) => {
    if (e.commandName === 'find' && e.command.tailable === true) tailFinds.set(e.requestId, true)
    else if (e.commandName === 'find') replayFinds++
    if (e.commandName === 'getMore') getMoreCursors.add(String(e.command.getMore))
  })
  store.client.on('commandSucceeded', (e) => {
    if (tailFinds.has(e.requestId) && String((e.reply as { cursor: { id: unknown } }).cursor.id) !== '0') openCursors++
  })
  await store.open()
  await store.append([{ type: 'message', room: 'r0', time: new Date().toISOString(), data: { text: 'before' } }])
  const server = await startServer({}, { store })
  t.teardown(async () => {
    await server.close()
    await store.close()
  })

  const clients = Array.from({ length: 200 }, (_, i) =>
    openStream(i % 2 === 0 ? 'sse' : 'ws', server, i % 4 < 2 ? '/messages?room=r0' : '/messages'),
  )
  t.teardown(() => clients.forEach((c) => c.close()))
  await Promise.all(clients.map((c) => c.waitFor(isLive, 30_000, 'live')))
  const posted: number[] = [(await store.read({ kind: 'room', room: null }, 0, 10))[0].id]
  for (let i = 0; i < 5; i++) posted.push(Number((await server.post({ text: `x${i}`, room: 'r0' })).body.id))
  await Promise.all(clients.map((c) => c.waitFor((es) => dataEvents(es).length >= 6, 30_000, '6 events')))
  for (const c of clients) t.same(ids(c.events), posted)

  t.equal(openCursors, 1, 'one tailable cursor was opened')
  t.equal(getMoreCursors.size, 1, 'every getMore went to that one cursor')
  t.ok(server.app.hub.stats.replaysFromMemory >= 200, `the 200 replays came from the hot history (${server.app.hub.stats.replaysFromMemory})`)
  // Besides the newest-position reads (read-your-writes: two finds each, shared by the clients that arrive together).
  const positionQueries = server.app.hub.stats.positionQueries
  t.ok(replayFinds - 2 * positionQueries < 20, `with a handful of store reads (${replayFinds} finds, ${positionQueries} shared position queries)`)
  t.ok(positionQueries < 100, `fewer position queries than clients (${positionQueries} for 200)`)
  t.equal(store.tailStats.opens, 1, 'the tail never re-opened')
  t.ok(store.tailStats.lagMs >= 0 && store.tailStats.lagMs < 10_000, `tail lag is measured (${store.tailStats.lagMs} ms)`)
})
