import https from 'node:https'
import http2 from 'node:http2'
import tls from 'node:tls'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { ConfigError, loadConfig } from '../src/config.js'
import { tlsOptions } from '../src/tls.js'
import { dataEvents, isLive, sseParser, type Received } from './helpers/clients.js'
import { startServer, type TestServer } from './helpers/server.js'
import { openSseH2, selfSignedCert } from './helpers/tls.js'
import { waitUntil } from './helpers/wait.js'

// tls.cert / tls.key: one HTTPS port, HTTP/2 and HTTP/1.1 by ALPN. Real server, real clients
// (node:http2, node:https, ws), a self-signed certificate made for the run.

const cert = selfSignedCert()
t.teardown(() => cert.remove())

async function startTls(overrides: Record<string, unknown> = {}): Promise<TestServer & { https: string; port: number }> {
  const server = await startServer({ tls: { cert: cert.certFile, key: cert.keyFile }, ...overrides })
  const port = Number(new URL(server.url).port)
  return Object.assign(server, { https: `https://127.0.0.1:${port}`, port })
}

function connectH2(t: Test, url: string): http2.ClientHttp2Session {
  const session = http2.connect(url, { ca: cert.cert })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  return session
}

/** POST /messages over the session's HTTP/2 connection. */
function postH2(session: http2.ClientHttp2Session, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/messages', 'content-type': 'application/json', ...headers })
    let status = 0
    let text = ''
    req.setEncoding('utf8')
    req.on('response', (h) => (status = Number(h[':status'])))
    req.on('data', (d: string) => (text += d))
    req.on('end', () => resolve({ status, body: JSON.parse(text) }))
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

function alpn(port: number, protocols: string[]): Promise<string | false | null> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: cert.cert, ALPNProtocols: protocols, servername: 'localhost' }, () => {
      resolve(socket.alpnProtocol ?? null)
      socket.end()
    })
    socket.on('error', reject)
  })
}

t.test('settings: both files or neither; a file that cannot be read is named', async (t) => {
  t.throws(() => loadConfig({ env: { TAILCAST_TLS_CERT: cert.certFile } }), new ConfigError('invalid configuration:\n  tls.cert is set without tls.key: HTTPS needs both files (PEM); set both, or neither for plain HTTP'))
  const config = loadConfig({ env: { TAILCAST_TLS_CERT: cert.certFile, TAILCAST_TLS_KEY: '/nonexistent/key.pem' } })
  t.throws(() => tlsOptions(config), /^tls\.key = "\/nonexistent\/key\.pem": cannot read the file/)
  t.equal(tlsOptions(loadConfig({ env: {} })), null, 'without the two settings: plain HTTP')
  t.match(tlsOptions(loadConfig({ env: { TAILCAST_TLS_CERT: cert.certFile, TAILCAST_TLS_KEY: cert.keyFile } })), { allowHTTP1: true, ALPNProtocols: ['h2', 'http/1.1'] })
})

t.test('one port: ALPN picks h2 or http/1.1; ten SSE streams share one HTTP/2 connection and all get a post', async (t) => {
  const server = await startTls()
  t.teardown(() => server.close())
  t.equal(await alpn(server.port, ['h2', 'http/1.1']), 'h2', 'a browser offering h2 gets it')
  t.equal(await alpn(server.port, ['http/1.1']), 'http/1.1', 'an HTTP/1.1-only client gets HTTP/1.1')

  const session = connectH2(t, server.https)
  const streams = Array.from({ length: 10 }, () => openSseH2(session, '/messages?room=h2', { origin: 'https://elsewhere.example' }))
  for (const s of streams) t.equal(await s.status, 200)
  const head = await streams[0].headers
  t.match(head, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'access-control-allow-origin': '*' })
  t.notOk('connection' in head, 'no connection-specific header on HTTP/2')
  await Promise.all(streams.map((s) => s.waitFor(isLive, 10_000, 'live')))

  const posted = await postH2(session, { room: 'h2', text: 'over h2' })
  t.equal(posted.status, 202)
  await Promise.all(streams.map((s) => s.waitFor((e) => dataEvents(e).some((d) => d.id === posted.body.id), 5000, 'the post')))
  t.pass('all ten streams got the post')
})

t.test('HTTP/1.1 over TLS: SSE (with its direct socket writes), HEAD, and a WebSocket over wss://', async (t) => {
  const server = await startTls()
  t.teardown(() => server.close())

  const events: Received[] = []
  const parse = sseParser(events)
  const req = https.get(`${server.https}/messages?room=one`, { ca: cert.cert, headers: { accept: 'text/event-stream' } })
  t.teardown(() => req.destroy())
  const res = await new Promise<import('node:http').IncomingMessage>((resolve) => req.on('response', resolve))
  t.equal(res.httpVersion, '1.1')
  t.equal(res.headers['transfer-encoding'], 'chunked')
  res.setEncoding('utf8')
  res.on('data', parse)

  const ws = new WebSocket(`wss://127.0.0.1:${server.port}/messages?room=one`, { ca: cert.cert })
  t.teardown(() => ws.terminate())
  const wsEvents: Received[] = []
  ws.on('message', (m) => wsEvents.push(JSON.parse(m.toString()) as Received))
  await waitUntil(() => (isLive(events) && isLive(wsEvents) ? true : undefined), 10_000, 'SSE and wss live')

  const session = connectH2(t, server.https)
  for (let i = 0; i < 3; i++) t.equal((await postH2(session, { room: 'one', text: `m${i}` })).status, 202)
  await waitUntil(() => (dataEvents(events).length === 3 && dataEvents(wsEvents).length === 3 ? true : undefined), 5000, 'three events on both')
  t.same(dataEvents(events).map((e) => e.data.text), ['m0', 'm1', 'm2'])
  t.same(dataEvents(wsEvents).map((e) => e.data.text), ['m0', 'm1', 'm2'])

  const head = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const r = https.request(`${server.https}/messages?room=one`, { method: 'HEAD', ca: cert.cert }, resolve)
    r.on('error', reject)
    r.end()
  })
  t.equal(head.statusCode, 200)
  t.equal(head.headers['content-type'], 'text/event-stream; charset=utf-8')
  head.resume()
  await new Promise((resolve) => head.on('end', resolve))
  t.pass('HEAD over HTTP/1.1 ends')
})

t.test('HEAD over HTTP/2: the stream head, then the end', async (t) => {
  const server = await startTls()
  t.teardown(() => server.close())
  const session = connectH2(t, server.https)
  const req = session.request({ ':method': 'HEAD', ':path': '/v1/competitions' })
  const head = await new Promise<http2.IncomingHttpHeaders>((resolve) => req.on('response', resolve))
  t.equal(head[':status'], 200)
  t.equal(head['content-type'], 'text/event-stream; charset=utf-8')
  let bytes = 0
  req.on('data', (d: Buffer) => (bytes += d.length))
  await new Promise((resolve) => req.on('end', resolve))
  t.equal(bytes, 0, 'no body')
  t.equal(server.app.hub.stats.slowDisconnects, 0)
})

t.test('slow client over HTTP/2: the stream that stops reading is cut (with its end event), its connection and the other stream go on', async (t) => {
  const server = await startTls({ streams: { maxBufferedBytes: 64 * 1024, heartbeatSeconds: 0.5 } })
  t.teardown(() => server.close())
  const session = connectH2(t, server.https)
  const slow = openSseH2(session, '/messages?room=slow&unnamed=1')
  const fast = openSseH2(session, '/messages?room=slow')
  await Promise.all([slow.waitFor(isLive, 10_000, 'live'), fast.waitFor(isLive, 10_000, 'live')])
  slow.pause()

  const text = 'x'.repeat(9000)
  let n = 0
  // HTTP/2 flow control lets 64 KiB out to a stream that is not read; past that, the server's
  // queue for that stream grows until the slow-client rule cuts it.
  while (server.app.hub.stats.slowDisconnects === 0 && n < 400) {
    const res = await postH2(session, { room: 'slow', text })
    if (res.status !== 202) throw new Error(`POST answered ${res.status}`)
    n++
  }
  t.equal(server.app.hub.stats.slowDisconnects, 1, `the stopped stream was cut after ${n} posts of 9000 characters`)
  slow.resume()
  await slow.waitFor((e) => e.some((x) => x.type === 'end'), 10_000, 'the end event')
  const end = slow.events.find((e) => e.type === 'end')!
  t.match(end, { type: 'end', data: { reason: 'slow', reconnect: true, freshToken: false, message: 'client too slow: reconnect with lastEventId' }, sseEvent: undefined })
  t.equal(end.id, dataEvents(slow.events).at(-1)!.id, 'its id is the last event the stream delivered')
  await slow.ended

  const after = await postH2(session, { room: 'slow', text: 'after' })
  t.equal(after.status, 202, 'the connection still serves requests')
  await fast.waitFor((e) => e.some((x) => x.id === after.body.id), 5000, 'the post after the cut')
  t.equal(dataEvents(fast.events).length, n + 1, 'the stream that reads got every event')
})

t.test('shutdown over HTTP/2: each stream gets the end event, then the connection closes', async (t) => {
  const server = await startTls()
  const session = connectH2(t, server.https)
  const streams = [openSseH2(session, '/messages?room=s&unnamed=1'), openSseH2(session, '/v1/competitions')]
  await Promise.all(streams.map((s) => s.waitFor(isLive, 10_000, 'live')))
  await server.close()
  for (const s of streams) {
    await s.ended
    t.match(s.events.at(-1), { type: 'end', data: { reason: 'shutdown', reconnect: true, message: 'server restarting: reconnect with lastEventId' } })
  }
  t.equal(streams[0].events.at(-1)!.sseEvent, undefined, '?unnamed=1: no event: line')
  t.equal(streams[1].events.at(-1)!.sseEvent, 'end')
})

t.test('HTTP/1.1 on the TLS port keeps the receive deadline: headers that never finish are cut', async (t) => {
  const server = await startTls({ requestTimeoutSeconds: 1 })
  t.teardown(() => server.close())
  const socket = tls.connect({ host: '127.0.0.1', port: server.port, ca: cert.cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
  t.teardown(() => socket.destroy())
  await new Promise((resolve) => socket.once('secureConnect', resolve))
  socket.write('GET /health HTTP/1.1\r\nhost: localhost\r\nx-slow: ')
  let answer = ''
  socket.setEncoding('utf8').on('data', (d: string) => (answer += d))
  const t0 = Date.now()
  await new Promise((resolve) => socket.once('close', resolve))
  t.ok(Date.now() - t0 < 10_000, `closed after ${Date.now() - t0} ms (requestTimeoutSeconds: 1)`)
  t.match(answer, /^HTTP\/1\.1 408/, 'with a 408')
})
