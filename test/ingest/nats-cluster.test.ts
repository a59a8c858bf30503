import t from 'tap'
import { natsClient, natsOverrides } from '../helpers/nats.js'
import { natsCluster } from '../helpers/nats-cluster.js'
import { startServer } from '../helpers/server.js'
import { openSse, isLive, dataEvents } from '../helpers/clients.js'

/**
 * On a 3-node JetStream cluster, NATS_URL listing the nodes: the streams and the lease bucket get
 * nats.replicas copies (an existing R1 setup is scaled up), and a process whose node is killed
 * reconnects to another one and goes on writing; the dead-letter stream works there too.
 */
t.test('a 3-node cluster: replicated streams, scaled up from R1, surviving the loss of the connected node', async (t) => {
  const cluster = await natsCluster(3)
  t.teardown(() => cluster.dispose())
  const nc = await natsClient(cluster.url)
  t.teardown(() => nc.close())
  const jsm = await nc.jetstreamManager()
  const over = natsOverrides(cluster.url, { replicas: 1, leaseSeconds: 2 })
  const { stream } = over.nats as { stream: string }
  const names = [stream, `${stream}_DEADLETTER`, `KV_${stream}_LEASE`]

  const first = await startServer(over)
  for (const name of names) t.equal((await jsm.streams.info(name)).config.num_replicas, 1, `${name}: created with 1 replica`)
  await first.close()

  const server = await startServer({ nats: { ...over.nats, replicas: 3 } })
  t.teardown(() => server.close())
  for (const name of names) t.equal((await jsm.streams.info(name)).config.num_replicas, 3, `${name}: scaled to 3 replicas at start`)

  const client = openSse(`${server.url}/messages?room=c`)
  t.teardown(() => client.close())
  await client.waitFor(isLive, 10_000, 'live')
  t.equal((await server.post({ text: 'before', room: 'c' })).status, 202)
  await client.waitFor((e) => dataEvents(e).length === 1, 10_000, 'the first event')

  const at = server.app.nats!.state.server!
  const node = cluster.indexOf(at)
  t.ok(node >= 0, `connected to ${at}`)
  await cluster.kill(node)
  const until = Date.now() + 20_000
  while (!(server.app.nats!.state.connected && cluster.indexOf(server.app.nats!.state.server ?? '') !== node) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  t.not(cluster.indexOf(server.app.nats!.state.server ?? ''), node, `reconnected to another node (${server.app.nats!.state.server})`)

  // POST until the stream has a leader again: each answer is a 202 or a 503 that says so.
  let stored: string | undefined
  const statuses = new Set<number>()
  while (stored === undefined && Date.now() < until + 20_000) {
    const r = await server.post({ text: 'after', room: 'c' }, { 'idempotency-key': 'after-the-node-died' })
    statuses.add(r.status)
    if (r.status === 202) stored = r.body.id
    else t.equal(r.status, 503, `refused while the stream elects a leader: ${r.body.message}`)
  }
  t.ok(stored !== undefined, `a POST is stored after the node died (answers: ${[...statuses].join(', ')})`)
  // The writer keeps its consumer and reads directly meanwhile (nats-node-loss.test.ts measures the
  // delay); the POST above waited for the stream's leader election. Bounded, with room.
  await client.waitFor((e) => dataEvents(e).some((x) => x.id === stored), 45_000, 'the event posted after the node died')
  t.same(dataEvents(client.events).map((e) => e.data.text), ['before', 'after'], 'the client has both, once each')
  t.ok(server.app.nats!.state.writer, 'still (or again) the writer')

  // An invalid payload goes to the dead-letter stream through the surviving nodes.
  const subject = (over.nats as { subject: string }).subject.replace('>', 'x')
  await nc.jetstream().publish(subject, new TextEncoder().encode('not json'))
  const dlUntil = Date.now() + 20_000
  let dead = 0
  while (dead === 0 && Date.now() < dlUntil) {
    dead = (await jsm.streams.info(`${stream}_DEADLETTER`).catch(() => null))?.state.messages ?? 0
    if (dead === 0) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(dead, 1, 'the invalid payload is in the dead-letter stream')
  for (const name of names) await jsm.streams.delete(name).catch(() => {})
})
