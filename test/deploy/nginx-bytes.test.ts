import t from 'tap'
import { startNginx } from '../helpers/nginx.js'
import { rawSse, rawWs, type RawStream } from '../helpers/raw.js'
import { freePort, startServer } from '../helpers/server.js'
import { postTo } from '../helpers/clients.js'

/**
 * deploy/nginx/tailcast.conf passes a stream through unchanged: `curl -N` through nginx prints the
 * bytes `curl -N` straight to the instance prints, and a WebSocket carries the same frames. The one
 * difference is the `time` of the `live` control event, which is the moment each stream went live.
 */
const HEARTBEAT_SECONDS = 0.3
const PATH = '/messages?room=bytes'
const liveTime = /("type":"live","time":")[^"]+"/g
const masked = (b: Buffer): string => b.toString('latin1').replace(liveTime, '$1…"')
/** Headers that belong to each hop (nginx sets its own), not to the stream. */
const HOP = new Set(['date', 'server', 'connection', 'keep-alive', 'transfer-encoding'])
const endToEnd = (h: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(h).filter(([k]) => !HOP.has(k)))

t.test('through nginx a stream has the bytes and headers it has straight from the instance, heartbeats included', async (t) => {
  const server = await startServer({ streams: { heartbeatSeconds: HEARTBEAT_SECONDS } })
  t.teardown(() => server.close())
  const nginx = await startNginx([server.url.replace('http://', '')])
  t.teardown(() => nginx.stop())
  const ids: string[] = []
  for (let i = 0; i < 5; i++) {
    const r = await postTo(nginx.url, { text: `before ${i}`, room: 'bytes' })
    t.equal(r.status, 202, `POST through nginx is stored (${JSON.stringify(r.body)})`)
    ids.push(r.body.id)
  }

  t.test('refusals through nginx are JSON: the instance\'s own, and nginx\'s for a body over 1 MiB', async (t) => {
    const big = await postTo(nginx.url, JSON.stringify({ text: 'x'.repeat(100_000), room: 'bytes' }))
    t.match(big, { status: 413, body: { statusCode: 413, message: /bodyLimit|too large|body/i } }, `over bodyLimit: tailcast's 413 (${JSON.stringify(big.body).slice(0, 120)})`)
    const huge = await postTo(nginx.url, JSON.stringify({ text: 'x'.repeat(2_000_000), room: 'bytes' }))
    t.match(huge, { status: 413, body: { statusCode: 413, message: /nothing was stored/ } }, 'over 1 MiB: nginx\'s 413, as JSON')
    const bad = await postTo(nginx.url, '{"text":')
    t.match(bad, { status: 400, body: { statusCode: 400 } }, 'invalid JSON: tailcast\'s 400 passes through')
    const nowhere = await startNginx([`127.0.0.1:${await freePort()}`])
    t.teardown(() => nowhere.stop())
    const down = await postTo(nowhere.url, { text: 'x', room: 'bytes' })
    t.match(down, { status: 502, body: { statusCode: 502, message: /Idempotency-Key/ } }, 'no instance answers: a JSON 502 that says what to do')
  })

  t.test('Last-Event-ID reaches the instance', async (t) => {
    const s = rawSse(nginx.url, PATH, { 'Last-Event-ID': ids[2] })
    t.teardown(() => s.close())
    await s.waitFor(() => s.body().includes('event: live'), 10_000, 'live')
    t.same([...s.body().toString().matchAll(/^id: (\d+)$/gm)].map((m) => m[1]).slice(0, 2), ids.slice(3), 'resumed after the id: only the events after it')
  })

  t.test('SSE (curl -N)', async (t) => {
    const streams: [string, RawStream][] = [
      ['direct', rawSse(server.url, PATH)],
      ['nginx', rawSse(nginx.url, PATH)],
    ]
    t.teardown(() => streams.forEach(([, s]) => s.close()))
    const text = (s: RawStream): string => s.body().toString('utf8')
    // The first heartbeat after `live` carries the position.
    const firstPing = (s: RawStream): number => {
      const m = /\n: ping \d+\n\n/.exec(text(s))
      return m === null ? -1 : m.index + m[0].length
    }
    for (const [name, s] of streams) await s.waitFor(() => firstPing(s) > 0, 10_000, `a heartbeat (${name})`)
    const [direct, proxied] = streams.map(([, s]) => s)
    t.equal(proxied.status(), 200)
    t.same(endToEnd(proxied.headers()), endToEnd(direct.headers()), 'the same headers (but Date, Server and the hop-by-hop ones)')
    t.match(proxied.headers(), { 'content-type': /^text\/event-stream/, 'cache-control': 'no-cache', 'x-accel-buffering': 'no' }, 'no buffering and no caching, said to the next hop too')
    t.equal(masked(proxied.body().subarray(0, firstPing(proxied))), masked(direct.body().subarray(0, firstPing(direct))), 'the same bytes: retry, replay, live, heartbeat')
    t.match(text(proxied), /^retry: \d+\n\n/, 'starts with retry:')

    const posted = await postTo(nginx.url, { text: 'while both follow', room: 'bytes' })
    t.equal(posted.status, 202)
    const hasIt = (s: RawStream): boolean => text(s).includes(`id: ${posted.body.id}\n`)
    for (const [name, s] of streams) await s.waitFor(() => hasIt(s), 10_000, `the new event (${name})`)
    const rest = (s: RawStream): string => masked(s.body().subarray(firstPing(s))).replace(/: ping \d+\n\n/g, '')
    t.equal(rest(proxied), rest(direct), 'the same bytes for the live event (heartbeats set aside: each connection has its own timer)')
  })

  t.test('WebSocket (wscat)', async (t) => {
    const streams: [string, RawStream][] = [
      ['direct', rawWs(server.url, PATH)],
      ['nginx', rawWs(nginx.url, PATH)],
    ]
    t.teardown(() => streams.forEach(([, s]) => s.close()))
    const pingAt = (s: RawStream): number => s.frames().findIndex((f) => f.opcode === 0x9)
    for (const [name, s] of streams) await s.waitFor(() => pingAt(s) >= 0, 10_000, `a ping (${name})`)
    const [direct, proxied] = streams.map(([, s]) => s)
    t.equal(proxied.status(), 101, 'upgraded through nginx')
    const handshake = (h: Record<string, string>) => ({ upgrade: h.upgrade?.toLowerCase(), connection: h.connection?.toLowerCase(), accept: h['sec-websocket-accept'], extensions: h['sec-websocket-extensions'] })
    t.same(handshake(proxied.headers()), handshake(direct.headers()), 'the same handshake (Upgrade, Connection, Sec-WebSocket-Accept, no extension)')
    const upTo = (s: RawStream, n: number): string => masked(Buffer.concat(s.frames().slice(0, n + 1).map((f) => f.bytes)))
    t.equal(upTo(proxied, pingAt(proxied)), upTo(direct, pingAt(direct)), 'the same frames, byte for byte: replay, live, the ping with the position')
    t.ok(proxied.frames().filter((f) => f.opcode === 1).some((f) => f.payload.toString().includes('"type":"live"')), 'live came through')

    const posted = await postTo(nginx.url, { text: 'over WebSocket', room: 'bytes' })
    const hasIt = (s: RawStream): boolean => s.frames().some((f) => f.opcode === 1 && f.payload.toString().startsWith(`{"id":"${posted.body.id}"`))
    for (const [name, s] of streams) await s.waitFor(() => hasIt(s), 10_000, `the new event (${name})`)
    const texts = (s: RawStream): string[] => s.frames().filter((f) => f.opcode === 1).map((f) => masked(f.bytes))
    t.same(texts(proxied), texts(direct), 'the same text frames after it too (pings answered, so the connections stay)')
  })
})
