import t from 'tap'
import { randomBytes } from 'node:crypto'
import { MongoEventStore } from '../../src/store/mongo-store.js'
import { dataEvents, Follower, postTo } from '../helpers/clients.js'
import { freshCollection, mongoUrl, TEST_DATABASE } from '../helpers/mongo.js'
import { natsClient } from '../helpers/nats.js'
import { distinctPorts, natsCluster } from '../helpers/nats-cluster.js'
import { startNginx } from '../helpers/nginx.js'
import { spawnServer, type ServerProcess } from '../helpers/process.js'
import { waitUntil } from '../helpers/wait.js'

const CLIENTS = 30
const ROOM = 'topology'
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Post {
  text: string
  sentAt: number
  status: number
  /** The answer's body: the id of a 202, the message of a refusal. */
  body: any
}

/**
 * The production topology on real parts: nginx (deploy/nginx/tailcast.conf) in front of three
 * tailcast processes on one FerretDB, ingesting through a three-node NATS JetStream cluster with
 * replicated streams. 30 clients (SSE and WebSocket) follow through nginx only while events are
 * posted through nginx. In turn: kill -9 of the writer-lease holder, kill -9 of the NATS node the
 * (new) writer is connected to, SIGTERM of another instance, an nginx reload. Killed instances come
 * back on their port, as systemd's Restart= does, and the NATS node rejoins. Afterwards every client
 * holds exactly the store's events, in order; each fault's worst event-to-every-client time and the
 * posts refused during it are reported.
 */
t.test('nginx -> 3 instances -> FerretDB + NATS x3: kill -9 writer, kill -9 its NATS node, SIGTERM, nginx reload', async (t) => {
  const cluster = await natsCluster(3)
  t.teardown(() => cluster.dispose())
  const ports = await distinctPorts(3)
  const tag = randomBytes(4).toString('hex')
  const collection = freshCollection('topology')
  const env = {
    NATS_URL: cluster.url,
    TAILCAST_NATS_REPLICAS: '3',
    TAILCAST_NATS_STREAM: `D${tag}`,
    TAILCAST_NATS_SUBJECT: `d${tag}.>`,
    TAILCAST_NATS_DURABLE: `w${tag}`,
    TAILCAST_NATS_DEAD_LETTER_SUBJECT: `d${tag}dead.letters`,
    TAILCAST_NATS_LEASE_SECONDS: '2',
    TAILCAST_STORE: 'mongodb',
    MONGODB_URL: mongoUrl(),
    TAILCAST_MONGODB_DATABASE: TEST_DATABASE,
    TAILCAST_MONGODB_COLLECTION: collection,
    TAILCAST_HEARTBEAT_SECONDS: '2',
    LOG_LEVEL: 'info',
  }
  const instances: (ServerProcess | undefined)[] = [undefined, undefined, undefined]
  /** Every process started, killed ones included (their logs). */
  const spawned: { i: number; s: ServerProcess }[] = []
  const start = async (i: number): Promise<void> => {
    instances[i] = await spawnServer({ ...env, PORT: String(ports[i]) })
    spawned.push({ i, s: instances[i]! })
  }
  const alive = (i: number): boolean => {
    const s = instances[i]
    return s !== undefined && s.child.exitCode === null && s.child.signalCode === null
  }
  const followers: Follower[] = []
  let posting = true
  t.teardown(async () => {
    posting = false
    followers.forEach((f) => f.stop())
    for (const s of instances) await s?.kill('SIGKILL')
  })
  // One first: it creates the collection and the replicated streams.
  await start(0)
  await Promise.all([start(1), start(2)])
  const nginx = await startNginx(ports.map((p) => `127.0.0.1:${p}`), { shutdownTimeout: '3s' })
  t.teardown(() => nginx.stop())

  const ready = async (i: number): Promise<any> => (alive(i) ? (await instances[i]!.ready().catch(() => null))?.body ?? null : null)
  const writer = (): Promise<number> =>
    waitUntil(async () => {
      const bodies = await Promise.all([0, 1, 2].map(ready))
      const w = bodies.flatMap((b, i) => (b?.nats?.writer === true ? [i] : []))
      return w.length === 1 ? w[0] : undefined
    }, 30_000, 'exactly one instance holding the writer lease')
  const first = await writer()
  t.comment(`instance ${first} holds the writer lease, connected to ${(await ready(first))?.nats?.server}`)
  const nc = await natsClient(cluster.url)
  t.teardown(() => nc.close())
  const jsm = await nc.jetstreamManager()
  for (const name of [env.TAILCAST_NATS_STREAM, `${env.TAILCAST_NATS_STREAM}_DEADLETTER`, `KV_${env.TAILCAST_NATS_STREAM}_LEASE`]) {
    const info = await jsm.streams.info(name)
    t.equal(info.config.num_replicas, 3, `${name}: 3 replicas (leader ${info.cluster?.leader}, replicas ${info.cluster?.replicas?.map((r) => r.name).join(',')})`)
  }

  for (let k = 0; k < CLIENTS; k++) followers.push(new Follower(k % 2 === 0 ? 'sse' : 'ws', [nginx], 0, `/messages?room=${ROOM}`))
  await Promise.all(followers.map((f) => f.start()))

  const posts: Post[] = []
  /** Answers lost on the way (the post was sent again with its key). */
  let lost = 0
  const poster = async (lane: number): Promise<void> => {
    for (let n = 0; posting; n++) {
      const text = `p${lane}-${n}`
      const sentAt = performance.now()
      // As the README tells clients: a post whose answer was lost (here: a kept-alive connection
      // that nginx's reload closed as the request went out) is sent again with the same key.
      let r: { status: number; body: any } = { status: 0, body: '' }
      for (let attempt = 0; attempt < 3 && (attempt === 0 || r.status === 0); attempt++) {
        if (attempt > 0) lost++
        r = await postTo(nginx.url, { text, room: ROOM }, { 'idempotency-key': text }).catch((err: Error) => ({ status: 0, body: err.message }))
      }
      posts.push({ text, sentAt, status: r.status, body: r.body })
      await sleep(20)
    }
  }
  const posters = [poster(0), poster(1)]
  const accepted = (): Post[] => posts.filter((p) => p.status === 202)
  const newestAcceptedId = (): string | undefined => {
    const a = accepted()
    return a.length === 0 ? undefined : a.reduce((m, p) => (BigInt(p.body.id) > BigInt(m) ? p.body.id : m), a[0].body.id as string)
  }
  const hasId = (f: Follower, id: string): boolean => f.events.some((e) => e.id === id)

  /** Events flow again: 20 posts accepted after the fault, and every client has the newest accepted one. */
  const recovered = async (what: string, since: number): Promise<void> => {
    await waitUntil(() => (accepted().filter((p) => p.sentAt > since).length >= 20 ? true : undefined), 40_000, `20 posts accepted after ${what}`)
    const id = newestAcceptedId()!
    await waitUntil(() => (followers.every((f) => hasId(f, id)) ? true : undefined), 40_000, `every client to receive event ${id} after ${what}`)
  }

  const phases: { what: string; from: number; to: number; note: string }[] = []
  const phase = async (what: string, fault: () => Promise<string>): Promise<void> => {
    const from = performance.now()
    const note = await fault()
    await recovered(what, from)
    phases.push({ what, from, to: performance.now(), note })
  }

  await phase('steady state (no fault)', async () => {
    await sleep(1000)
    return ''
  })
  let killed = -1
  await phase('kill -9 of the writer-lease holder', async () => {
    killed = await writer()
    await instances[killed]!.kill('SIGKILL')
    const next = await writer()
    t.not(next, killed, `instance ${next} took the writer lease`)
    return `instance ${killed} killed, instance ${next} took over`
  })
  // Back on its port, as systemd's Restart= brings it back.
  await start(killed)

  await phase('kill -9 of the NATS node the writer is connected to', async () => {
    const w = await writer()
    const server: string = (await ready(w)).nats.server
    const node = cluster.indexOf(server)
    t.ok(node >= 0, `the writer (instance ${w}) is connected to node ${cluster.nodes[node]?.name} (${server})`)
    await cluster.kill(node)
    // Every instance that was on it is connected elsewhere again.
    await waitUntil(async () => {
      const bodies = await Promise.all([0, 1, 2].map(ready))
      return bodies.every((b) => b?.nats?.connected === true && cluster.indexOf(b.nats.server) !== node) ? true : undefined
    }, 30_000, 'every instance to reconnect to another NATS node')
    return `node ${cluster.nodes[node].name} killed; the writer was instance ${w}`
  })
  await Promise.all(cluster.nodes.map((n, i) => (n.running() ? undefined : cluster.start(i))))
  await cluster.waitForJetStream()

  await phase('SIGTERM of another instance', async () => {
    const w = await writer()
    const victim = [0, 1, 2].find((i) => i !== killed && alive(i))!
    const exit = await instances[victim]!.kill('SIGTERM')
    t.same(exit, { code: 0, signal: null }, `instance ${victim} exited 0 on SIGTERM`) || t.comment(instances[victim]!.output().slice(-3000))
    await start(victim)
    return `instance ${victim}${victim === w ? ' (the writer)' : ''} stopped and started again`
  })

  await phase('nginx reload', async () => {
    await nginx.reload()
    return 'the old worker closed its streams after worker_shutdown_timeout 3s'
  })

  posting = false
  await Promise.all(posters)

  // The store, then every client caught up with it.
  // The test's own view of the store: a slow read on a busy machine is no finding here.
  const reader = new MongoEventStore({ url: mongoUrl(), database: TEST_DATABASE, collection, cappedSize: 104857600, cappedMax: 100000, timeoutMs: 60_000 })
  await reader.open()
  t.teardown(() => reader.close())
  const storedEvents = async () => reader.read({ kind: 'room', room: ROOM }, 0, 1_000_000)
  let stored = await storedEvents()
  // A post accepted (202) is in JetStream: the writer stores it shortly.
  const acceptedIds = new Set(accepted().map((p) => String(p.body.id)))
  await waitUntil(async () => {
    stored = await storedEvents()
    const have = new Set(stored.map((e) => String(e.id)))
    return [...acceptedIds].every((id) => have.has(id)) && followers.every((f) => dataEvents(f.events).length >= stored.length) ? true : undefined
  }, 60_000, 'the store to hold every accepted post and every client to have the store', 250).catch((err: Error) => t.fail(err.message))
  stored = await storedEvents()
  const storeIds = stored.map((e) => String(e.id))

  t.ok(storeIds.every((id, i) => i === 0 || BigInt(id) > BigInt(storeIds[i - 1])), 'store ids strictly increasing')
  if (!t.ok([...acceptedIds].every((id) => storeIds.includes(id)), `every accepted post is stored (${acceptedIds.size} accepted, ${stored.length} stored)`)) {
    // What the next person needs to find where they went: which ids, what the store's head says, and what the writers logged.
    const missing = [...acceptedIds].filter((id) => !storeIds.includes(id)).map(Number).sort((a, b) => a - b)
    t.comment(`missing ${missing.length}: ${JSON.stringify(missing.slice(0, 200))}; stored ${storeIds[0]}..${storeIds[storeIds.length - 1]}`)
    t.comment(`head: ${JSON.stringify(await reader.client.db(TEST_DATABASE).collection(`${collection}_head`).findOne({}))}`)
    for (const x of spawned) t.comment(`instance ${x.i} (pid ${x.s.child.pid}):\n${x.s.output().split('\n').filter((l) => /NATS|lease|writer|"level":[45]0/.test(l)).slice(-60).join('\n')}`)
  }
  const texts = stored.map((e) => String(e.data.text))
  t.equal(new Set(texts).size, texts.length, 'each posted event stored at most once')
  const posted = new Map(posts.map((p) => [p.text, p]))
  t.ok(texts.every((x) => posted.has(x)), 'the store holds only posted events')
  const refused = posts.filter((p) => p.status !== 202)
  t.ok(refused.every((p) => p.status >= 500 && typeof p.body?.message === 'string'), `every refused post was told so with a JSON 5xx (${refused.length} refused)`) ||
    t.comment(JSON.stringify(refused.filter((p) => !(p.status >= 500 && typeof p.body?.message === 'string')).slice(0, 5)))
  const refusedButStored = refused.filter((p) => texts.includes(p.text))
  t.ok(refusedButStored.every((p) => p.status === 502 || /may have been stored/.test(p.body.message)), 'a refused post that was stored anyway had been answered "may have been stored"')

  let exact = 0
  for (const [k, f] of followers.entries()) {
    const ids = dataEvents(f.events).map((e) => e.id)
    if (ids.length === storeIds.length && ids.every((id, i) => id === storeIds[i])) exact++
    else {
      const dup = ids.length - new Set(ids).size
      const missing = storeIds.filter((id) => !ids.includes(id)).length
      t.fail(`client ${k} (${k % 2 === 0 ? 'SSE' : 'WS'}, ${f.reconnects} reconnects, ${f.resets} resets): ${ids.length} events, ${missing} of the store missing, ${dup} duplicates`)
    }
  }
  t.equal(exact, CLIENTS, `all ${CLIENTS} clients (through nginx only) hold exactly the store's ${storeIds.length} events, in order`)
  t.equal(followers.reduce((s, f) => s + f.resets, 0), 0, 'no client needed a reset')
  t.comment(`${lost} answers lost on the way and sent again with the same Idempotency-Key`)
  t.ok(followers.some((f) => f.reconnects > 0), `clients reconnected through nginx (${followers.reduce((s, f) => s + f.reconnects, 0)} reconnects)`)

  // What each fault cost: the longest time from a post to the last client receiving its event, for
  // the events posted during the fault (until events flowed to every client again), and the refusals.
  const received = followers.map((f) => new Map(f.events.map((e) => [e.id, e.receivedAt ?? Infinity])))
  for (const p of phases) {
    const inWindow = stored.filter((e) => {
      const sent = posted.get(String(e.data.text))!.sentAt
      return sent >= p.from && sent <= p.to
    })
    let worst = 0
    for (const e of inWindow) {
      const sent = posted.get(String(e.data.text))!.sentAt
      for (const r of received) worst = Math.max(worst, (r.get(String(e.id)) ?? Infinity) - sent)
    }
    const during = posts.filter((x) => x.sentAt >= p.from && x.sentAt <= p.to)
    const no = during.filter((x) => x.status !== 202)
    const statuses = [...new Set(no.map((x) => x.status))].join('/')
    t.ok(Number.isFinite(worst), `${p.what}: every event reached every client`)
    t.comment(
      `${p.what}: ${Math.round(p.to - p.from)} ms until events flowed to all ${CLIENTS} clients again; longest post-to-every-client time ${Math.round(worst)} ms ` +
        `over ${inWindow.length} events; posts refused ${no.length} of ${during.length}${no.length > 0 ? ` (${statuses})` : ''}${p.note ? `; ${p.note}` : ''}`,
    )
  }
})
