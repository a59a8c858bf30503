import http from 'node:http'
import net from 'node:net'
import t from 'tap'
import { dataEvents, isLive, openSse, openStream, openWs, type Received } from '../helpers/clients.js'
import { startServer, type TestServer } from '../helpers/server.js'

type Transport = 'sse' | 'ws'
const TRANSPORTS: Transport[] = ['sse', 'ws']

const competitionEvent = (competitionId: string, data: Record<string, unknown> = {}, type = 'LapCompleted') => ({
  type,
  competitionId,
  data,
})

/** Posts and returns the assigned id. */
async function post(s: TestServer, body: unknown): Promise<string> {
  const r = await s.post(body)
  if (r.status !== 202) throw new Error(`POST answered ${r.status}: ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

const ids = (events: Received[]) => dataEvents(events).map((e) => e.id)

/** Each stream path, what to post into it, and what must stay out of it. */
const STREAMS = [
  {
    name: '/v1/competitions',
    path: '/v1/competitions',
    inside: (i: number) => competitionEvent(`comp-${i}`, { name: `Race ${i}` }, 'CompetitionActivatedEvent'),
    outside: (i: number) => competitionEvent(`comp-${i}`, { lap: i }),
  },
  {
    name: '/v1/competitions/:id',
    path: '/v1/competitions/c-42',
    inside: (i: number) => competitionEvent('c-42', { lap: i }),
    outside: (i: number) => competitionEvent('c-43', { lap: i }),
  },
  {
    name: '/messages?room=',
    path: '/messages?room=developers',
    inside: (i: number) => ({ text: `hello ${i}`, room: 'developers' }),
    outside: (i: number) => ({ text: `other ${i}`, room: 'ops' }),
  },
]

for (const stream of STREAMS) {
  for (const transport of TRANSPORTS) {
    t.test(`${stream.name} over ${transport}`, async (t) => {
      const s = await startServer()
      t.teardown(() => s.close())
      const stored: string[] = []
      for (let i = 0; i < 5; i++) {
        stored.push(await post(s, stream.inside(i)))
        await post(s, stream.outside(i))
      }

      t.test('replay, then one live, then real-time events', async (t) => {
        const c = openStream(transport, s, stream.path)
        t.teardown(() => c.close())
        await c.waitFor(isLive, 5000, 'live')
        const liveAt = c.events.findIndex((e) => e.type === 'live')
        t.same(ids(c.events.slice(0, liveAt)), stored, 'the live state: this stream only, oldest first')
        t.equal(c.events.filter((e) => e.type === 'live').length, 1, 'one live event')
        const live = c.events[liveAt]
        t.ok(BigInt(live.id) >= BigInt(stored[stored.length - 1]), 'live carries the stream position')
        const fresh = await post(s, stream.inside(99))
        await post(s, stream.outside(99))
        await c.waitFor((es) => es.some((e) => e.id === fresh), 2000, 'the new event')
        t.same(ids(c.events), [...stored, fresh])
        const e = c.events[c.events.length - 1]
        t.match(e, { id: fresh, time: String })
        t.type(e.data, 'object')
        if (transport === 'sse') {
          t.equal(e.sseId, fresh, 'SSE id: field is the event id')
          t.equal(e.sseEvent, e.type, 'SSE event: field is the type')
          t.equal(live.sseEvent, 'live')
        }
        stored.push(fresh)
      })

      t.test('resume from an id in the store: only what follows, then live', async (t) => {
        const c = openStream(transport, s, stream.path, stored[1])
        t.teardown(() => c.close())
        await c.waitFor(isLive, 5000, 'live')
        t.same(ids(c.events), stored.slice(2))
        t.notOk(c.events.some((e) => e.type === 'reset'), 'no reset')
      })

      t.test('resume from the newest id: nothing to replay, then live', async (t) => {
        const c = openStream(transport, s, stream.path, stored[stored.length - 1])
        t.teardown(() => c.close())
        await c.waitFor(isLive, 5000, 'live')
        t.same(c.events.map((e) => e.type), ['live'])
      })

      t.test('resume from an id newer than the newest: reset, full state, live', async (t) => {
        const newer = String(BigInt(stored[stored.length - 1]) + 1_000_000n)
        const c = openStream(transport, s, stream.path, newer)
        t.teardown(() => c.close())
        await c.waitFor(isLive, 5000, 'live')
        t.equal(c.events[0].type, 'reset')
        t.equal(c.events[0].data.lastEventId, newer)
        t.same(ids(c.events), stored, 'the full live state after reset')
        if (transport === 'sse') t.equal(c.events[0].sseId, undefined, 'reset does not move EventSource lastEventId')
      })

      for (const bad of ['abc', '-1', '1e3', '1'.repeat(40), '12.5', '+7', '0x1F']) {
        t.test(`malformed resume id ${JSON.stringify(bad).slice(0, 20)}: 400 JSON before any stream`, async (t) => {
          const c = transport === 'sse' ? openSse(`${s.url}${stream.path}`, { 'last-event-id': bad }) : openWs(`${s.wsUrl}${stream.path}${stream.path.includes('?') ? '&' : '?'}lastEventId=${encodeURIComponent(bad)}`)
          t.equal(await c.status, 400)
          t.match(await c.errorBody, { statusCode: 400, error: 'Bad Request', message: transport === 'sse' ? /^the Last-Event-ID header must be a whole number from 0 to 9007199254740991 / : /^lastEventId must be a whole number from 0 to 9007199254740991 / })
          await c.ended
          t.same(c.events, [])
        })
      }
    })
  }
}

t.test('resume older than the oldest stored event (the ring wrapped): reset, full state, live', async (t) => {
  const s = await startServer({ store: { capacity: 5 }, streams: { historyMaxEvents: 5 } })
  t.teardown(() => s.close())
  const first = await post(s, { text: 'first', room: 'r' })
  const rest: string[] = []
  for (let i = 0; i < 7; i++) rest.push(await post(s, { text: `m${i}`, room: 'r' }))
  for (const transport of TRANSPORTS) {
    const c = openStream(transport, s, '/messages?room=r', first)
    await c.waitFor(isLive, 5000, 'live')
    c.close()
    t.equal(c.events[0].type, 'reset', `${transport}: reset first`)
    t.match(c.events[0].data, { lastEventId: first, reason: /older than the oldest/ })
    t.same(ids(c.events), rest.slice(2), `${transport}: the whole ring after reset`)
  }
})

t.test('an empty store and a resume id (store replaced, e.g. after a restart): reset, then live', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  for (const transport of TRANSPORTS) {
    const c = openStream(transport, s, '/v1/competitions', '1795000000000000')
    await c.waitFor(isLive, 5000, 'live')
    c.close()
    t.same(c.events.map((e) => e.type), ['reset', 'live'], transport)
  }
})

t.test('SSE: Last-Event-ID header wins over the lastEventId query; the query alone works', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const a = await post(s, { text: 'a', room: 'q' })
  const b = await post(s, { text: 'b', room: 'q' })
  const c1 = openSse(`${s.url}/messages?room=q&lastEventId=${a}`)
  await c1.waitFor(isLive)
  c1.close()
  t.same(ids(c1.events), [b], 'query parameter (EventSource polyfills)')
  const c2 = openSse(`${s.url}/messages?room=q&lastEventId=${a}`, { 'last-event-id': b })
  await c2.waitFor(isLive)
  c2.close()
  t.same(ids(c2.events), [], 'the header (sent on reconnect) wins over the stale URL')
  const c3 = openSse(`${s.url}/messages?room=q`, { 'last-event-id': '0' })
  await c3.waitFor(isLive)
  c3.close()
  t.same(ids(c3.events), [a, b], '0 means from the start, without reset')
})

t.test('SSE wire details: headers, retry, heartbeat comments', async (t) => {
  const s = await startServer({ streams: { heartbeatSeconds: 0.05, retryMs: 1234 } })
  t.teardown(() => s.close())
  const raw = await new Promise<{ headers: http.IncomingHttpHeaders; text: string }>((resolve, reject) => {
    const req = http.get(`${s.url}/v1/competitions`, { headers: { origin: 'http://example.test' } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        text += d
        if ((text.match(/: ping/g) ?? []).length >= 2) {
          req.destroy()
          resolve({ headers: res.headers, text })
        }
      })
    })
    req.on('error', reject)
  })
  t.match(raw.headers['content-type'], /^text\/event-stream/)
  t.equal(raw.headers['cache-control'], 'no-cache')
  t.equal(raw.headers['x-accel-buffering'], 'no')
  t.equal(raw.headers['access-control-allow-origin'], '*', 'CORS applies to streams')
  t.ok(raw.text.startsWith('retry: 1234\n\n'), 'retry: first')
  t.match(raw.text, /event: live\n/)
})

t.test('?unnamed=1: SSE records without event: lines (every event reaches onmessage), control events too; the same ids, resume and heartbeats; WebSocket unchanged', async (t) => {
  const s = await startServer({ streams: { heartbeatSeconds: 0.05 } })
  t.teardown(() => s.close())
  const before = [
    await post(s, competitionEvent('c-u', { name: 'Cup' }, 'CompetitionActivatedEvent')),
    await post(s, competitionEvent('c-u', { lap: 1 }, 'LapCompleted')),
    await post(s, competitionEvent('c-u', { home: 1 }, 'ScoreEvent')),
  ]
  const unnamed = openSse(`${s.url}/v1/competitions/c-u?unnamed=1`)
  const named = openSse(`${s.url}/v1/competitions/c-u`)
  const ws = openWs(`${s.wsUrl}/v1/competitions/c-u?unnamed=1`)
  t.teardown(() => [unnamed, named, ws].forEach((c) => c.close()))
  await Promise.all([unnamed, named, ws].map((c) => c.waitFor(isLive, 5000, 'live')))
  const after = [await post(s, competitionEvent('c-u', { lap: 2 }, 'LapCompleted')), await post(s, competitionEvent('c-u', { heat: 3 }, 'HeatStarted'))]
  const all = [...before, ...after]
  for (const c of [unnamed, named, ws]) await c.waitFor((es) => es.some((e) => e.id === after[1]), 5000, 'the events posted after live')
  const types = ['CompetitionActivatedEvent', 'LapCompleted', 'ScoreEvent', 'live', 'LapCompleted', 'HeatStarted']
  t.same(unnamed.events.map((e) => e.type), types, 'every event, of every type, and live in its place')
  t.same(unnamed.events.map((e) => e.sseEvent), types.map(() => undefined), 'no event: line on any record: EventSource hands each to onmessage')
  t.same(ids(unnamed.events), all)
  t.same(dataEvents(unnamed.events).map((e) => e.sseId), all, 'id: lines as without the option')
  const live = unnamed.events[3]
  t.equal(live.sseId, live.id, 'live carries id: (the stream position), so EventSource resumes from there')
  t.same(named.events.map((e) => e.sseEvent), types, 'without the option: event: <type> as before')
  t.same(named.events.map((e) => e.raw), unnamed.events.map((e) => e.raw).map((raw, i) => (types[i] === 'live' ? named.events[i].raw : raw)), 'the same JSON either way')
  t.same(ws.events.map((e) => e.type), types, 'WebSocket: unaffected (the JSON carries the type)')

  // Resume: exact after an id, and reset (without id:) for an id newer than the newest.
  const resumed = openSse(`${s.url}/v1/competitions/c-u?unnamed=1`, { 'last-event-id': before[1] })
  t.teardown(() => resumed.close())
  await resumed.waitFor(isLive, 5000, 'live after a resume')
  t.same(resumed.events.map((e) => [e.type, e.sseEvent]), [['ScoreEvent', undefined], ['LapCompleted', undefined], ['HeatStarted', undefined], ['live', undefined]])
  const newer = String(BigInt(after[1]) + 1_000_000n)
  const reset = openSse(`${s.url}/v1/competitions/c-u?unnamed=true&lastEventId=${newer}`)
  t.teardown(() => reset.close())
  await reset.waitFor(isLive, 5000, 'live after a reset')
  t.match(reset.events[0], { type: 'reset', sseEvent: undefined, sseId: undefined, data: { lastEventId: newer } }, 'reset: unnamed and without id:, told apart by its type')
  t.same(ids(reset.events), all, 'then the full live state')

  // Heartbeat comments are the same in both modes; unnamed=0 is the default (named).
  const raw = await new Promise<string>((resolve, reject) => {
    const req = http.get(`${s.url}/v1/competitions/c-u?unnamed=0&lastEventId=${after[1]}`, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        text += d
        if (/: ping \d+\n\n[\s\S]*: ping \d+\n\n/.test(text)) {
          req.destroy()
          resolve(text)
        }
      })
    })
    req.on('error', reject)
  })
  t.match(raw, /^retry: \d+\n\nid: \d+\nevent: live\ndata: /, 'unnamed=0: named records')
})

t.test('named and unnamed SSE clients of one stream each get their variant of the same event', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const clients = [0, 1, 2, 3].map((i) => openSse(`${s.url}/messages?room=shared${i % 2 === 0 ? '' : '&unnamed=1'}`))
  t.teardown(() => clients.forEach((c) => c.close()))
  await Promise.all(clients.map((c) => c.waitFor(isLive)))
  const id = await post(s, { text: 'to all', room: 'shared' })
  await Promise.all(clients.map((c) => c.waitFor((es) => es.some((e) => e.id === id), 5000, 'the event')))
  t.same(clients.map((c) => c.events[c.events.length - 1].sseEvent), ['message', undefined, 'message', undefined])
})

t.test('WebSocket upgrades check Origin against cors.origins (browsers do not apply CORS to WebSockets); SSE is left to the browser', async (t) => {
  const s = await startServer({ cors: { origins: ['https://good.example'] } })
  t.teardown(() => s.close())
  for (const origin of ['https://evil.example', 'null', 'https://good.example.evil.example']) {
    const ws = openWs(`${s.wsUrl}/messages?room=o`, { origin })
    t.equal(await ws.status, 403, `${origin}: 403 before the upgrade`)
    t.match(await ws.errorBody, { statusCode: 403, error: 'Forbidden', message: /origin/i }, `${origin}: JSON error`)
  }
  t.equal(s.app.hub.connections().size, 0, 'no refused client was attached')
  const good = openWs(`${s.wsUrl}/messages?room=o`, { origin: 'https://good.example' })
  const none = openWs(`${s.wsUrl}/messages?room=o`) // wscat, server-to-server clients: no Origin
  t.teardown(() => (good.close(), none.close()))
  await good.waitFor(isLive, 5000, 'live for an allowed origin')
  await none.waitFor(isLive, 5000, 'live without an Origin')
  // A page on another site may open the SSE stream but cannot read it: no CORS grant for it.
  const sse = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.get(`${s.url}/messages?room=o`, { headers: { origin: 'https://evil.example', accept: 'text/event-stream' } }, (res) => {
      resolve(res)
      req.destroy()
    })
    req.on('error', reject)
  })
  t.equal(sse.statusCode, 200)
  t.equal(sse.headers['access-control-allow-origin'], undefined, 'SSE: no access-control-allow-origin for a foreign origin')

  const open = await startServer({ cors: { origins: ['*'] } })
  t.teardown(() => open.close())
  const any = openWs(`${open.wsUrl}/messages?room=o`, { origin: 'https://evil.example' })
  t.teardown(() => any.close())
  await any.waitFor(isLive, 5000, 'live: * allows every origin')
})

/**
 * Raw HTTP/1.1 on one connection: sends `first`, and once its response head is in, `second`; resolves
 * with everything read until `second`'s response is in (the bytes between the two heads included).
 */
function twoRequests(port: number, first: string, second: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let text = ''
    let sent = false
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no answer to the second request within ${timeoutMs} ms; read: ${JSON.stringify(text.slice(0, 300))}`))
    }, timeoutMs)
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => {
      text += d
      if (!sent && text.includes('\r\n\r\n')) {
        sent = true
        socket.write(second)
      }
      const heads = text.split('\r\n\r\n')
      if (sent && heads.length >= 3 && /"status":"ok"/.test(text)) {
        clearTimeout(timer)
        socket.destroy()
        resolve(text)
      }
    })
    socket.on('error', reject)
    socket.write(first)
  })
}

t.test('HEAD on a stream path: the SSE status and headers, no body, nothing attached; a bad query is still 400', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  await post(s, { text: 'stored', room: 'h' })
  const port = Number(new URL(s.url).port)
  for (const path of ['/messages?room=h', '/messages', '/v1/competitions', '/v1/competitions/c-1']) {
    const text = await twoRequests(port, `HEAD ${path} HTTP/1.1\r\nHost: x\r\nOrigin: http://example.test\r\n\r\n`, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
    const [head, next] = text.split('\r\n\r\n')
    t.match(head, /^HTTP\/1\.1 200 /, `${path}: 200`)
    t.match(head, /\r\ncontent-type: text\/event-stream/i, `${path}: content-type`)
    t.match(head, /\r\ncache-control: no-cache/i, `${path}: cache-control`)
    t.match(head, /\r\nx-accel-buffering: no/i, `${path}: x-accel-buffering`)
    t.match(head, /\r\naccess-control-allow-origin: \*/i, `${path}: CORS`)
    t.notMatch(head, /\r\ncontent-length:/i, `${path}: no content-length (a GET has none either)`)
    t.match(next, /^HTTP\/1\.1 200 /, `${path}: no body: the next bytes on the connection are the next response`)
  }
  // An event now would reach a subscriber attached by a HEAD.
  await post(s, { text: 'after', room: 'h' })
  t.equal(s.app.hub.connections().size, 0, 'no subscriber attached')
  for (const path of ['/messages?room=a%20b', '/v1/competitions?lastEventId=abc']) {
    const res = await fetch(s.url + path, { method: 'HEAD' })
    t.equal(res.status, 400, `HEAD ${path}: 400`)
  }
})

t.test('WebSocket: protocol pings keep the connection; frames sent by clients are ignored', async (t) => {
  const s = await startServer({ streams: { heartbeatSeconds: 0.05 } })
  t.teardown(() => s.close())
  const c = openWs(`${s.wsUrl}/messages?room=w`)
  t.teardown(() => c.close())
  await c.waitFor(isLive)
  let pings = 0
  c.socket.on('ping', () => pings++)
  c.socket.send('hello server')
  await new Promise((r) => setTimeout(r, 300))
  t.ok(pings >= 2, `pinged ${pings} times`)
  const id = await post(s, { text: 'still here', room: 'w' })
  await c.waitFor((es) => es.some((e) => e.id === id))
  t.equal(c.socket.readyState, c.socket.OPEN)
})

t.test('/v1/competitions replays only activations inside the window', async (t) => {
  const s = await startServer({ streams: { competitionsWindowHours: 24 } })
  t.teardown(() => s.close())
  const old = new Date(Date.now() - 25 * 3600_000).toISOString()
  await post(s, { type: 'CompetitionActivatedEvent', competitionId: 'old', time: old, data: {} })
  const recent = await post(s, { type: 'CompetitionActivatedEvent', competitionId: 'new', data: {} })
  const c = openSse(`${s.url}/v1/competitions`)
  await c.waitFor(isLive)
  c.close()
  t.same(ids(c.events), [recent])
})

t.test('/messages without a room follows every room', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const a = await post(s, { text: 'a', room: 'r1' })
  await post(s, competitionEvent('c1'))
  const b = await post(s, { text: 'b', room: 'r2' })
  const c = openSse(`${s.url}/messages`)
  await c.waitFor(isLive)
  c.close()
  t.same(ids(c.events), [a, b])
})

t.test('shutdown tells every client to reconnect: WebSocket 1012, SSE stream ends', async (t) => {
  const s = await startServer()
  const ws = openWs(`${s.wsUrl}/v1/competitions`)
  const sse = openSse(`${s.url}/v1/competitions`)
  await ws.waitFor(isLive)
  await sse.waitFor(isLive)
  await s.close()
  t.equal(await ws.ended, 1012)
  t.equal(await sse.ended, null)
})

t.test('behind a trusted proxy (trustProxy) the cap counts the clients X-Forwarded-For names; from other peers the header is ignored', async (t) => {
  const client = (n: number) => ({ 'x-forwarded-for': `203.0.113.${n}` })
  const trusted = await startServer({ trustProxy: ['127.0.0.1', '::1'], streams: { maxConnectionsPerAddress: 1 } })
  t.teardown(() => trusted.close())
  const a = openSse(`${trusted.url}/v1/competitions`, client(1))
  await a.waitFor(isLive)
  const b = openWs(`${trusted.wsUrl}/v1/competitions`, client(2))
  await b.waitFor(isLive, 5000, 'another client behind the same proxy has its own place')
  t.equal(await openSse(`${trusted.url}/v1/competitions`, client(1)).status, 429, 'the same client past its cap')
  t.equal(await openWs(`${trusted.wsUrl}/v1/competitions`, client(2)).status, 429, 'over WebSocket too')
  a.close()
  b.close()
  // Not trusted (the default): a client cannot pick its own address with the header.
  const direct = await startServer({ streams: { maxConnectionsPerAddress: 1 } })
  t.teardown(() => direct.close())
  const c = openSse(`${direct.url}/v1/competitions`, client(1))
  await c.waitFor(isLive)
  t.equal(await openSse(`${direct.url}/v1/competitions`, client(2)).status, 429, 'a forged X-Forwarded-For from an untrusted peer is ignored')
  c.close()
})

t.test('an optional cap on streams per client address answers 429 past it', async (t) => {
  const s = await startServer({ streams: { maxConnectionsPerAddress: 2 } })
  t.teardown(() => s.close())
  const a = openSse(`${s.url}/v1/competitions`)
  const b = openWs(`${s.wsUrl}/v1/competitions`)
  await a.waitFor(isLive)
  await b.waitFor(isLive)
  const c = openSse(`${s.url}/v1/competitions`)
  t.equal(await c.status, 429)
  t.match(await c.errorBody, { statusCode: 429, message: /at most 2 streams/ })
  const d = openWs(`${s.wsUrl}/v1/competitions`)
  t.equal(await d.status, 429, 'WebSocket upgrades count too')
  a.close()
  await new Promise((r) => setTimeout(r, 100))
  const e = openSse(`${s.url}/v1/competitions`)
  await e.waitFor(isLive, 5000, 'a place freed by a closed stream')
  e.close()
  b.close()
})
