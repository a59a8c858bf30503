import t from 'tap'
import { dataEvents, isLive, openSse } from '../helpers/clients.js'
import { startServer } from '../helpers/server.js'

// Row 4 of #13: the store wraps while a slow client is still paging through its replay. The hot
// history is kept small here, so the replay pages through the store.
t.test('the store wraps past a slow reader during its replay: reset, then the live state, never a silent gap', async (t) => {
  const server = await startServer({
    store: { type: 'memory', capacity: 2000 },
    // A long heartbeat and drain deadline: the paused reader is not cut off as slow while the test posts.
    streams: { replayPageSize: 100, maxBufferedBytes: 64 * 1024, historyMaxEvents: 200, heartbeatSeconds: 600, drainTimeoutSeconds: 600 },
  })
  t.teardown(() => server.close())
  const pad = 'x'.repeat(4000)
  const post = async (i: number): Promise<void> => {
    const r = await server.post({ type: 'Tick', room: 'w', data: { i, pad } })
    if (r.status !== 202) throw new Error(`post ${i}: ${r.status}`)
  }
  for (let i = 0; i < 2000; i++) await post(i)

  const slow = openSse(`${server.url}/messages?room=w`)
  t.teardown(() => slow.close())
  await slow.waitFor((es) => es.length > 0, 10_000, 'the replay to start')
  slow.pause()
  // The replay now waits for the client to read; meanwhile the ring turns over past it.
  for (let i = 2000; i < 5000; i++) await post(i)
  const stored = (await server.app.store.read({ kind: 'room', room: 'w' }, 0, 10_000)).map((e) => e.id)
  t.equal(stored.length, 2000)
  slow.resume()
  await slow.waitFor(isLive, 30_000, 'live')

  const types = slow.events.map((e) => e.type)
  const reset = types.indexOf('reset')
  t.ok(reset > 0, `the client was told (reset after ${reset} events)`)
  t.match(slow.events[reset].data, { reason: /dropped events after \d+ while they were being replayed/ })
  const before = dataEvents(slow.events.slice(0, reset)).map((e) => Number(e.id))
  const after = dataEvents(slow.events.slice(reset)).map((e) => Number(e.id))
  t.ok(before.every((id, i) => i === 0 || id > before[i - 1]), 'ids increase before the reset')
  t.same(after, stored, 'after the reset: exactly the store, in order')
  t.ok(after[0] > before[before.length - 1], 'ids keep increasing across the reset (EventSource keeps a valid Last-Event-ID)')
  t.equal(types.at(-1), 'live')
})
