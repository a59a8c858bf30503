import t from 'tap'
import { MongoEventStore } from '../src/store/mongo-store.js'
import { dataEvents, Follower, postTo } from './helpers/clients.js'
import { freshCollection, ownFerretDb, TEST_DATABASE } from './helpers/mongo.js'
import { ownNatsServer } from './helpers/nats.js'
import { spawnServer, type ServerProcess } from './helpers/process.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * The fault run: two server processes on one MongoDB-wire store and one NATS, 20 clients following
 * across them, events posted all along. In turn: kill -9 of a server (started again), a restart of
 * the store server, a restart of NATS, SIGTERM of a server. Afterwards every client holds exactly the
 * store's events: nothing lost, nothing twice, ids strictly increasing.
 */
t.test('kill -9, store restart, NATS restart and SIGTERM under load: every client ends with exactly the store', async (t) => {
  const fdb = await ownFerretDb()
  const nats = await ownNatsServer()
  const collection = freshCollection('faults')
  const env = {
    TAILCAST_STORE: 'mongodb',
    MONGODB_URL: fdb.url,
    TAILCAST_MONGODB_DATABASE: TEST_DATABASE,
    TAILCAST_MONGODB_COLLECTION: collection,
    NATS_URL: nats.url,
    TAILCAST_NATS_LEASE_SECONDS: '2',
    LOG_LEVEL: 'info',
  }
  const servers: ServerProcess[] = []
  const followers: Follower[] = []
  let posting = true
  t.teardown(async () => {
    posting = false
    followers.forEach((f) => f.stop())
    for (const s of servers) await s.kill('SIGKILL')
    await nats.dispose()
    await fdb.destroy()
  })
  servers.push(await spawnServer(env))
  servers.push(await spawnServer(env))
  for (let i = 0; i < 20; i++) followers.push(new Follower(i % 2 === 0 ? 'sse' : 'ws', servers, i, '/messages?room=faults'))
  await Promise.all(followers.map((f) => f.start()))

  let accepted = 0
  let refused = 0
  const alive = () => servers.filter((s) => s.child.exitCode === null && s.child.signalCode === null)
  const poster = (async () => {
    for (let i = 0; posting; i++) {
      const to = alive()[i % Math.max(1, alive().length)]
      const r = to === undefined ? null : await postTo(to.url, { text: `f${i}`, room: 'faults' }).catch(() => null)
      if (r?.status === 202) accepted++
      else refused++ // during an outage: the client is told, nothing is half-stored
      await sleep(15)
    }
  })()
  const phase = async (what: string, fault: () => Promise<void>) => {
    const before = accepted
    await fault()
    for (let k = 0; k < 200 && accepted < before + 30; k++) await sleep(100)
    t.ok(accepted >= before + 30, `events flow again after ${what}`)
  }

  await sleep(1000)
  await phase('kill -9 of a server', async () => {
    await servers[0].kill('SIGKILL')
    servers.push(await spawnServer(env))
  })
  await phase('a restart of the store server', async () => {
    await fdb.stop(true)
    await sleep(1000)
    await fdb.start()
  })
  await phase('a restart of NATS', async () => {
    await nats.stop()
    await sleep(1000)
    await nats.start()
  })
  await phase('SIGTERM of a server', async () => {
    const exit = await servers[1].kill('SIGTERM')
    t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit code 0') || t.comment(servers[1].output().slice(-4000))
    servers.push(await spawnServer(env))
  })
  posting = false
  await poster

  // The test's own view of the store: a slow read on a busy machine is no finding here.
  const reader = new MongoEventStore({ url: fdb.url, database: TEST_DATABASE, collection, cappedSize: 104857600, cappedMax: 100000, timeoutMs: 60_000 })
  await reader.open()
  t.teardown(() => reader.close())
  let stored: string[] = []
  const until = Date.now() + 120_000
  for (;;) {
    stored = (await reader.read({ kind: 'room', room: 'faults' }, 0, 1_000_000)).map((e) => String(e.id))
    const caughtUp = followers.every((f) => f.events.length >= stored.length)
    if ((caughtUp && stored.length >= accepted) || Date.now() > until) break
    await sleep(500)
  }
  t.ok(stored.length >= accepted, `the store holds every accepted event (${stored.length} stored, ${accepted} accepted, ${refused} refused during outages)`)
  t.ok(stored.every((id, i) => i === 0 || BigInt(id) > BigInt(stored[i - 1])), 'store ids strictly increasing')
  for (const [k, f] of followers.entries()) {
    const ids = dataEvents(f.events).map((e) => e.id)
    t.same(ids, stored, `client ${k} (${k % 2 === 0 ? 'SSE' : 'WS'}, ${f.reconnects} reconnects, ${f.resets} resets) holds exactly the store's events`)
  }
  t.ok(followers.some((f) => f.reconnects > 0), 'clients did reconnect across the faults')
})
