import t from 'tap'
import { dataEvents, isLive, openStream, type StreamClient } from '../helpers/clients.js'
import { startServer } from '../helpers/server.js'

// The fan-out fast path (batched flushes, prebuilt SSE chunks and WebSocket frames written straight
// to the sockets) must deliver exactly what the slow path did: every event once, in id order, with
// no gap at the replay/live seam, on both transports, whatever the batch boundaries.
t.test('clients joining during a burst see every event once, in order, on both transports', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const clients: StreamClient[] = []
  const posted: string[] = []
  for (let i = 0; i < 60; i++) {
    // Several posts in flight at once, so that flushes carry batches of more than one event.
    const burst = await Promise.all([0, 1, 2].map((k) => server.post({ type: 'tick', room: 'r1', data: { i, k } })))
    for (const r of burst) {
      t.equal(r.status, 202)
      posted.push(r.body.id)
    }
    if (i % 10 === 0) {
      clients.push(openStream('sse', server, '/messages?room=r1'), openStream('ws', server, '/messages?room=r1'))
    }
  }
  posted.sort((a, b) => Number(a) - Number(b))
  for (const [n, c] of clients.entries()) {
    await c.waitFor((ev) => dataEvents(ev).length === posted.length, 10_000, `client ${n}: all ${posted.length} events`)
    t.ok(isLive(c.events), `client ${n} went live`)
    t.same(dataEvents(c.events).map((e) => e.id), posted, `client ${n}: each event once, in id order`)
    c.close()
  }
})

t.test('an HTTP chunked SSE body stays well-formed across many batched writes', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const sse = openStream('sse', server, '/messages?room=r2')
  await sse.waitFor(isLive, 5000, 'live')
  const ids: string[] = []
  for (let i = 0; i < 20; i++) {
    const rs = await Promise.all(Array.from({ length: 5 }, (_, k) => server.post({ text: `m${i}.${k} ` + 'é'.repeat(i * 50), room: 'r2' })))
    ids.push(...rs.map((r) => r.body.id as string))
  }
  ids.sort((a, b) => Number(a) - Number(b))
  await sse.waitFor((ev) => dataEvents(ev).length === ids.length, 10_000, 'all messages')
  const got = dataEvents(sse.events)
  t.same(got.map((e) => e.id), ids)
  t.ok(got.every((e) => typeof e.data.text === 'string' && (e.data.text as string).startsWith('m')), 'payloads intact')
  sse.close()
})

t.test('one batch bigger than the send buffer limit does not cut off clients that read', async (t) => {
  // The limit is on what a client leaves unread, not on the size of one hand-over: a burst (a busy
  // turn, a store tail catching up) goes out as one batch, bigger than what the kernel takes at once.
  const server = await startServer({ streams: { maxBufferedBytes: 65536 } })
  t.teardown(() => server.close())
  const clients = (['sse', 'ws'] as const).map((kind) => ({ kind, c: openStream(kind, server, '/messages?room=big') }))
  for (const { kind, c } of clients) await c.waitFor(isLive, 5000, `${kind} live`)
  const pad = 'p'.repeat(4000)
  const stored = await server.app.ingest.submit(Array.from({ length: 3000 }, (_, i) => ({ type: 'message', room: 'big', time: new Date().toISOString(), data: { i, pad } })))
  const ids = stored.map((s) => String(s.id))
  for (const { kind, c } of clients) {
    await c.waitFor((ev) => dataEvents(ev).length === ids.length, 20_000, `${kind}: all 3,000 events of the one batch`)
    t.same(dataEvents(c.events).map((e) => e.id), ids, `${kind}: every event once, in order`)
  }
  t.equal(server.app.hub.stats.slowDisconnects, 0, 'nobody was cut off as slow')
  for (const { c } of clients) c.close()
})
