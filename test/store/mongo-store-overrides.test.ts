import t from 'tap'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { mongoUrl } from '../helpers/mongo.js'
import { startServer, storeOverrides } from '../helpers/server.js'

// The stream/resume suites call startServer() without a store; TAILCAST_TEST_STORE picks it.
t.test('TAILCAST_TEST_STORE=mongodb gives each test server a fresh capped collection on MONGODB_URL', async (t) => {
  const url = mongoUrl()
  const saved = process.env.TAILCAST_TEST_STORE
  process.env.TAILCAST_TEST_STORE = 'mongodb'
  t.teardown(() => {
    if (saved === undefined) delete process.env.TAILCAST_TEST_STORE
    else process.env.TAILCAST_TEST_STORE = saved
  })
  const a = storeOverrides() as { store: { type: string; mongodb: { url: string; collection: string } } }
  const b = storeOverrides() as typeof a
  t.equal(a.store.type, 'mongodb')
  t.equal(a.store.mongodb.url, url)
  t.not(a.store.mongodb.collection, b.store.mongodb.collection, 'a fresh collection per server')

  const server = await startServer()
  t.teardown(() => server.close())
  t.equal(server.app.store.kind, 'mongodb')
  const c = openStream('ws', server, '/messages?room=o')
  t.teardown(() => c.close())
  await c.waitFor(isLive, 10_000, 'live')
  const { body } = await server.post({ text: 'hi', room: 'o' })
  await c.waitFor((es) => dataEvents(es).length === 1, 10_000, 'the event')
  t.equal(dataEvents(c.events)[0].id, body.id)
})
