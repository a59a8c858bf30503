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

t.test('logs are structured JSON with request ids and never show a secret; /metrics counters move under load', async (t) => {
  const token = 'tok-5ecret-value'
  const server = await spawnServer({ LOG_LEVEL: 'info', TAILCAST_POST_TOKEN: token, MONGODB_URL: 'mongodb://admin:db-5ecret@127.0.0.1:1/' })
  t.teardown(() => server.kill('SIGKILL'))
  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`${server.url}/metrics`)).text()
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(text)
    return m ? Number(m[1]) : NaN
  }
  const clients = Array.from({ length: 10 }, (_, i) => openStream(i % 2 ? 'ws' : 'sse', server, '/messages?room=m'))
  await Promise.all(clients.map((c) => c.waitFor(isLive)))
  const before = await metric('tailcast_events_delivered_total')
  t.equal(await metric('tailcast_connections'), 5, 'connections by transport and stream (one series shown)')
  for (let i = 0; i < 20; i++) t.equal((await postTo(server.url, { text: `m${i}`, room: 'm' }, { authorization: `Bearer ${token}` })).status, 202)
  t.equal((await postTo(server.url, { text: 'x', room: 'm' }, { authorization: 'Bearer wrong-guess' })).status, 403)
  t.equal((await postTo(server.url, { nope: 1 }, { authorization: `Bearer ${token}` })).status, 400)
  await Promise.all(clients.map((c) => c.waitFor((es) => dataEvents(es).length === 20)))
  t.equal((await metric('tailcast_events_delivered_total')) - before, 200, 'delivered: 20 events x 10 clients')
  t.equal(await metric('tailcast_events_ingested_total'), 20, 'ingested')
  t.equal(await metric('tailcast_events_dropped_total'), 1, 'dropped (invalid)')
  clients.forEach((c) => c.close())
  await server.kill('SIGTERM')
  const lines = server.output().trim().split('\n')
  t.ok(lines.length > 10 && lines.every((l) => JSON.parse(l).level !== undefined), 'every log line is JSON')
  t.ok(lines.some((l) => /"reqId":"req-/.test(l)), 'requests are logged with ids')
  t.notMatch(server.output(), /5ecret|wrong-guess/, 'no token, password or credential in the logs')
})
