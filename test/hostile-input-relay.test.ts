import t, { type Test } from 'tap'
import {
  HostileUpstream,
  ROOM,
  STORES,
  droppedInvalid,
  logSink,
  runRows,
  storedAfter,
  until,
  withId,
  type IngestPath,
} from './helpers/hostile.js'
import { startServer, storeOverrides, type StoreKind } from './helpers/server.js'

/**
 * Issue #13 on the relay path: a hostile upstream (a raw SSE server) sends each payload as an event
 * with an id, then a normal event. The relay stores what the decoder accepts, with the upstream's
 * id; what it refuses it skips (logged with the rule, counted as dropped "invalid") and follows on
 * over the same connection, never reconnecting to the same bad event again and again.
 */

async function relayPath(t: Test, kind: StoreKind): Promise<IngestPath> {
  const upstream = await HostileUpstream.start()
  const log = logSink()
  const server = await startServer(
    { ...storeOverrides(kind), logLevel: 'info', upstream: { url: upstream.url, reconnectMinMs: 50, reconnectMaxMs: 300, catchUpTimeoutMs: 3000 } },
    { logStream: log.stream },
  )
  t.teardown(async () => {
    await server.close()
    await upstream.close()
  })
  await until(() => (server.app.upstream?.caughtUp ? true : undefined), 5000, 'the relay to reach live')
  let nextId = 1000
  let row = { id: 0, marker: 0, connections: 0, logMark: 0, dropped: 0 }
  let stall: Promise<string> = new Promise(() => {})
  return {
    server,
    async send(r) {
      const id = nextId++
      row = { id, marker: 0, connections: upstream.connections.length, logMark: log.lines.length, dropped: await droppedInvalid(server) }
      stall = upstream.nextConnection().then(() => `the relay reconnected (Last-Event-ID ${upstream.connections.at(-1)}) instead of skipping event ${id}`)
      upstream.push(id, withId(r.payload, id))
      return {
        async settle() {
          if ((await storedAfter(server, id - 1)).some((e) => e.id === id)) return { accepted: id }
          const logged = log.since(row.logMark).join('\n')
          return logged === '' ? { other: 'not stored and nothing logged' } : { refused: logged }
        },
      }
    },
    async sendMarker(text) {
      const id = nextId++
      row.marker = id
      upstream.push(id, Buffer.from(JSON.stringify({ id: String(id), type: 'message', room: ROOM, time: new Date().toISOString(), data: { text } })))
      return id
    },
    stalled: () => stall,
    async recover() {
      // Take the event it is stuck on off the upstream: the next reconnect gets the event after it.
      upstream.remove(row.id)
      await until(async () => ((await storedAfter(server, row.marker - 1)).length > 0 ? true : undefined), 5000, 'the relay to get past it').catch(() => {})
      return [...new Set(log.since(row.logMark).filter((s) => s.length > 20))].slice(0, 3).join('; ').slice(0, 400)
    },
    async check(t, r, verdict) {
      t.equal(upstream.connections.length, row.connections, `${r.name}: the relay kept its upstream connection`)
      if ('refused' in verdict) t.equal((await droppedInvalid(server)) - row.dropped, 1, `${r.name}: counted in tailcast_events_dropped_total{reason="invalid"}`)
    },
  }
}

for (const kind of STORES) {
  t.test(`relay on the ${kind} store: every hostile payload from the upstream`, async (t) => {
    const path = await relayPath(t, kind)
    await runRows(t, path)
    const ready = await fetch(`${path.server.url}/ready`)
    t.equal(ready.status, 200, '/ready: still relaying')
    t.match(await ready.json(), { upstream: 'connected' })
  })
}
