import fc from 'fast-check'
import t from 'tap'
import { isLive, openSse, openWs, postTo } from '../helpers/clients.js'
import { startServer } from '../helpers/server.js'

/**
 * Generated bad input across POST /messages, resume ids, paths, query strings, headers and WebSocket
 * frames: nothing crashes, nothing but a 202 changes the store, every answer is the documented one.
 */
t.test('generated bad input never crashes the server nor changes the store', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const count = async () => (await s.app.store.read({ kind: 'room', room: null }, 0, 100_000)).length + (await s.app.store.read({ kind: 'competitions', windowMs: 1e12 }, 0, 100_000)).length
  const ROOM = 'fuzz'
  const follower = openWs(`${s.wsUrl}/messages?room=${ROOM}`)
  t.teardown(() => follower.close())
  await follower.waitFor(isLive)
  let accepted = 0
  let checked = 0

  // POST bodies: arbitrary JSON values, arbitrary objects with event-like keys, arbitrary bytes.
  const eventish = fc.record(
    {
      type: fc.oneof(fc.string(), fc.integer(), fc.constant('live'), fc.constant(null)),
      text: fc.oneof(fc.string(), fc.integer(), fc.array(fc.string())),
      room: fc.oneof(fc.constant(ROOM), fc.string(), fc.integer()),
      competitionId: fc.oneof(fc.string(), fc.double()),
      data: fc.oneof(fc.object(), fc.string(), fc.constant(null)),
      time: fc.oneof(fc.string(), fc.date({ noInvalidDate: true }).map((d) => d.toISOString())),
      __proto__: fc.object(),
    },
    { requiredKeys: [] },
  )
  const valid = fc.record({ text: fc.string({ minLength: 1, maxLength: 50 }), room: fc.constant(ROOM) }).map((v) => JSON.stringify(v))
  const body = fc.oneof(
    valid,
    fc.jsonValue().map((v) => JSON.stringify(v)),
    eventish.map((v) => JSON.stringify(v)),
    fc.uint8Array({ maxLength: 300 }),
    fc.string({ unit: 'binary', maxLength: 300 }),
  )
  await fc.assert(
    fc.asyncProperty(body, async (b) => {
      const before = await count()
      const r = await postTo(s.url, b)
      checked++
      if (r.status === 202) {
        accepted++
        return /^[1-9][0-9]*$/.test(r.body.id) && (await count()) === before + 1
      }
      return r.status === 400 && typeof r.body.message === 'string' && (await count()) === before
    }),
    { numRuns: 300, seed: 7 },
  )

  // Resume ids and query strings on every stream path, over SSE (header or query) and WebSocket.
  const resume = fc.oneof(fc.string({ maxLength: 40 }), fc.bigInt().map(String), fc.double().map(String))
  const path = fc.constantFrom('/v1/competitions', '/v1/competitions/c1', `/messages?room=${ROOM}`)
  await fc.assert(
    fc.asyncProperty(path, resume, fc.constantFrom('header', 'query', 'ws'), async (p, id, how) => {
      const sep = p.includes('?') ? '&' : '?'
      const valid = /^(0|[1-9][0-9]{0,15})$/.test(id)
      if (how === 'header' && (/[^\t\x20-\x7e]/.test(id) || id.trim() !== id)) return true // not a sendable header value
      const c =
        how === 'ws'
          ? openWs(`${s.wsUrl}${p}${sep}lastEventId=${encodeURIComponent(id)}`)
          : openSse(how === 'header' ? `${s.url}${p}` : `${s.url}${p}${sep}lastEventId=${encodeURIComponent(id)}`, how === 'header' && id !== '' ? { 'last-event-id': id } : {})
      const status = await c.status
      checked++
      // An empty header is no header (no resume); an empty query parameter is refused like any empty one.
      if (valid || (id === '' && how === 'header')) {
        await c.waitFor(isLive, 5000, 'live')
        c.close()
        return status === 200 || status === 101
      }
      const err = (await c.errorBody) as { statusCode?: number; message?: string }
      c.close()
      return status === 400 && err.statusCode === 400 && /lastEventId|Last-Event-ID/.test(err.message ?? '')
    }),
    { numRuns: 150, seed: 11 },
  )

  // Arbitrary paths and headers: JSON answers, never a 5xx.
  const segment = fc.string({ maxLength: 20 }).map(encodeURIComponent)
  await fc.assert(
    fc.asyncProperty(fc.array(segment, { maxLength: 4 }), fc.string({ maxLength: 30 }), async (segs, q) => {
      const res = await fetch(`${s.url}/${segs.join('/')}?${encodeURIComponent(q)}=${encodeURIComponent(q)}`, { headers: { accept: 'application/json' } }).catch(() => null)
      checked++
      if (res === null) return false
      if (res.status === 200) {
        await res.body?.cancel()
        return true
      }
      const text = await res.text()
      return res.status < 500 && JSON.parse(text).statusCode === res.status
    }),
    { numRuns: 150, seed: 13 },
  )

  // WebSocket frames from clients are ignored: the connection stays and keeps receiving.
  const frames = fc.array(fc.oneof(fc.string(), fc.uint8Array({ maxLength: 200 })), { minLength: 1, maxLength: 20 })
  await fc.assert(
    fc.asyncProperty(frames, async (fs) => {
      for (const f of fs) follower.socket.send(f)
      checked++
      return follower.socket.readyState === follower.socket.OPEN
    }),
    { numRuns: 30, seed: 17 },
  )
  const marker = await postTo(s.url, { text: 'still listening', room: ROOM })
  await follower.waitFor((es) => es.some((e) => e.id === marker.body.id), 5000, 'the marker event')
  t.equal((await fetch(`${s.url}/health`)).status, 200, 'alive')
  t.ok(accepted > 0, 'valid events among the generated ones were stored')
  t.ok(checked >= 600, `${checked} generated inputs checked, ${accepted} valid events among them`)
})
