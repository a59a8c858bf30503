import { SignJWT } from 'jose'
import t from 'tap'
import { isLive, openSse, openWs, type StreamClient } from '../helpers/clients.js'
import { ownFerretDb } from '../helpers/mongo.js'
import { startServer, storeOverrides, type TestServer } from '../helpers/server.js'

interface PresenceAnswer {
  stream: string
  clients: number
  instances: number
}

async function presenceOf(s: TestServer, stream: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`${s.url}/v1/presence?stream=${encodeURIComponent(stream)}`, { headers })
  return { status: res.status, body: await res.json() }
}

/** Poll until the presence of `stream` on `s` is `clients` (bounded: 15 s). */
async function waitPresence(s: TestServer, stream: string, clients: number): Promise<PresenceAnswer> {
  const deadline = Date.now() + 15_000
  let last: PresenceAnswer | undefined
  while (Date.now() < deadline) {
    last = (await presenceOf(s, stream)).body as PresenceAnswer
    if (last.clients === clients) return last
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`presence of ${stream} stayed ${last?.clients}, expected ${clients}`)
}

async function live(c: StreamClient): Promise<StreamClient> {
  await c.waitFor(isLive, 5000, 'live')
  return c
}

async function metric(s: TestServer, kind: string): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text()
  const m = new RegExp(`^tailcast_presence\\{stream="${kind}"\\} (\\d+)$`, 'm').exec(text)
  return m === null ? -1 : Number(m[1])
}

t.test('presence on one instance (embedded store): clients join and leave', async (t) => {
  const s = await startServer({ store: { type: 'memory' } })
  t.teardown(() => s.close())
  t.same((await presenceOf(s, '/messages?room=vip')).body, { stream: '/messages?room=vip', clients: 0, instances: 1 })
  const a = await live(openSse(`${s.url}/messages?room=vip`))
  const b = await live(openWs(`${s.wsUrl}/messages?room=vip`))
  const c = await live(openSse(`${s.url}/v1/competitions/c-1`))
  t.equal((await waitPresence(s, '/messages?room=vip', 2)).clients, 2)
  t.equal((await presenceOf(s, '/v1/competitions/c-1')).body.clients, 1)
  t.equal((await presenceOf(s, '/messages')).body.clients, 0, 'every room is a stream of its own')
  t.equal(await metric(s, 'room'), 2)
  t.equal(await metric(s, 'competition'), 1)
  a.close()
  await waitPresence(s, '/messages?room=vip', 1)
  b.close()
  c.close()
  await waitPresence(s, '/messages?room=vip', 0)
  for (const bad of ['/nope', '/messages?room=', '/messages?room=a&x=1', '/v1/competitions/a/b']) {
    const r = await presenceOf(s, bad)
    t.equal(r.status, 400, `${bad}: 400`)
    t.match(r.body.message, /stream must be a stream path/)
  }
  t.equal((await fetch(`${s.url}/v1/presence`)).status, 400, 'no stream: 400')
})

t.test('presence across two instances on one FerretDB, while clients join and leave', async (t) => {
  const shared = storeOverrides('mongodb')
  const a = await startServer(shared)
  t.teardown(() => a.close())
  const b = await startServer(shared)
  let bClosed = false
  t.teardown(() => (bClosed ? undefined : b.close()))
  const stream = '/messages?room=vip'
  const onA = [await live(openSse(`${a.url}${stream}`)), await live(openWs(`${a.wsUrl}${stream}`))]
  const onB = [await live(openSse(`${b.url}${stream}`))]
  for (const s of [a, b]) {
    const p = await waitPresence(s, stream, 3)
    t.equal(p.instances, 2, 'both instances are counted')
  }
  t.equal(await metric(a, 'room'), 3, 'tailcast_presence sums the instances')
  const presenceBytes = Number(/^tailcast_memory_bytes\{part="presence"\} (\d+)/m.exec(await (await fetch(`${a.url}/metrics`)).text())?.[1])
  t.ok(presenceBytes > 0 && presenceBytes < 4096, `the presence documents count in the memory budget's parts: ${presenceBytes} bytes`)
  onB.push(await live(openWs(`${b.wsUrl}${stream}`)))
  await waitPresence(a, stream, 4)
  onA[0].close()
  onB[0].close()
  await waitPresence(a, stream, 2)
  await waitPresence(b, stream, 2)
  // An instance that stops takes its clients out of the sum at once.
  await b.close()
  bClosed = true
  const after = await waitPresence(a, stream, 1)
  t.equal(after.instances, 1)
  for (const c of [...onA, ...onB]) c.close()
  await waitPresence(a, stream, 0)
})

t.test('with private streams, presence needs a token for that stream', async (t) => {
  const secret = 'presence-secret-that-is-long-enough-0123'
  const s = await startServer({ store: { type: 'memory' }, auth: { jwt: { secret } } })
  t.teardown(() => s.close())
  const token = await new SignJWT({ tailcast: { subscribe: ['/messages?room=vip'] } }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(new TextEncoder().encode(secret))
  t.equal((await presenceOf(s, '/messages?room=vip')).status, 401)
  t.equal((await presenceOf(s, '/messages?room=other', { authorization: `Bearer ${token}` })).status, 403)
  const ok = await presenceOf(s, '/messages?room=vip', { authorization: `Bearer ${token}` })
  t.equal(ok.status, 200)
  t.equal(ok.body.clients, 0)
})

t.test('the store down: /v1/presence answers 503, /metrics keeps this instance\'s counts; back up: summed again', async (t) => {
  const db = await ownFerretDb()
  t.teardown(() => db.destroy())
  const s = await startServer({ store: { type: 'mongodb', mongodb: { url: db.url, database: 'tailcast_test', collection: 'presence_outage' } } })
  t.teardown(() => s.close())
  const c = await live(openSse(`${s.url}/messages?room=vip`))
  t.teardown(() => c.close())
  await waitPresence(s, '/messages?room=vip', 1)
  await db.stop(true)
  const deadline = Date.now() + 20_000
  let down = await presenceOf(s, '/messages?room=vip')
  while (down.status !== 503 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200))
    down = await presenceOf(s, '/messages?room=vip')
  }
  t.equal(down.status, 503, 'presence says it cannot sum')
  t.match(down.body.message, /store is unavailable/)
  t.equal(await metric(s, 'room'), 1, '/metrics still answers, with this instance\'s own count')
  await db.start()
  await waitPresence(s, '/messages?room=vip', 1)
  t.pass('summed again once the store is back')
})
