import t from 'tap'
import { dataEvents, isLive, openStream } from '../helpers/clients.js'
import { mongoConfig } from '../helpers/mongo.js'
import { startServer, type TestServer } from '../helpers/server.js'

const increasing = (ids: number[]) => ids.every((id, i) => i === 0 || id > ids[i - 1])

t.test('two servers on one collection: both accept posts, ids stay unique and increasing, a client resumes exactly on the other', async (t) => {
  const mongodb = mongoConfig()
  const a = await startServer({ store: { type: 'mongodb', mongodb } })
  t.teardown(() => a.close())
  const b = await startServer({ store: { type: 'mongodb', mongodb } })
  t.teardown(() => b.close())
  const path = '/messages?room=two'

  // Followers on both servers, both transports.
  const followers = [openStream('sse', a, path), openStream('ws', a, path), openStream('sse', b, path), openStream('ws', b, path)]
  t.teardown(() => followers.forEach((f) => f.close()))
  const mover = openStream('sse', a, path)
  t.teardown(() => mover.close())
  await Promise.all([...followers, mover].map((c) => c.waitFor(isLive, 15_000, 'live')))

  const accepted: number[] = []
  const burst = async (servers: TestServer[], n: number, tag: string) => {
    await Promise.all(
      servers.map(async (s, k) => {
        for (let i = 0; i < n; i++) {
          const res = await s.post({ text: `${tag}-${k}-${i}`, room: 'two' })
          if (res.status !== 202 && res.status !== 201) throw new Error(`post failed: ${res.status} ${JSON.stringify(res.body)}`)
          accepted.push(Number(res.body.id))
        }
      }),
    )
  }
  // Concurrent posts to both servers.
  await burst([a, b, a, b], 8, 'one')
  await mover.waitFor((es) => dataEvents(es).length >= 32, 15_000, '32 events on the mover')
  const lastId = dataEvents(mover.events)[dataEvents(mover.events).length - 1].id
  const before = dataEvents(mover.events).map((e) => Number(e.id))
  mover.close()

  await burst([a, b, a, b], 8, 'two')
  // The client reconnects to the other server with its last id.
  const resumed = openStream('sse', b, path, lastId)
  t.teardown(() => resumed.close())
  await resumed.waitFor(isLive, 15_000, 'live after resume')
  await burst([b, a], 8, 'three')

  t.equal(new Set(accepted).size, accepted.length, `${accepted.length} posts, all ids unique`)
  const stored = (await a.app.store.read({ kind: 'room', room: 'two' }, 0, 1000)).map((e) => e.id)
  t.same([...accepted].sort((x, y) => x - y), stored, 'the store holds exactly the accepted posts')
  t.ok(increasing(stored), 'store order is id order')

  await resumed.waitFor((es) => dataEvents(es).length >= stored.length - before.length, 15_000, 'the rest on the resumed client')
  t.notOk(resumed.events.some((e) => e.type === 'reset'), 'no reset: the id was honoured')
  const after = dataEvents(resumed.events).map((e) => Number(e.id))
  t.same([...before, ...after], stored, 'before + after the move = the store, no loss, no duplicate')

  await Promise.all(followers.map((f) => f.waitFor((es) => dataEvents(es).length >= stored.length, 15_000, 'all events')))
  await new Promise((r) => setTimeout(r, 200))
  followers.forEach((f, i) => {
    const ids = dataEvents(f.events).map((e) => Number(e.id))
    t.ok(increasing(ids), `follower ${i}: strictly increasing`)
    t.same(ids, stored, `follower ${i}: exactly the store's sequence`)
  })
})

t.test('issue #21 row 5: the same Idempotency-Key posted to two servers at once is stored once (40 trials), both answer its id', async (t) => {
  const mongodb = mongoConfig()
  const a = await startServer({ store: { type: 'mongodb', mongodb } })
  t.teardown(() => a.close())
  const b = await startServer({ store: { type: 'mongodb', mongodb } })
  t.teardown(() => b.close())
  let twoIds = 0
  for (let trial = 0; trial < 40; trial++) {
    const key = { 'idempotency-key': `two-servers-${trial}` }
    // As a client does with a 503 ("retry with the same Idempotency-Key"): again, a bounded number of times.
    const post = async (s: typeof a): Promise<{ status: number; body: any }> => {
      let r = await s.post({ text: `t${trial}`, room: 'keys' }, key)
      for (let retry = 0; retry < 5 && r.status === 503; retry++) r = await s.post({ text: `t${trial}`, room: 'keys' }, key)
      return r
    }
    const [x, y] = await Promise.all([post(a), post(b)])
    t.same([x.status, y.status], [202, 202], `trial ${trial}: both accepted (${JSON.stringify([x.body, y.body]).slice(0, 300)})`)
    if (x.body.id !== y.body.id) twoIds++
  }
  t.equal(twoIds, 0, 'both servers answer the one id in every trial')
  const stored = await a.app.store.read({ kind: 'room', room: 'keys' }, 0, 1000)
  t.equal(stored.length, 40, 'each key stored once: 0 duplicates')
  t.same(stored.map((e) => e.data.text), Array.from({ length: 40 }, (_, i) => `t${i}`))
})
