import t from 'tap'
import type { JetStreamClient } from 'nats'
import { dataEvents, isLive, openSse, openWs, type StreamClient } from '../helpers/clients.js'
import { natsClient, natsOverrides, ownNatsServer } from '../helpers/nats.js'
import { startServer } from '../helpers/server.js'

/** Publish until JetStream acks; the Nats-Msg-Id makes a retried publish whose ack was lost a no-op. */
async function publishSure(js: JetStreamClient, subject: string, payload: Uint8Array, msgID: string): Promise<void> {
  const until = Date.now() + 30_000
  for (;;) {
    try {
      await js.publish(subject, payload, { msgID, timeout: 1000 })
      return
    } catch (err) {
      if (Date.now() > until) throw err
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}

t.test('NATS stopped and restarted mid-run: every event stored once, in order, and delivered once', async (t) => {
  // This test stops NATS, so it runs its own nats-server rather than the shared one.
  const nats = await ownNatsServer()
  t.teardown(() => nats.dispose())
  const server = await startServer({ ...natsOverrides(nats.url, { leaseSeconds: 2 }), logLevel: process.env.TEST_LOG_LEVEL ?? 'silent' })
  t.teardown(() => server.close())
  const nc = await natsClient(nats.url)
  t.teardown(() => nc.close())
  const cfg = server.config.nats
  const subject = `${cfg.subject.slice(0, -1)}room.r`

  const clients: StreamClient[] = [openSse(`${server.url}/messages?room=r`), openWs(`${server.wsUrl}/messages?room=r`)]
  t.teardown(() => clients.forEach((c) => c.close()))
  for (const c of clients) await c.waitFor(isLive, 5000, 'live')

  const N = 1500
  const js = nc.jetstream()
  let restarted = false
  for (let n = 0; n < N; n++) {
    if (n === 500) {
      await nats.stop()
      // Publishes while NATS is down are retried until it is back.
      setTimeout(() => void nats.start().then(() => (restarted = true)), 1000)
    }
    await publishSure(js, subject, new TextEncoder().encode(JSON.stringify({ text: `m${n}`, room: 'r' })), `m${n}`)
  }
  t.ok(restarted, 'NATS was restarted during the run')

  for (const c of clients) await c.waitFor((ev) => dataEvents(ev).length >= N, 60_000, `${N} events`)
  await new Promise((r) => setTimeout(r, 500))
  const stored = await server.app.store.read({ kind: 'room', room: 'r' }, 0, 10 * N)
  t.equal(stored.length, N, `the store has ${N} events`)
  t.same(stored.map((e) => e.data.text), Array.from({ length: N }, (_, n) => `m${n}`), 'each published event once, in publish order')
  t.ok(stored.every((e, i) => i === 0 || e.id > stored[i - 1].id), 'ids strictly increasing')
  for (const [i, c] of clients.entries()) {
    const got = dataEvents(c.events)
    t.same(got.map((e) => Number(e.id)), stored.map((e) => e.id), `client ${i} (${i === 0 ? 'SSE' : 'WS'}) saw exactly the store's sequence`)
  }
  const ready = (await (await fetch(`${server.url}/ready`)).json()) as { status: string; nats: { connected: boolean; writer: boolean } }
  t.equal(ready.status, 'ready', '/ready after the restart')
  t.equal(ready.nats.writer, true, 'still the writer')
})
