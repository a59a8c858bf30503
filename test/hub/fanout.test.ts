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
