import http, { STATUS_CODES } from 'node:http'
import t from 'tap'
import { mintToken, signingKey } from '../../src/claims.js'
import { startServer } from '../helpers/server.js'

t.test('POST /messages accepts a room message and a full event, 202 with increasing string ids', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const a = await s.post({ text: 'was geht ab in buxtehude?', room: 'developers' })
  t.equal(a.status, 202)
  t.match(a.body, { id: /^[1-9][0-9]*$/ })
  const b = await s.post({ type: 'CompetitionActivatedEvent', competitionId: '52d432dc-d6b8-4045-8a4c-e5e5bdfc8b1e', data: { name: 'Final' }, time: '2026-11-22T18:00:00Z' })
  t.equal(b.status, 202)
  t.ok(BigInt(b.body.id) > BigInt(a.body.id))
  const [msg] = await s.app.store.read({ kind: 'room', room: 'developers' }, 0, 10)
  t.same(msg.data, { text: 'was geht ab in buxtehude?' })
  t.equal(msg.type, 'message')
  const [comp] = await s.app.store.read({ kind: 'competition', competitionId: '52d432dc-d6b8-4045-8a4c-e5e5bdfc8b1e' }, 0, 10)
  t.equal(comp.time, '2026-11-22T18:00:00.000Z', 'time normalised to ISO-8601 UTC')
})

/** Each bad request, the status it gets and what its message must say. */
const BAD: { name: string; body: unknown; headers?: Record<string, string>; status: number; message: RegExp }[] = [
  { name: 'malformed JSON', body: '{"text": "hi", ', status: 400, message: /not valid JSON/ },
  { name: 'JSON that is not an object', body: '[1,2]', status: 400, message: /JSON object/ },
  { name: 'JSON null', body: 'null', status: 400, message: /JSON object/ },
  { name: 'a bare string', body: '"hello"', status: 400, message: /JSON object/ },
  { name: 'text of the wrong type', body: { text: 42, room: 'r' }, status: 400, message: /^text must be a string$/ },
  { name: 'room of the wrong type', body: { text: 'x', room: ['r'] }, status: 400, message: /^room must be a string$/ },
  { name: 'room missing', body: { text: 'x' }, status: 400, message: /missing field "room"/ },
  { name: 'empty text', body: { text: '', room: 'r' }, status: 400, message: /^text must be at least 1 character$/ },
  { name: 'room with a space', body: { text: 'x', room: 'a b' }, status: 400, message: /^room must be 1-128 letters, digits or "_.:-", starting with a letter or digit \(got "a b"\)$/ },
  { name: 'unknown field in a room message', body: { text: 'x', room: 'r', admin: true }, status: 400, message: /unknown field "admin"/ },
  { name: 'type missing', body: { competitionId: 'c', data: {} }, status: 400, message: /missing field "type"/ },
  { name: 'data missing', body: { type: 'T' }, status: 400, message: /missing field "data"/ },
  { name: 'data not an object', body: { type: 'T', data: 'x' }, status: 400, message: /^data must be an object$/ },
  { name: 'competitionId of the wrong type', body: { type: 'T', competitionId: 7, data: {} }, status: 400, message: /^competitionId must be a string$/ },
  { name: 'unknown field in an event', body: { type: 'T', data: {}, id: '99' }, status: 400, message: /unknown field "id"/ },
  { name: 'a reserved control type', body: { type: 'reset', data: {} }, status: 400, message: /reserved/ },
  { name: 'a type with spaces', body: { type: 'Drop table', data: {} }, status: 400, message: /^type must be 1-128 letters, digits or "_.:-", starting with a letter \(got "Drop table"\)$/ },
  { name: 'a time that is not a date', body: { type: 'T', data: {}, time: 'yesterday at noon' }, status: 400, message: /ISO-8601/ },
  { name: '__proto__ key', body: '{"text":"x","room":"r","__proto__":{"polluted":1}}', status: 400, message: /^key "__proto__" is not allowed \(prototype pollution\)$/ },
  { name: '__proto__ key inside data', body: '{"type":"T","data":{"__proto__":{"polluted":1}}}', status: 400, message: /^data: key "__proto__": this key name is not allowed \(prototype pollution\)$/ },
  { name: 'constructor.prototype key', body: '{"type":"T","data":{"constructor":{"prototype":{"polluted":1}}}}', status: 400, message: /prototype pollution/ },
  { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), status: 400, message: /not valid UTF-8/ },
  { name: 'an empty body', body: '', status: 400, message: /^the body is empty: send one JSON event$/ },
  { name: 'text too long', body: { text: 'x'.repeat(10_001), room: 'r' }, status: 400, message: /^text must be at most 10000 characters \(got 10001\)$/ },
  { name: 'a body of 1 MB', body: JSON.stringify({ text: 'x'.repeat(1_000_000), room: 'r' }), status: 413, message: /^the body is larger than 65536 bytes \(bodyLimit\): nothing was stored$/ },
  { name: 'an unsupported content type', body: '<event/>', headers: { 'content-type': 'application/xml' }, status: 415, message: /^send the event as JSON with content-type: application\/json \(got content-type "application\/xml"\)$/ },
]

t.test('bad input: each gets its status and a JSON message; the store is unchanged; the server stays up', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const good = await s.post({ text: 'before', room: 'r' })
  t.equal(good.status, 202)
  for (const bad of BAD) {
    const r = await s.post(bad.body, bad.headers)
    t.equal(r.status, bad.status, `${bad.name}: status`)
    t.same(Object.keys(r.body).sort(), ['error', 'message', 'statusCode'], `${bad.name}: the one error shape`)
    t.match(r.body, { statusCode: bad.status, error: STATUS_CODES[bad.status], message: bad.message }, `${bad.name}: JSON message`)
  }
  t.same(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted')
  const all = await s.app.store.read({ kind: 'room', room: null }, 0, 100)
  t.same(all.map((e) => String(e.id)), [good.body.id], 'only the good event was stored')
  t.equal((await fetch(`${s.url}/health`)).status, 200, 'still up')
})

/** A POST with exactly these headers (node:http adds no content-type of its own). */
function rawPost(url: string, body: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/messages`, { method: 'POST', headers: { 'content-length': String(Buffer.byteLength(body)), ...headers } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (text += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.test('POST takes application/json only: a page cannot post cross-site without a preflight (text/plain, forms, no type: 415)', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const body = JSON.stringify({ text: 'x', room: 'r' })
  // The content types a browser sends cross-site without a CORS preflight, and none at all.
  for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', undefined]) {
    const r = await rawPost(s.url, body, type === undefined ? { origin: 'https://evil.example' } : { origin: 'https://evil.example', 'content-type': type })
    t.equal(r.status, 415, `${type ?? 'no content-type'}: 415`)
    t.same(Object.keys(r.body).sort(), ['error', 'message', 'statusCode'], `${type ?? 'no content-type'}: the one error shape`)
    t.match(r.body, { statusCode: 415, error: 'Unsupported Media Type', message: /content-type: application\/json/ }, `${type ?? 'no content-type'}: says what to send`)
  }
  t.same(await s.app.store.read({ kind: 'room', room: null }, 0, 10), [], 'nothing stored')
  t.equal((await rawPost(s.url, body, { 'content-type': 'application/json; charset=utf-8' })).status, 202, 'a charset parameter is fine')
  t.equal((await rawPost(s.url, body, { 'content-type': 'Application/JSON' })).status, 202, 'media types are case-insensitive')
})

t.test('a bearer token protects POST /messages when configured', async (t) => {
  const s = await startServer({ post: { token: 's3cret-token' } })
  t.teardown(() => s.close())
  const none = await s.post({ text: 'x', room: 'r' })
  t.equal(none.status, 401)
  t.match(none.body, { message: /Bearer/ })
  const wrong = await s.post({ text: 'x', room: 'r' }, { authorization: 'Bearer nope' })
  t.equal(wrong.status, 403)
  t.notMatch(JSON.stringify(wrong.body), /s3cret/, 'the token never appears in a reply')
  const right = await s.post({ text: 'x', room: 'r' }, { authorization: 'Bearer s3cret-token' })
  t.equal(right.status, 202)
})

t.test('posting can be disabled', async (t) => {
  const s = await startServer({ post: { enabled: false } })
  t.teardown(() => s.close())
  const r = await s.post({ text: 'x', room: 'r' })
  t.equal(r.status, 403)
  t.match(r.body, { message: /disabled/ })
  t.same(await s.app.store.read({ kind: 'room', room: null }, 0, 10), [])
})

t.test('GET /posting says whether POST /messages is open, needs a token or is off, and changes nothing', async (t) => {
  const cases = [
    { post: {}, want: { enabled: true, tokenRequired: false } },
    { post: { token: 's3cret-token' }, want: { enabled: true, tokenRequired: true } },
    { post: { enabled: false, token: 's3cret-token' }, want: { enabled: false, tokenRequired: false, reason: 'posting is disabled on this server' } },
  ]
  for (const c of cases) {
    const s = await startServer({ post: c.post })
    const res = await s.app.inject({ method: 'GET', url: '/posting' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), c.want, JSON.stringify(c.post))
    t.notMatch(res.body, /s3cret/, 'the token itself is never told')
    t.same(await s.app.store.read({ kind: 'room', room: null }, 0, 10), [], 'nothing stored')
    await s.close()
  }
})

t.test('Idempotency-Key: a retried POST stores its event once and answers the first id', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const key = { 'idempotency-key': 'order-7f3c2a' }
  const first = await s.post({ text: 'once', room: 'idem' }, key)
  t.equal(first.status, 202)
  const retry = await s.post({ text: 'once', room: 'idem' }, key)
  t.same(retry, { status: 202, body: { id: first.body.id } }, 'the retry gets the first id')
  const other = await s.post({ text: 'twice', room: 'idem' }, { 'idempotency-key': 'order-other' })
  t.not(other.body.id, first.body.id)
  const plain = await s.post({ text: 'once', room: 'idem' })
  t.not(plain.body.id, first.body.id, 'without a key the same body is a new event')
  t.same((await s.app.store.read({ kind: 'room', room: 'idem' }, 0, 10)).map((e) => e.data.text), ['once', 'twice', 'once'])
  for (const bad of ['', 'a b', 'x'.repeat(201), 'a\tb']) {
    const r = await s.post({ text: 'x', room: 'idem' }, { 'idempotency-key': bad })
    t.equal(r.status, 400, `key ${JSON.stringify(bad.slice(0, 10))} is refused`)
    t.match(r.body.message, /Idempotency-Key header must be 1-200 visible ASCII characters/)
  }
})

t.test('Idempotency-Key reused with another body: 422, and the first event stays the stored one', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  const key = { 'idempotency-key': 'reuse-1' }
  const first = await s.post({ text: 'first', room: 'reuse' }, key)
  t.equal(first.status, 202)
  const other = await s.post({ text: 'second', room: 'reuse' }, key)
  t.equal(other.status, 422, 'another body under the same key is refused')
  t.match(other.body, { statusCode: 422, error: 'Unprocessable Entity', message: new RegExp(`already used for another event \\(id ${first.body.id}\\).*use a new key`) })
  const retry = await s.post({ text: 'first', room: 'reuse' }, key)
  t.same(retry, { status: 202, body: { id: first.body.id } }, 'the same body is still a retry')
  // Two different bodies with one key at once: one is stored, the other gets 422, never a silent 202.
  const both = await Promise.all([s.post({ text: 'a', room: 'reuse' }, { 'idempotency-key': 'race' }), s.post({ text: 'b', room: 'reuse' }, { 'idempotency-key': 'race' })])
  t.same(both.map((r) => r.status).sort(), [202, 422])
  t.same((await s.app.store.read({ kind: 'room', room: 'reuse' }, 0, 10)).map((e) => e.data.text), ['first', both[0].status === 202 ? 'a' : 'b'])
})

t.test('Idempotency-Key is scoped to the publisher: another token can neither learn nor squat a key', async (t) => {
  const secret = 'idempotency-scope-secret-0123456789abcdef'
  const s = await startServer({ auth: { jwt: { secret } }, post: { token: 'the-post-token' } })
  t.teardown(() => s.close())
  const signer = signingKey({ secret })
  const token = (room: string, subject?: string) => mintToken(signer, { subscribe: [], publish: [`room:${room}`], expiresIn: '1h', ...(subject === undefined ? {} : { subject }) })
  const a = { authorization: `Bearer ${await token('ta', 'tenant-a')}` }
  const b = { authorization: `Bearer ${await token('tb', 'tenant-b')}` }
  const first = await s.post({ text: 'from a', room: 'ta' }, { ...a, 'idempotency-key': 'k-1' })
  t.equal(first.status, 202)
  const probe = await s.post({ text: 'from b', room: 'tb' }, { ...b, 'idempotency-key': 'k-1' })
  t.equal(probe.status, 202, "B's post with A's key is B's own event")
  t.not(probe.body.id, first.body.id, "B does not learn A's id")
  // B squats a key before A uses it: A's post is still stored.
  const squat = await s.post({ text: 'squat', room: 'tb' }, { ...b, 'idempotency-key': 'k-2' })
  const mine = await s.post({ text: 'a again', room: 'ta' }, { ...a, 'idempotency-key': 'k-2' })
  t.equal(mine.status, 202)
  t.not(mine.body.id, squat.body.id)
  // A second token of the same subject is the same publisher (a refreshed token retries safely).
  const refreshed = { authorization: `Bearer ${await mintToken(signer, { subscribe: ['/messages'], publish: ['room:ta'], expiresIn: '2h', subject: 'tenant-a' })}` }
  t.not(refreshed.authorization, a.authorization)
  t.same(await s.post({ text: 'a again', room: 'ta' }, { ...refreshed, 'idempotency-key': 'k-2' }), { status: 202, body: { id: mine.body.id } })
  // Tokens without a subject are scoped by the token itself; the post token is a publisher of its own.
  const c = { authorization: `Bearer ${await token('ta')}` }
  const byC = await s.post({ text: 'from a', room: 'ta' }, { ...c, 'idempotency-key': 'k-1' })
  t.not(byC.body.id, first.body.id)
  const byPostToken = await s.post({ text: 'from a', room: 'ta' }, { authorization: 'Bearer the-post-token', 'idempotency-key': 'k-1' })
  t.not(byPostToken.body.id, first.body.id)
  t.same((await s.app.store.read({ kind: 'room', room: 'ta' }, 0, 10)).map((e) => e.data.text), ['from a', 'a again', 'from a', 'from a'], "every publisher's event is stored")
})
