import t from 'tap'
import type { NewEvent } from '../../src/event.js'
import { DEAD_LETTER_HEADERS } from '../../src/ingest/nats-ingest.js'
import type { EventStore } from '../../src/store/event-store.js'
import { dataEvents, isLive, openSse } from '../helpers/clients.js'
import { openMongoStore, ownFerretDb } from '../helpers/mongo.js'
import { natsTestServer } from '../helpers/nats.js'

/**
 * The real MongoDB store, handed one document it refuses: an event marked `poison` gets a key
 * with a "." on its way in, which FerretDB and MongoDB refuse as the decoder would have.
 */
function poisoning(inner: EventStore): EventStore {
  const spoil = (e: NewEvent): NewEvent => (e.data.poison === true ? { ...e, data: { ...e.data, 'a.b': 1 } } : e)
  return Object.assign(Object.create(inner) as EventStore, { append: (events: NewEvent[], ids?: number[]) => inner.append(events.map(spoil), ids) })
}

// Row 3 of #13: a message the store refuses used to be retried forever, and nothing after it was stored.
t.test('NATS + MongoDB store: a message the store refuses is dead-lettered and acked, and ingest goes on', async (t) => {
  const mongo = await openMongoStore()
  t.teardown(() => mongo.close())
  const { server, nc } = await natsTestServer(t, {}, { store: poisoning(mongo) })
  const cfg = server.config.nats
  const follower = openSse(`${server.url}/messages?room=p`)
  t.teardown(() => follower.close())
  await follower.waitFor(isLive, 10_000, 'live')

  const dead = nc.subscribe(cfg.deadLetterSubject, { max: 1 })
  const js = nc.jetstream()
  const subject = `${cfg.subject.slice(0, -1)}room.p`
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
  const seqs: number[] = []
  for (let i = 0; i < 5; i++) seqs.push((await js.publish(subject, enc({ type: 'T', room: 'p', data: { i, poison: i === 2 } }))).seq)

  const [letter] = await Promise.race([
    (async () => {
      for await (const m of dead) return [m]
      return []
    })(),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no dead letter within 15 s')), 15_000)),
  ])
  t.equal(letter.headers?.get(DEAD_LETTER_HEADERS.sequence), String(seqs[2]), 'the refused message is dead-lettered')
  t.match(letter.headers?.get(DEAD_LETTER_HEADERS.reason), /store refused/, 'with the store\'s reason')
  await follower.waitFor((es) => dataEvents(es).length >= 4, 15_000, 'the other 4 events')
  t.same(dataEvents(follower.events).map((e) => Number(e.id)), [seqs[0], seqs[1], seqs[3], seqs[4]], 'every other event, in order')
  t.same((await mongo.read({ kind: 'room', room: 'p' }, 0, 10)).map((e) => e.id), [seqs[0], seqs[1], seqs[3], seqs[4]], 'stored once each')
  const ready = await fetch(`${server.url}/ready`)
  t.equal(ready.status, 200, '/ready: one refused event is not a failing writer')
  t.equal(server.app.nats?.state.writerFailures, 0)
})

t.test('NATS writer whose store is down: /ready 503 naming the failure after 3 tries, ready and ingesting again once it is back', async (t) => {
  const fdb = await ownFerretDb()
  // The product's deadline: once one call has found the server gone, the driver waits this long
  // to select it again, so each of the writer's three tries fails only after it.
  const store = await openMongoStore({ url: fdb.url, timeoutMs: 5000 })
  const { server, nc } = await natsTestServer(t, {}, { store })
  t.teardown(async () => {
    await server.close()
    await store.close()
    await fdb.destroy()
  })
  const ready = async (): Promise<{ status: number; body: any }> => {
    const r = await fetch(`${server.url}/ready`)
    return { status: r.status, body: await r.json() }
  }
  const waitReady = async (want: number, what: string, also: (body: any) => boolean = () => true): Promise<{ status: number; body: any }> => {
    const until = Date.now() + 60_000
    for (;;) {
      const r = await ready()
      if (r.status === want && also(r.body)) return r
      if (Date.now() > until) throw new Error(`${what}: /ready still ${r.status} ${JSON.stringify(r.body)}`)
      await new Promise((res) => setTimeout(res, 200))
    }
  }
  await waitReady(200, 'ready at start')
  await fdb.stop(true)
  const subject = `${server.config.nats.subject.slice(0, -1)}room.d`
  const { seq } = await nc.jetstream().publish(subject, new TextEncoder().encode(JSON.stringify({ text: 'while the store is down', room: 'd' })))
  const down = await waitReady(503, 'the writer failing 3 times in a row', (b) => b.nats.writerFailures >= 3)
  t.pass(`503 (${JSON.stringify(down.body).slice(0, 300)})`)
  t.ok(typeof down.body.nats.lastError === 'string' && down.body.nats.lastError.length > 0, `with the writer's reason: ${down.body.nats.lastError}`)
  await fdb.start()
  await waitReady(200, 'ready again')
  const until = Date.now() + 30_000
  while ((await store.read({ kind: 'room', room: 'd' }, 0, 10)).length === 0 && Date.now() < until) await new Promise((res) => setTimeout(res, 200))
  t.same((await store.read({ kind: 'room', room: 'd' }, 0, 10)).map((e) => e.id), [seq], 'the message published meanwhile is stored')
})
