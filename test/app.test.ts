import { STATUS_CODES } from 'node:http'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import t from 'tap'
import { isLive, openSse, openWs } from './helpers/clients.js'
import { waitUntil } from './helpers/wait.js'
import { freshCollection, ownFerretDb, TEST_DATABASE } from './helpers/mongo.js'
import { startServer, type TestServer } from './helpers/server.js'

/** A log destination for one test server: its JSON lines, parsed. */
function captureLog() {
  const lines: Record<string, any>[] = []
  return { lines, text: () => JSON.stringify(lines), stream: { write: (line: string) => void lines.push(JSON.parse(line)) } }
}

t.test('a 5xx tells the client a request id, not internals; the log has the details under that id; a 4xx keeps its message and logs no stack', async (t) => {
  // Its own FerretDB, stopped under the running server: the one other test files share stays up.
  const fdb = await ownFerretDb()
  const log = captureLog()
  let server: TestServer | undefined
  t.teardown(async () => {
    await server?.close()
    await fdb.destroy()
  })
  server = await startServer(
    { logLevel: 'info', store: { type: 'mongodb', mongodb: { url: fdb.url, database: TEST_DATABASE, collection: freshCollection('errors') } } },
    { logStream: log.stream },
  )
  t.equal((await server.post({ text: 'stored', room: 'r' })).status, 202)

  const big = await server.post({ text: 'x'.repeat(server.config.bodyLimit), room: 'r' })
  t.same(big.body, { statusCode: 413, error: 'Payload Too Large', message: big.body.message }, '4xx: the one error shape')
  t.match(big.body.message, /body/i, '4xx: the message is kept')
  const refused = log.lines.filter((l) => l.statusCode === 413 || l.res?.statusCode === 413)
  t.ok(refused.length > 0, '4xx: logged')
  t.notMatch(JSON.stringify(refused), /"stack"/, '4xx: no stack trace in the log')
  t.ok(refused.every((l) => l.level <= 30), '4xx: logged at info or below')

  await fdb.stop(true)
  const failed = await server.post({ text: 'not stored', room: 'r' })
  t.ok(failed.status >= 500 && failed.status <= 599, `5xx (${failed.status})`)
  t.same(Object.keys(failed.body).sort(), ['error', 'message', 'requestId', 'statusCode'], '5xx: the error shape and the request id')
  t.match(failed.body, {
    statusCode: failed.status,
    error: STATUS_CODES[failed.status],
    // A store that is down is said plainly (with whether the event was stored); anything else is
    // generic. A stopped server races the write's deadline against the driver's server selection
    // (the same 5 s): "not stored" when selection gives up first, "may have been stored" otherwise.
    message: new RegExp(`^(internal error \\(request id ${failed.body.requestId}\\); see the server log|the store is unavailable; the event was not stored: retry later|the store did not confirm the write, so the event may have been stored: retry with the same Idempotency-Key header to store it exactly once)$`),
    requestId: /^req-/,
  })
  t.notMatch(JSON.stringify(failed.body), /\.go:|ECONN|127\.0\.0\.1:\d+|Mongo|Error:/, '5xx: no internals in the body')
  const logged = log.lines.find((l) => l.reqId === failed.body.requestId && l.level === 50)
  t.ok(logged, '5xx: logged at error level under the request id')
  t.match(logged?.err, { message: /./, stack: /./ }, '5xx: the log has the details')

  const ready = await fetch(`${server.url}/ready`)
  t.equal(ready.status, 503, '/ready: 503 while the store is down')
  const body = (await ready.json()) as { store: string }
  t.ok(typeof body.store === 'string' && body.store.length > 0 && body.store.length <= 200, `/ready: a short reason for the operator (${JSON.stringify(body.store)})`)
})

t.test('request logs hide credentials in the query string, the authorization header and cookies', async (t) => {
  const log = captureLog()
  const server = await startServer({ logLevel: 'debug' }, { logStream: log.stream })
  t.teardown(() => server.close())
  const secret = { authorization: 'Bearer hunter2-header', cookie: 'session=hunter2-cookie' }
  const sse = openSse(`${server.url}/messages?room=r&lastEventId=0`, secret)
  await sse.waitFor(isLive)
  sse.close()
  // A token in the query (private streams) is logged hidden, as is one in a parameter a stream does not take.
  const withToken = openSse(`${server.url}/messages?room=r&access_token=hunter2-query`, secret)
  await withToken.waitFor(isLive)
  withToken.close()
  // The server reads a percent-encoded name as the name: redaction judges the decoded name too.
  const encoded = openSse(`${server.url}/messages?room=r&access_toke%6E=hunter2-encoded`, secret)
  await encoded.waitFor(isLive)
  encoded.close()
  t.equal(await openSse(`${server.url}/messages?room=r&token=hunter2-refused`, secret).status, 400)
  t.equal((await fetch(`${server.url}/nope?Token=hunter2-404&page=2`, { headers: secret })).status, 404)
  t.equal((await server.post({ text: 'x', room: 'r' }, { ...secret })).status, 202)
  const urls = log.lines.map((l) => (l.req?.url ?? l.url) as string | undefined).filter((u) => u !== undefined)
  t.ok(urls.includes('/messages?room=r&lastEventId=0'), 'the stream request is logged (at debug)')
  t.ok(urls.includes('/messages?room=r&access_token=[redacted]'), 'the stream request with a token is logged, its token hidden')
  t.ok(urls.includes('/messages?room=r&access_toke%6E=[redacted]'), 'a percent-encoded token name is hidden too')
  t.ok(urls.includes('/messages?room=r&token=[redacted]'), 'the refused stream request is logged, its token hidden')
  t.ok(urls.includes('/nope?Token=[redacted]&page=2'), 'other parameters stay visible')
  t.notMatch(log.text(), /hunter2/, 'no credential in the log')
})

t.test('logs at info: lifecycle, posts and refusals (without stacks); streams, /health, /ready and /metrics only at debug', async (t) => {
  const run = async (logLevel: string) => {
    const log = captureLog()
    const server = await startServer({ logLevel }, { logStream: log.stream })
    const sse = openSse(`${server.url}/v1/competitions`)
    const ws = openWs(`${server.wsUrl}/messages?room=r`)
    await Promise.all([sse.waitFor(isLive), ws.waitFor(isLive)])
    for (const path of ['/health', '/ready', '/metrics']) t.equal((await fetch(server.url + path)).status, 200, `${logLevel}: ${path}`)
    t.equal((await server.post({ text: 'x', room: 'r' })).status, 202)
    t.equal((await fetch(`${server.url}/messages?rom=r`)).status, 400)
    t.equal((await server.post({ text: 'x'.repeat(server.config.bodyLimit), room: 'r' })).status, 413)
    t.equal((await fetch(`${server.url}/nope`)).status, 404)
    sse.close()
    ws.close()
    await server.close()
    return log.lines
  }
  /** The per-request lines ("incoming request", "request completed") of GET requests to `path`, by request id. */
  const requestLines = (lines: Record<string, any>[], path: RegExp) => {
    const ids = new Set(lines.filter((l) => l.msg === 'incoming request' && l.req.method === 'GET' && path.test(l.req.url)).map((l) => l.reqId))
    return lines.filter((l) => ids.has(l.reqId) && (l.msg === 'incoming request' || l.msg === 'request completed'))
  }
  const quiet = /^\/(health|ready|metrics|v1\/competitions|messages\?room=r$)/

  const info = await run('info')
  t.ok(info.some((l) => l.level === 30 && /^Server listening at /.test(l.msg)), 'info: the server says where it listens')
  t.same(info.filter((l) => l.req !== undefined && l.req.method === 'GET' && quiet.test(l.req.url)), [], 'info: no per-request line for streams, /health, /ready, /metrics')
  const posts = info.filter((l) => l.msg === 'request completed' && l.req?.method === 'POST')
  t.equal(posts.length, 1, 'info: a stored POST /messages is logged once')
  t.match(posts[0], { level: 30, req: { method: 'POST', url: '/messages' }, res: { statusCode: 202 } }, 'info: at info, with the path and the status')
  const perRequest = new Map<string, number>()
  for (const l of info) if (l.reqId !== undefined) perRequest.set(l.reqId, (perRequest.get(l.reqId) ?? 0) + 1)
  t.same([...perRequest].filter(([, n]) => n > 1), [], 'info: at most one line per request (a refused one: its refusal)')
  const refused = info.filter((l) => l.msg === 'request refused')
  t.same(refused.map((l) => [l.level, l.statusCode, l.method, l.url]), [
    [30, 400, 'GET', '/messages?rom=r'],
    [30, 413, 'POST', '/messages'],
    [30, 404, 'GET', '/nope'],
  ], 'info: each refusal once, with its path')
  t.match(refused[0].reason, /^unknown query parameter "rom"/, 'with the reason the client got')
  t.notMatch(JSON.stringify(info), /"stack"|"err"/, 'no stack trace and no error object for a client error')
  t.ok(info.every((l) => l.level >= 30), 'nothing below info')

  const debug = await run('debug')
  const streamLines = requestLines(debug, quiet)
  for (const path of ['/health', '/ready', '/metrics', '/v1/competitions', '/messages?room=r']) {
    const lines = streamLines.filter((l) => l.msg === 'incoming request' && l.req.url === path)
    t.ok(lines.length === 1 && lines[0].level === 20, `debug: ${path} is logged at debug`)
  }
})

/**
 * A raw client that sends `head`, then `body` one byte every `everyMs`; resolves when the server
 * closes the connection (or after 15 s, when the client gives up): what it answered, how many body
 * bytes went out, and how long it took.
 */
function trickle(port: number, head: string, body: string, everyMs: number): Promise<{ answer: string; sent: number; ms: number }> {
  return new Promise((resolve) => {
    const started = performance.now()
    const socket = net.connect(port, '127.0.0.1')
    const giveUp = setTimeout(() => socket.destroy(), 15_000)
    let answer = ''
    let sent = 0
    let timer: NodeJS.Timeout | undefined
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => (answer += d))
    socket.on('error', () => {})
    socket.on('close', () => {
      clearInterval(timer)
      clearTimeout(giveUp)
      resolve({ answer, sent, ms: performance.now() - started })
    })
    socket.write(head, () => {
      timer = setInterval(() => {
        if (sent < body.length && socket.writable) socket.write(body[sent++])
      }, everyMs)
    })
  })
}

t.test('a request that trickles in is cut after requestTimeoutSeconds; the server keeps serving others', async (t) => {
  const server = await startServer({ requestTimeoutSeconds: 1 })
  t.teardown(() => server.close())
  const port = Number(new URL(server.url).port)
  // 1 byte per 200 ms: 100 bytes of body take 20 s, the headers over 20 s.
  const body = JSON.stringify({ text: 'x'.repeat(78), room: 'r' })
  const head = `GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ${'y'.repeat(80)}\r\n\r\n`
  const slowBody = trickle(port, `POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, body, 200)
  const slowHead = trickle(port, '', head, 200)
  t.equal((await fetch(`${server.url}/health`)).status, 200, 'others are served meanwhile')
  for (const [what, slow, total] of [['a body', await slowBody, body.length], ['headers', await slowHead, head.length]] as const) {
    t.ok(slow.sent < 60, `${what}: cut after ${slow.sent} of ${total} bytes, ${Math.round(slow.ms)} ms`)
    t.ok(slow.answer === '' || /^HTTP\/1\.1 408 /.test(slow.answer), `${what}: answered 408 or closed (${JSON.stringify(slow.answer.slice(0, 40))})`)
  }
  t.same(await server.app.store.read({ kind: 'room', room: null }, 0, 10), [], 'nothing stored')
  t.equal((await server.post({ text: 'after', room: 'r' })).status, 202, 'still serving')
})

t.test('requestTimeoutSeconds does not cut streams: SSE and WebSocket clients stay open past it and receive events', async (t) => {
  const server = await startServer({ requestTimeoutSeconds: 1 })
  t.teardown(() => server.close())
  const clients = [openSse(`${server.url}/messages?room=long`), openWs(`${server.wsUrl}/messages?room=long`)]
  t.teardown(() => clients.forEach((c) => c.close()))
  await Promise.all(clients.map((c) => c.waitFor(isLive)))
  // Past the timeout and several of Node's connection checks.
  await new Promise((r) => setTimeout(r, 2500))
  const posted = await server.post({ text: 'later', room: 'long' })
  t.equal(posted.status, 202)
  await Promise.all(clients.map((c) => c.waitFor((es) => es.some((e) => e.id === posted.body.id), 5000, 'the event posted after the timeout')))
  t.pass('both streams received it')
})

t.test('tailcast_tail_lag_seconds counts from the store accepting the event, not from its own time', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`${server.url}/metrics`)).text()
    const line = text.split('\n').find((l) => l.startsWith(`${name} `))
    return line === undefined ? NaN : Number(line.split(' ')[1])
  }
  // A client's clock, an upstream's or a replayed event: the time an event carries can be any age.
  t.equal((await server.post({ type: 'LapCompleted', room: 'r', time: '2001-01-01T00:00:00.000Z', data: { lap: 1 } })).status, 202)
  await waitUntil(async () => ((await metric('tailcast_events_ingested_total')) >= 1 ? true : undefined), 10_000, 'the event reaches the hub')
  const lag = await metric('tailcast_tail_lag_seconds')
  t.ok(lag >= 0 && lag < 30, `lag ${lag} s: seconds at most, not the 25 years since the event's time`)
})

t.test("README's metrics table has every tailcast_ metric the server exposes, and only those", async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const exposed = [...text.matchAll(/^# HELP (tailcast_\w+) /gm)].map((m) => m[1])
  t.ok(exposed.length >= 10, `${exposed.length} metrics`)
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const table = readme.slice(readme.indexOf('### Metrics\n'), readme.indexOf('\n#', readme.indexOf('### Metrics\n') + 5))
  const documented = [...table.matchAll(/^\| `(tailcast_\w+)[{`]/gm)].map((m) => m[1])
  for (const name of exposed) t.ok(documented.includes(name), `README documents ${name}`)
  const sources = readFileSync(new URL('../src/plugins/metrics.ts', import.meta.url), 'utf8')
  for (const name of documented) t.ok(sources.includes(`'${name}'`), `${name} exists`)
})
