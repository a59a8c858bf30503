import t from 'tap'
import { randomBytes } from 'node:crypto'
import type { JetStreamClient } from 'nats'
import { dataEvents, Follower, type Received } from '../helpers/clients.js'
import { MongoEventStore } from '../../src/store/mongo-store.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { natsClient, natsUrl, removeNatsStreams } from '../helpers/nats.js'

/** A server process with a name for messages; `npm test` builds dist/ first. */
type Instance = ServerProcess & { name: string }
const startInstance = async (name: string, env: Record<string, string>): Promise<Instance> => ({ ...(await spawnServer(env)), name })

const N = 10_000
const CLIENTS = 30

function mongoUrl(): string {
  const url = process.env.MONGODB_URL
  if (url === undefined || url === '') {
    throw new Error('MONGODB_URL is not set: several instances need a shared store; run the tests through `npm test` (scripts/test-services.sh starts FerretDB) or set MONGODB_URL')
  }
  return url
}

async function publishSure(js: JetStreamClient, subject: string, payload: Uint8Array, msgID: string): Promise<void> {
  const until = Date.now() + 30_000
  for (;;) {
    try {
      await js.publish(subject, payload, { msgID, timeout: 2000 })
      return
    } catch (err) {
      if (Date.now() > until) throw err
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}

t.test(`${N} events published while 3 instances run and ${CLIENTS} clients follow; the writer is killed -9 mid-run`, async (t) => {
  const nats = natsUrl()
  const mongo = mongoUrl()
  const tag = randomBytes(4).toString('hex')
  const env = {
    NATS_URL: nats,
    TAILCAST_NATS_STREAM: `M${tag}`,
    TAILCAST_NATS_SUBJECT: `m${tag}.>`,
    TAILCAST_NATS_DURABLE: `w${tag}`,
    TAILCAST_NATS_DEAD_LETTER_SUBJECT: `m${tag}dead.letters`,
    TAILCAST_NATS_LEASE_SECONDS: '2',
    TAILCAST_STORE: 'mongodb',
    MONGODB_URL: mongo,
    TAILCAST_MONGODB_DATABASE: 'tailcast_test',
    TAILCAST_MONGODB_COLLECTION: `multi_${tag}`,
    TAILCAST_MONGODB_CAPPED_MAX: String(10 * N),
  }
  const instances: Instance[] = []
  t.teardown(async () => {
    for (const i of instances) await i.kill('SIGKILL')
  })
  // One first, so that the collection and the streams are created once.
  instances.push(await startInstance('a', env))
  instances.push(...(await Promise.all([startInstance('b', env), startInstance('c', env)])))
  const nc = await natsClient(nats)
  t.teardown(async () => {
    await removeNatsStreams(nc, env.TAILCAST_NATS_STREAM)
    await nc.close()
  })

  const writerOf = async (): Promise<Instance[]> => {
    const out: Instance[] = []
    for (const i of instances) {
      if (i.child.exitCode !== null || i.child.signalCode !== null) continue
      const r = await i.ready().catch(() => null)
      if (r?.body?.nats?.writer === true) out.push(i)
    }
    return out
  }
  let writers = await writerOf()
  for (let k = 0; k < 50 && writers.length !== 1; k++) {
    await new Promise((r) => setTimeout(r, 100))
    writers = await writerOf()
  }
  t.equal(writers.length, 1, `exactly one writer (${writers.map((w) => w.name).join(',')})`)
  const firstWriter = writers[0]

  const followers = Array.from({ length: CLIENTS }, (_, k) => new Follower(k % 2 === 0 ? 'sse' : 'ws', instances, k, '/messages?room=r'))
  t.teardown(() => followers.forEach((f) => f.stop()))
  await Promise.all(followers.map((f) => f.start()))

  const js = nc.jetstream()
  const subject = `m${tag}.room.r`
  const t0 = Date.now()
  let killedAt = 0
  let takeoverMs = -1
  const WINDOW = 50
  for (let n = 0; n < N; n += WINDOW) {
    if (killedAt === 0 && n >= N * 0.3) {
      killedAt = Date.now()
      await firstWriter.kill('SIGKILL')
      void (async () => {
        for (;;) {
          const w = await writerOf()
          if (w.length > 0) return void (takeoverMs = Date.now() - killedAt)
          if (Date.now() - killedAt > 30_000) return
          await new Promise((r) => setTimeout(r, 100))
        }
      })()
    }
    const batch: Promise<void>[] = []
    for (let k = n; k < Math.min(N, n + WINDOW); k++) {
      batch.push(publishSure(js, subject, new TextEncoder().encode(JSON.stringify({ text: `m${k}`, room: 'r' })), `${tag}-${k}`))
    }
    await Promise.all(batch)
  }

  t.comment(`published ${N} in ${Date.now() - t0} ms`)
  // Ingest (NATS -> store) apart from delivery (store -> clients): when the writer has stored them all.
  const lastSeq = (await (await nc.jetstreamManager()).streams.info(env.TAILCAST_NATS_STREAM)).state.last_seq
  const storedBy = Date.now() + 90_000
  for (;;) {
    const w = (await writerOf())[0]
    const r = w === undefined ? null : await w.ready().catch(() => null)
    if ((r?.body?.nats?.lastSequence ?? 0) >= lastSeq || Date.now() > storedBy) break
    await new Promise((r) => setTimeout(r, 200))
  }
  t.comment(`the writer had stored up to sequence ${lastSeq} ${Date.now() - t0} ms after the first publish`)
  const exitedEarly = (): Instance[] => instances.filter((i) => i !== firstWriter && (i.child.exitCode !== null || i.child.signalCode !== null))
  const deadline = Date.now() + 180_000
  while (followers.some((f) => f.events.length < N) && Date.now() < deadline && exitedEarly().length === 0) await new Promise((r) => setTimeout(r, 200))
  for (const i of exitedEarly()) t.fail(`instance ${i.name} exited (${i.child.exitCode ?? i.child.signalCode}):\n${i.output()}`)
  t.comment(`clients caught up ${Date.now() - t0} ms after the first publish: ${followers.map((f) => f.events.length).join(' ')}`)
  if (followers.some((f) => f.events.length < N)) for (const i of instances) t.comment(`instance ${i.name} output:\n${i.output().slice(-3000)}`)
  t.ok(takeoverMs >= 0 && takeoverMs < 10_000, `another instance took the writer lease ${takeoverMs} ms after kill -9`)
  t.equal((await writerOf()).length, 1, 'exactly one writer after the kill')

  // The store's sequence, read from the shared collection.
  // The test's own view of the store: a slow read on a busy machine is no finding here.
  const reader = new MongoEventStore({ url: mongo, database: env.TAILCAST_MONGODB_DATABASE, collection: env.TAILCAST_MONGODB_COLLECTION, cappedSize: 104857600, cappedMax: 10 * N, timeoutMs: 60_000 })
  await reader.open()
  t.teardown(() => reader.close())
  const store = await reader.read({ kind: 'room', room: 'r' }, 0, 2 * N)
  t.equal(store.length, N, `the store holds ${N} events`)
  const texts = new Set(store.map((e) => e.data.text))
  t.equal(texts.size, N, 'each published event once')
  t.ok(store.every((e, i) => i === 0 || e.id > store[i - 1].id), 'store ids strictly increasing')
  const info = await (await nc.jetstreamManager()).streams.info(env.TAILCAST_NATS_STREAM)
  t.equal(info.state.messages, N, `the JetStream stream holds ${N} messages`)
  t.same([store[0]?.id, store[N - 1]?.id], [info.state.first_seq, info.state.last_seq], 'ids are the stream sequences')

  const storeIds = store.map((e) => String(e.id))
  let equal = 0
  for (const [k, f] of followers.entries()) {
    const ids = f.events.map((e) => e.id)
    const same = ids.length === storeIds.length && ids.every((id, i) => id === storeIds[i])
    if (same) equal++
    else t.fail(`client ${k} (${k % 2 === 0 ? 'SSE' : 'WS'}): ${ids.length} events, resets ${f.resets}, reconnects ${f.reconnects}; differs from the store`)
  }
  t.equal(equal, CLIENTS, `all ${CLIENTS} clients saw exactly the store's sequence`)
  t.ok(followers.filter((f) => f.reconnects > 0).length >= 1, `clients of the killed instance reconnected elsewhere (${followers.filter((f) => f.reconnects > 0).length})`)
  t.equal(followers.reduce((s, f) => s + f.resets, 0), 0, 'no client needed a reset')
})
