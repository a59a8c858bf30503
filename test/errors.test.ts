import { STATUS_CODES } from 'node:http'
import net from 'node:net'
import t from 'tap'
import type { NewEvent, StoredEvent } from '../src/event.js'
import { MemoryEventStore } from '../src/store/memory-store.js'
import { ownNatsServer, natsOverrides } from './helpers/nats.js'
import { freePort, startServer } from './helpers/server.js'
import { waitUntil } from './helpers/wait.js'

// One error shape everywhere: routes, schema validation, Fastify's own errors, 404/405, and what
// Node's HTTP parser refuses. Each case: the request, the status, and what the message must say.

/** A raw HTTP exchange: sends `request` (and keeps the connection open), resolves with the answer once the server closes or the body is complete. */
function raw(port: number, request: string, timeoutMs = 10_000): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let text = ''
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no answer within ${timeoutMs} ms; read ${JSON.stringify(text.slice(0, 200))}`))
    }, timeoutMs)
    const done = (): void => {
      clearTimeout(timer)
      socket.destroy()
      const [head, ...rest] = text.split('\r\n\r\n')
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), headers: head, body: rest.join('\r\n\r\n') })
    }
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => {
      text += d
      const length = /\r\ncontent-length: (\d+)/i.exec(text)
      const at = text.indexOf('\r\n\r\n')
      if (length !== null && at >= 0 && Buffer.byteLength(text.slice(at + 4)) >= Number(length[1])) done()
    })
    socket.on('close', done)
    socket.on('error', () => {})
    socket.write(request)
  })
}

interface Case {
  name: string
  method?: string
  path: string
  headers?: Record<string, string>
  body?: string
  status: number
  message: RegExp
  /** Extra response header to check. */
  header?: [string, RegExp]
}

const json = { 'content-type': 'application/json' }
const ALL = 'this path takes: room, lastEventId, unnamed, access_token'
const COMPETITIONS = 'this path takes: lastEventId, unnamed, access_token'
const RANGE = 'must be a whole number from 0 to 9007199254740991 \\(the id of the last event received; 0: from the start\\)'

const CASES: Case[] = [
  { name: 'an unknown path', path: '/nope', status: 404, message: /^nothing is served at \/nope$/ },
  { name: 'an unknown path with a token in its query', path: '/nope?token=hunter2', status: 404, message: /^nothing is served at \/nope$/ },
  { name: 'a path below a stream', path: '/v1/competitions/a/b', status: 404, message: /^nothing is served at \/v1\/competitions\/a\/b$/ },
  { name: 'DELETE /messages', method: 'DELETE', path: '/messages', status: 405, message: /^DELETE is not allowed on \/messages: use GET or HEAD or POST$/, header: ['allow', /^GET, HEAD, POST$/] },
  { name: 'PUT on a stream', method: 'PUT', path: '/v1/competitions', status: 405, message: /^PUT is not allowed on \/v1\/competitions: use GET or HEAD$/, header: ['allow', /^GET, HEAD$/] },
  { name: 'POST on a competition stream', method: 'POST', path: '/v1/competitions/c1', status: 405, message: /^POST is not allowed on \/v1\/competitions\/c1: use GET or HEAD$/ },
  { name: 'POST /health', method: 'POST', path: '/health', status: 405, message: /^POST is not allowed on \/health: use GET or HEAD$/ },
  { name: 'a broken percent-encoding', path: '/v1/competitions/%E0%A4%A', status: 400, message: /^the URL is not valid: "%" must start a percent-encoded UTF-8 sequence/ },
  { name: 'a path segment past 512 characters', path: `/v1/competitions/${'x'.repeat(600)}`, status: 414, message: /^a path segment is longer than 512 characters$/ },
  { name: 'a competition id past 128 characters', path: `/v1/competitions/${'x'.repeat(200)}`, status: 400, message: /^the competition id must be 1-128 letters, digits or "_.:-", starting with a letter or digit, got "x{70,}…"$/ },
  { name: 'a typo in the query (?rom=)', path: '/messages?rom=a', status: 400, message: new RegExp(`^unknown query parameter "rom": ${ALL}$`) },
  { name: 'an empty room (?room=)', path: '/messages?room=', status: 400, message: new RegExp(`^query parameter "room" is empty: give it a value or leave it out \\(${ALL}\\)$`) },
  { name: 'an empty lastEventId', path: '/messages?lastEventId=', status: 400, message: new RegExp(`^query parameter "lastEventId" is empty: give it a value or leave it out \\(${ALL}\\)$`) },
  { name: 'a room twice', path: '/messages?room=a&room=b', status: 400, message: /^query parameter "room" is given 2 times: give it once$/ },
  { name: 'a room with a space', path: '/messages?room=a%20b', status: 400, message: /^room must be 1-128 letters, digits or "_.:-", starting with a letter or digit \(one room per stream; leave it out to follow every room\), got "a b"$/ },
  { name: 'a room on the competitions stream', path: '/v1/competitions?room=a', status: 400, message: new RegExp(`^unknown query parameter "room": ${COMPETITIONS}$`) },
  { name: 'an unknown parameter on a competition', path: '/v1/competitions/c1?token=hunter2', status: 400, message: new RegExp(`^unknown query parameter "token": ${COMPETITIONS}$`) },
  { name: 'unnamed=yes', path: '/v1/competitions?unnamed=yes', status: 400, message: /^unnamed must be 1 or true .*, or 0 or false, got "yes"$/ },
  { name: 'a resume id that is not a number', path: '/v1/competitions?lastEventId=abc', status: 400, message: new RegExp(`^lastEventId ${RANGE}, got "abc"$`) },
  { name: 'a resume id out of range', path: '/v1/competitions?lastEventId=9007199254740992', status: 400, message: new RegExp(`^lastEventId ${RANGE}, got "9007199254740992"$`) },
  { name: 'a Last-Event-ID header out of range', path: '/messages', headers: { 'last-event-id': '99999999999999999' }, status: 400, message: new RegExp(`^the Last-Event-ID header ${RANGE}, got "99999999999999999"$`) },
  { name: 'a query on POST /messages', method: 'POST', path: '/messages?room=r', headers: json, body: '{"text":"x","room":"r"}', status: 400, message: /^unknown query parameter "room": this path takes no query parameters$/ },
  { name: 'text/plain', method: 'POST', path: '/messages', headers: { 'content-type': 'text/plain' }, body: '{"text":"x","room":"r"}', status: 415, message: /^send the event as JSON with content-type: application\/json \(got content-type "text\/plain"\)$/ },
  { name: 'a __proto__ key', method: 'POST', path: '/messages', headers: json, body: '{"__proto__":{"admin":true},"text":"x","room":"r"}', status: 400, message: /^key "__proto__" is not allowed \(prototype pollution\)$/ },
  { name: 'an empty text', method: 'POST', path: '/messages', headers: json, body: '{"text":"","room":"r"}', status: 400, message: /^text must be at least 1 character$/ },
  { name: 'malformed JSON', method: 'POST', path: '/messages', headers: json, body: '{"text":', status: 400, message: /^the payload is not valid JSON: / },
  { name: 'a body over bodyLimit', method: 'POST', path: '/messages', headers: json, body: JSON.stringify({ text: 'x'.repeat(2000), room: 'r' }), status: 413, message: /^the body is larger than 1024 bytes \(bodyLimit\): nothing was stored$/ },
]

/** A store whose writes fail with internals in the message, as a driver's would. */
class FailingStore extends MemoryEventStore {
  override async append(_events: NewEvent[], _ids?: number[]): Promise<StoredEvent[]> {
    throw new Error('connect ECONNREFUSED 10.0.0.5:27017 at Connection.onError (driver.js:42)')
  }
}

t.test('every error answer has the one shape {statusCode, error, message}, no code, and a message that says what to change', async (t) => {
  const s = await startServer({ bodyLimit: 1024 })
  t.teardown(() => s.close())
  const port = Number(new URL(s.url).port)
  for (const c of CASES) {
    const res = await fetch(s.url + c.path, { method: c.method ?? 'GET', headers: { accept: 'text/event-stream', ...c.headers }, body: c.body })
    t.equal(res.status, c.status, `${c.name}: ${c.status}`)
    t.match(res.headers.get('content-type'), /^application\/json/, `${c.name}: JSON`)
    if (c.header) t.match(res.headers.get(c.header[0]), c.header[1], `${c.name}: ${c.header[0]} header`)
    const body = (await res.json()) as Record<string, unknown>
    t.same(Object.keys(body).sort(), ['error', 'message', 'statusCode'], `${c.name}: the one error shape, no code`)
    t.match(body, { statusCode: c.status, error: STATUS_CODES[c.status], message: c.message }, `${c.name}: ${String(body.message)}`)
    t.notMatch(String(body.message), /hunter2|FST_|must NOT|must match pattern/, `${c.name}: no token, no Fastify or Ajv jargon`)
  }

  // What Node's HTTP parser refuses before Fastify sees the request.
  const parser: [string, string, number, RegExp][] = [
    ['headers over 16 KiB', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'y'.repeat(20_000)}\r\n\r\n`, 431, /^the request headers are too large$/],
    ['not HTTP', 'HELLO THERE\r\n\r\n', 400, /^the request is not valid HTTP\/1\.1$/],
  ]
  for (const [name, request, status, message] of parser) {
    const res = await raw(port, request)
    t.equal(res.status, status, `${name}: ${status}`)
    const body = JSON.parse(res.body) as Record<string, unknown>
    t.same(Object.keys(body).sort(), ['error', 'message', 'statusCode'], `${name}: the one error shape`)
    t.match(body, { statusCode: status, error: STATUS_CODES[status], message }, `${name}: ${String(body.message)}`)
  }
  t.equal((await fetch(`${s.url}/health`)).status, 200, 'still serving')
  t.same(await s.app.store.read({ kind: 'room', room: null }, 0, 10), [], 'nothing stored')
})

t.test('408: a request not complete within requestTimeoutSeconds is answered in the one shape, saying the limit', async (t) => {
  const s = await startServer({ requestTimeoutSeconds: 1 })
  t.teardown(() => s.close())
  // Headers never finished: Node checks every 250 ms here (a quarter of the timeout).
  const res = await raw(Number(new URL(s.url).port), 'GET /health HTTP/1.1\r\nHost: x\r\n')
  t.equal(res.status, 408)
  t.same(JSON.parse(res.body), { statusCode: 408, error: STATUS_CODES[408], message: 'the request (headers and body) was not complete within 1 s (requestTimeoutSeconds)' })
})

t.test('5xx: a generic message with the request id; the details only in the log', async (t) => {
  const store = new FailingStore(100)
  const lines: Record<string, any>[] = []
  const s = await startServer({ logLevel: 'info' }, { store, logStream: { write: (l: string) => void lines.push(JSON.parse(l)) } })
  t.teardown(async () => {
    await s.close()
    await store.close()
  })
  const r = await s.post({ text: 'x', room: 'r' })
  t.equal(r.status, 500)
  t.same(Object.keys(r.body).sort(), ['error', 'message', 'requestId', 'statusCode'], 'the error shape and the request id')
  t.same(r.body, { statusCode: 500, error: STATUS_CODES[500], message: `internal error (request id ${r.body.requestId}); see the server log`, requestId: r.body.requestId })
  t.notMatch(JSON.stringify(r.body), /ECONNREFUSED|10\.0\.0\.5|driver\.js/, 'no internals in the body')
  const logged = lines.find((l) => l.reqId === r.body.requestId && l.level === 50)
  t.match(logged, { msg: 'request failed', err: { message: /ECONNREFUSED/, stack: /driver\.js/ } }, 'the log has the details under the request id')
})

/** What Ajv says on its own; a message meant for people never reads like this. */
const AJV_WORDS = /must have required property|must match pattern|must NOT have|must be (string|integer|number|object|array|boolean)|must be equal to|(parameter|field) ""|^\/|undefined/

t.test('every route\'s schema errors are written for people: unknown, missing, empty, repeated and invalid parameters', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const routes = s.app.routeTable.schemas.filter((r) => (r.methods.includes('GET') || r.methods.includes('POST')) && (r.schema.querystring !== undefined || r.schema.params !== undefined))
  t.ok(routes.length >= 5, `routes with schemas: ${routes.map((r) => `${r.methods.join("/")} ${r.url}`).join(", ")}`)
  type Props = Record<string, { pattern?: string; maxLength?: number; minLength?: number }>
  let checked = 0
  for (const route of routes) {
    const method = route.methods.includes('GET') ? 'GET' : 'POST'
    const qs = route.schema.querystring as { properties?: Props; required?: string[] } | undefined
    const params = route.schema.params as { properties?: Props } | undefined
    // A valid path: each path parameter a valid name.
    const path = route.url.replace(/:(\w+)/g, 'c-1')
    const props = qs?.properties ?? {}
    const required = qs?.required ?? []
    const base = required.map((k) => `${k}=${encodeURIComponent(k === 'stream' ? '/messages' : 'x')}`)
    const q = (extra: string[]): string => `${path}?${[...base.filter((b) => !extra.some((e) => e.startsWith(b.split('=')[0] + '='))), ...extra].join('&')}`
    const cases: [string, string, RegExp][] = [[`unknown parameter`, q(['zz=1']), /^unknown query parameter "zz": this path (takes: |takes no query parameters)/]]
    for (const k of required) cases.push([`${k} missing`, `${path}?${base.filter((b) => !b.startsWith(k + '=')).join('&')}`, new RegExp(`^query parameter "${k}" is missing`)])
    for (const [k, p] of Object.entries(props)) {
      cases.push([`${k} empty`, q([`${k}=`]), new RegExp(`^query parameter "${k}" is empty: give it a value or leave it out`)])
      cases.push([`${k} twice`, q([`${k}=a1`, `${k}=b1`]), new RegExp(`^query parameter "${k}" is given 2 times: give it once`)])
      if (p.pattern !== undefined) cases.push([`${k} not matching its rule`, q([`${k}=${encodeURIComponent('!bad value')}`]), /got "!bad value"/])
      if (p.maxLength !== undefined) cases.push([`${k} too long`, q([`${k}=${'y'.repeat(p.maxLength + 1)}`]), /got "yyyy/])
    }
    for (const [k, p] of Object.entries(params?.properties ?? {})) {
      if (p.pattern !== undefined) cases.push([`path parameter ${k} not matching its rule`, route.url.replace(`:${k}`, encodeURIComponent('!bad')), /got "!bad"/])
    }
    for (const [what, url, message] of cases) {
      const res = await fetch(`${s.url}${url}`, {
        method,
        signal: AbortSignal.timeout(10_000),
        ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'x', room: 'r' }) } : {}),
      })
      const body = (await res.json()) as { statusCode: number; error: string; message: string }
      const name = `${method} ${route.url}: ${what}`
      t.equal(res.status, 400, `${name}: 400`)
      t.match(body, { statusCode: 400, error: 'Bad Request', message }, `${name}: ${body.message}`)
      t.notMatch(body.message, AJV_WORDS, `${name}: not Ajv's own words`)
      checked++
    }
  }
  t.ok(checked >= 30, `${checked} schema errors read`)
  t.same(await s.app.store.read({ kind: 'room', room: null }, 0, 10), [], 'nothing stored by any of them')
})

t.test('GET /v1/presence without stream says which parameter is missing and what it takes', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const res = await fetch(`${s.url}/v1/presence`)
  t.equal(res.status, 400)
  t.same(await res.json(), {
    statusCode: 400,
    error: 'Bad Request',
    message: 'query parameter "stream" is missing: stream must be a stream path, e.g. /messages?room=vip or /v1/competitions/c-42',
  })
})

t.test('NATS down: a POST names NATS, never the store; the log says the same', async (t) => {
  const nats = await ownNatsServer()
  const lines: Record<string, any>[] = []
  const s = await startServer({ logLevel: 'info', ...natsOverrides(nats.url) }, { logStream: { write: (l: string) => void lines.push(JSON.parse(l)) } })
  t.teardown(async () => {
    await s.close()
    await nats.dispose()
  })
  t.equal((await s.post({ text: 'before', room: 'r' })).status, 202, 'posting through NATS')
  await nats.stop()
  const r = await s.post({ text: 'during', room: 'r' })
  t.equal(r.status, 503)
  t.match(r.body.message, /^NATS (is unavailable; the event was not stored: retry later|did not confirm the write, so the event may have been stored: retry with the same Idempotency-Key)/, r.body.message)
  t.notMatch(r.body.message, /store is|store did/, 'not "the store"')
  t.ok(lines.some((l) => l.msg === 'POST /messages: NATS is unavailable'), 'the log names NATS')
  // NATS back: posting works again (and the client's connection has something to end on close).
  await nats.start()
  await waitUntil(async () => ((await s.post({ text: 'after', room: 'r' })).status === 202 ? true : undefined), 30_000, 'a POST through the restarted NATS', 500)
})

t.test('upstream down: stream requests and /ready name the upstream, its setting and the reason', async (t) => {
  const closed = await freePort()
  const s = await startServer({ upstream: { url: `http://127.0.0.1:${closed}/messages?room=a`, catchUpTimeoutMs: 100, reconnectMaxMs: 1000 } })
  t.teardown(() => s.close())
  const named = new RegExp(`not yet following the upstream http://127\\.0\\.0\\.1:${closed}/messages\\?room=a \\(upstream\\.url, env TAILCAST_UPSTREAM\\): .*ECONNREFUSED`)
  const ready = await waitUntil(async () => {
    const res = await fetch(`${s.url}/ready`)
    const body = (await res.json()) as { upstream?: string }
    return res.status === 503 && /ECONNREFUSED/.test(body.upstream ?? '') ? body : undefined
  }, 15_000, '/ready to name the refused upstream')
  t.match(ready, { status: 'not ready', store: 'ok', upstream: named })
  const res = await fetch(`${s.url}/messages?room=a`, { headers: { accept: 'text/event-stream' } })
  t.equal(res.status, 503)
  const body = (await res.json()) as { message: string }
  t.match(body.message, new RegExp(`^this relay cannot serve streams: ${named.source}`))
  t.notMatch(body.message, /store/, 'not "the store"')
})
