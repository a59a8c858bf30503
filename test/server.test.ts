import t from 'tap'
import { dataEvents, isLive, openStream, postTo, type StreamClient } from './helpers/clients.js'
import { spawnServer } from './helpers/process.js'

t.test('SIGTERM under load: every client is told to reconnect, the process exits 0', async (t) => {
  const server = await spawnServer()
  t.teardown(() => server.kill('SIGKILL'))
  const clients: StreamClient[] = []
  for (let i = 0; i < 40; i++) clients.push(openStream(i % 2 ? 'ws' : 'sse', server, '/messages?room=bye'))
  await Promise.all(clients.map((c) => c.waitFor(isLive)))
  let posting = true
  const poster = (async () => {
    while (posting) {
      const r = await postTo(server.url, { text: 'load', room: 'bye' }).catch(() => null)
      if (r === null || r.status !== 202) break
    }
  })()
  await new Promise((r) => setTimeout(r, 300))
  const started = Date.now()
  const exit = await server.kill('SIGTERM')
  posting = false
  await poster
  t.same(exit, { code: 0, signal: null }, 'exit code 0')
  t.ok(Date.now() - started < 10_000, 'within the shutdown deadline')
  const ends = await Promise.all(clients.map((c) => c.ended))
  t.same(
    ends.filter((_, i) => i % 2 === 1),
    new Array(20).fill(1012),
    'every WebSocket client got close 1012',
  )
  t.same(
    ends.filter((_, i) => i % 2 === 0),
    new Array(20).fill(null),
    'every SSE stream ended',
  )
  t.ok(clients.every((c) => dataEvents(c.events).length > 0), 'events were flowing')
})
