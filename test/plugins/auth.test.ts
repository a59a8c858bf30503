import { execFile } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import http from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { exportJWK, SignJWT, type JWTPayload } from 'jose'
import t from 'tap'
import { startRecording } from '../../src/recorder/record.js'
import { dataEvents, isLive, openSse, openWs, type StreamClient } from '../helpers/clients.js'
import { startServer, type TestServer } from '../helpers/server.js'

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))
const run = promisify(execFile)

const SECRET = 'test-secret-that-is-long-enough-0123456789'
const OTHER_SECRET = 'another-secret-that-is-long-enough-987654'
const key = new TextEncoder().encode(SECRET)
const now = (): number => Math.floor(Date.now() / 1000)

function sign(payload: JWTPayload, opts: { secret?: string; exp?: number | null; nbf?: number } = {}): Promise<string> {
  const jwt = new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).setIssuedAt()
  if (opts.exp !== null) jwt.setExpirationTime(opts.exp ?? now() + 600)
  if (opts.nbf !== undefined) jwt.setNotBefore(opts.nbf)
  return jwt.sign(opts.secret === undefined ? key : new TextEncoder().encode(opts.secret))
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
/** An unsecured JWT (`alg: none`, no signature), as an attacker would send it. */
const unsigned = (payload: JWTPayload): string => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`

const VIP = { tailcast: { subscribe: ['/messages?room=vip', '/v1/competitions/*'], publish: ['room:vip'] } }

type Via = 'header' | 'query' | 'cookie'
type Transport = 'sse' | 'ws'

/** Open `path` over `transport` with `token` sent `via` (or no token). */
function open(s: TestServer, transport: Transport, path: string, token?: string, via: Via = 'header'): StreamClient {
  const headers: Record<string, string> = {}
  let url = path
  if (token !== undefined) {
    if (via === 'header') headers.authorization = `Bearer ${token}`
    else if (via === 'cookie') headers.cookie = `theme=dark; tailcast_token=${token}`
    else url += `${path.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(token)}`
  }
  return transport === 'sse' ? openSse(s.url + url, headers) : openWs(s.wsUrl + url, headers)
}

/** Everything the server logged, to look for secrets in. */
function logSink(): { write(line: string): void; text(): string } {
  const lines: string[] = []
  return { write: (line) => void lines.push(line), text: () => lines.join('') }
}

t.test('HS256: the token table over SSE and WebSocket', async (t) => {
  const log = logSink()
  const s = await startServer({ auth: { jwt: { secret: SECRET } }, logLevel: 'debug' }, { logStream: log })
  t.teardown(() => s.close())
  const good = await sign(VIP)
  const tokens: string[] = [good]
  const cases: { name: string; token?: () => Promise<string>; path: string; via?: Via; status: number; message?: RegExp }[] = [
    { name: 'no token', path: '/messages?room=vip', status: 401, message: /needs a token/ },
    { name: 'malformed', token: async () => 'not.a.jwt', path: '/messages?room=vip', status: 401, message: /not a valid JWT/ },
    { name: 'garbage', token: async () => 'hello', path: '/messages?room=vip', status: 401, message: /not a valid JWT/ },
    { name: 'wrong key', token: () => sign(VIP, { secret: OTHER_SECRET }), path: '/messages?room=vip', status: 401, message: /not signed with a key this server trusts/ },
    { name: 'alg none', token: async () => unsigned({ ...VIP, exp: now() + 600 }), path: '/messages?room=vip', status: 401, message: /algorithm|not a valid JWT/ },
    { name: 'expired', token: () => sign(VIP, { exp: now() - 60 }), path: '/messages?room=vip', status: 401, message: /expired/ },
    { name: 'not yet valid', token: () => sign(VIP, { nbf: now() + 600 }), path: '/messages?room=vip', status: 401, message: /not valid yet/ },
    { name: 'malformed claim', token: () => sign({ tailcast: { subscribe: '/messages' } }), path: '/messages?room=vip', status: 401, message: /claim is malformed/ },
    { name: 'no claim', token: () => sign({ sub: 'u1' }), path: '/messages?room=vip', status: 403, message: /does not allow the stream \/messages\?room=vip/ },
    { name: 'other room', token: async () => good, path: '/messages?room=other', status: 403, message: /\/messages\?room=other/ },
    { name: 'every room', token: async () => good, path: '/messages', status: 403 },
    { name: 'competition list', token: async () => good, path: '/v1/competitions', status: 403 },
    { name: 'exact room, header', token: async () => good, path: '/messages?room=vip', status: 200 },
    { name: 'exact room, query', token: async () => good, path: '/messages?room=vip', via: 'query', status: 200 },
    { name: 'exact room, cookie', token: async () => good, path: '/messages?room=vip', via: 'cookie', status: 200 },
    { name: 'pattern', token: async () => good, path: '/v1/competitions/c-42', status: 200 },
    { name: 'pattern, query', token: async () => good, path: '/v1/competitions/c-42?lastEventId=0', via: 'query', status: 200 },
    { name: 'no expiry', token: () => sign(VIP, { exp: null }), path: '/messages?room=vip', status: 200 },
    { name: 'bad token in query wins over no header', token: async () => 'x.y.z', path: '/messages?room=vip', via: 'query', status: 401 },
  ]
  for (const c of cases) {
    const token = c.token === undefined ? undefined : await c.token()
    if (token !== undefined) tokens.push(token)
    for (const transport of ['sse', 'ws'] as const) {
      const client = open(s, transport, c.path, token, c.via)
      const status = await client.status
      const name = `${c.name} (${transport}, ${c.via ?? 'header'})`
      if (c.status === 200) {
        t.equal(status, transport === 'sse' ? 200 : 101, `${name}: stream opens`)
        await client.waitFor(isLive, 5000, 'live')
        t.ok(isLive(client.events), `${name}: live`)
      } else {
        t.equal(status, c.status, `${name}: ${c.status}`)
        const body = (await client.errorBody) as { statusCode: number; error: string; message: string }
        t.equal(body.statusCode, c.status, `${name}: JSON error shape`)
        t.equal(typeof body.error, 'string')
        if (c.message) t.match(body.message, c.message, `${name}: says why`)
        if (token !== undefined) t.notOk(JSON.stringify(body).includes(token), `${name}: the token is not in the body`)
      }
      client.close()
      await client.ended
    }
  }
  // A refused WebSocket is answered as HTTP before any upgrade, with the reason in JSON.
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request(`${s.url}/messages?room=vip`, {
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    })
    req.on('response', resolve)
    req.on('upgrade', () => reject(new Error('upgraded without a token')))
    req.on('error', reject)
    req.end()
  })
  t.equal(res.statusCode, 401, 'upgrade without a token: HTTP 401')
  t.match(res.headers['content-type'], /application\/json/)
  t.match(res.headers['www-authenticate'], /^Bearer/)
  res.resume()

  // Secrets never reach the log, though every request above was logged at debug.
  const text = log.text()
  t.ok(text.includes('request refused'), 'refusals were logged')
  t.notOk(text.includes(SECRET), 'the secret is not logged')
  for (const token of tokens) if (token.length > 8) t.notOk(text.includes(token), `token ${token.slice(0, 12)}… is not logged`)
})

t.test('a token that expires ends the open stream: SSE end, WebSocket 4401', async (t) => {
  const s = await startServer({ auth: { jwt: { secret: SECRET } } })
  t.teardown(() => s.close())
  const exp = now() + 2
  const token = await sign(VIP, { exp })
  const sse = open(s, 'sse', '/messages?room=vip', token)
  const ws = open(s, 'ws', '/messages?room=vip', token, 'query')
  await sse.waitFor(isLive, 5000, 'SSE live')
  await ws.waitFor(isLive, 5000, 'WS live')
  const bound = (p: Promise<number | null>, what: string): Promise<number | null> =>
    Promise.race([p, new Promise<never>((_r, reject) => setTimeout(() => reject(new Error(`${what} still open 10 s after the token expired`)), 12_000))])
  t.equal(await bound(sse.ended, 'SSE'), null, 'the SSE response ended')
  t.equal(await bound(ws.ended, 'WebSocket'), 4401, 'the WebSocket closed with 4401')
  t.ok(Date.now() >= exp * 1000 - 100, 'not before the expiry')
  // The client reconnects with the same token: now refused.
  const again = open(s, 'sse', '/messages?room=vip', token)
  t.equal(await again.status, 401)
  await again.ended
})

t.test('RS256 public key file: HS256 tokens signed with the public key are refused (no alg confusion)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-auth-'))
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  writeFileSync(join(dir, 'key.pem'), pem)
  const s = await startServer({ auth: { jwt: { publicKeyFile: join(dir, 'key.pem') } } })
  t.teardown(() => s.close())
  const rs = await new SignJWT(VIP).setProtectedHeader({ alg: 'RS256' }).setExpirationTime('10m').sign(privateKey)
  const confused = await new SignJWT(VIP).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(new TextEncoder().encode(pem))
  const hs = await sign(VIP)
  for (const transport of ['sse', 'ws'] as const) {
    const ok = open(s, transport, '/messages?room=vip', rs)
    await ok.waitFor(isLive, 5000, 'live')
    t.pass(`${transport}: RS256 token accepted`)
    ok.close()
    for (const [name, token] of [['HS256 signed with the public key', confused], ['HS256', hs], ['alg none', unsigned({ ...VIP })]]) {
      const c = open(s, transport, '/messages?room=vip', token)
      t.equal(await c.status, 401, `${transport}: ${name} refused`)
      t.match(((await c.errorBody) as { message: string }).message, /algorithm|not a valid JWT/)
    }
  }
})

t.test('ES256 JWKS file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-auth-'))
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] }))
  const s = await startServer({ auth: { jwt: { jwksFile: join(dir, 'jwks.json') } } })
  t.teardown(() => s.close())
  const es = await new SignJWT(VIP).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setExpirationTime('10m').sign(privateKey)
  const stranger = await new SignJWT(VIP).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setExpirationTime('10m').sign(other.privateKey)
  const ok = open(s, 'ws', '/v1/competitions/c1', es)
  await ok.waitFor(isLive, 5000, 'live')
  ok.close()
  const bad = open(s, 'sse', '/v1/competitions/c1', stranger)
  t.equal(await bad.status, 401, 'a token signed by another key is refused')
})

t.test('publishing rights: a JWT posts to its rooms only; the post token stays', async (t) => {
  const s = await startServer({ auth: { jwt: { secret: SECRET } }, post: { token: 'the-post-token' } })
  t.teardown(() => s.close())
  const vip = await sign(VIP)
  const message = (room: string) => ({ type: 'message', room, data: { text: 'hi' } })
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
  t.equal((await s.post(message('vip'), bearer(vip))).status, 202, 'its room')
  const other = await s.post(message('other'), bearer(vip))
  t.equal(other.status, 403, 'another room')
  t.match(other.body.message, /may not post to room:other/)
  const noRoom = await s.post({ type: 'note', data: {} }, bearer(vip))
  t.equal(noRoom.status, 403, 'an event for no stream needs the post token')
  t.equal((await s.post(message('vip'), bearer(await sign({ tailcast: { subscribe: ['/messages'] } })))).status, 403, 'subscribe rights do not publish')
  t.equal((await s.post(message('vip'))).status, 401, 'no token')
  t.equal((await s.post(message('vip'), bearer(await sign(VIP, { exp: now() - 10 })))).status, 401, 'expired')
  t.equal((await s.post(message('vip'), bearer(await sign(VIP, { secret: OTHER_SECRET })))).status, 401, 'wrong key')
  t.equal((await s.post(message('other'), bearer('the-post-token'))).status, 202, 'the post token posts anywhere')
  const posting = (await (await fetch(`${s.url}/posting`)).json()) as { tokenRequired: boolean }
  t.equal(posting.tokenRequired, true)
  // Only what was allowed reached the stream.
  const follower = open(s, 'sse', '/messages', await sign({ tailcast: { subscribe: ['/messages'] } }))
  await follower.waitFor((e) => isLive(e), 5000, 'live')
  t.same(follower.events.filter((e) => e.type === 'message').map((e) => e.room), ['vip', 'other'], 'the refused posts stored nothing')
  follower.close()
})

t.test('auth off (the default): streams need no token, and a token is ignored', async (t) => {
  const s = await startServer()
  t.teardown(() => s.close())
  for (const transport of ['sse', 'ws'] as const) {
    const c = open(s, transport, '/messages?room=vip', 'whatever', 'query')
    await c.waitFor(isLive, 5000, 'live')
    t.pass(`${transport} opens`)
    c.close()
  }
})

t.test('the secret is never printed: --print-config, config errors', async (t) => {
  const env = { PATH: process.env.PATH ?? '', TAILCAST_JWT_SECRET: SECRET }
  const { stdout } = await run(process.execPath, [CLI, 'serve', '--print-config'], { env })
  t.notOk(stdout.includes(SECRET), '--print-config hides the secret')
  t.match(JSON.parse(stdout).auth.jwt.secret, '[redacted]')
  const short = 'short-secret-hunter2'
  const err = await run(process.execPath, [CLI, 'serve', '--print-config'], { env: { ...env, TAILCAST_JWT_SECRET: short } }).then(
    () => null,
    (e: { stderr: string; code: number }) => e,
  )
  t.ok(err !== null && err.code !== 0, 'a short secret stops the start')
  t.match(err?.stderr, /auth.jwt.secret.*at least 32 bytes/)
  t.notOk(err?.stderr.includes(short), 'the short secret is not shown')
  const both = await run(process.execPath, [CLI, 'serve', '--print-config'], { env: { ...env, TAILCAST_JWT_JWKS_FILE: '/nonexistent.json' } }).then(
    () => null,
    (e: { stderr: string }) => e,
  )
  t.match(both?.stderr, /auth.jwt.secret and auth.jwt.jwksFile are set together/)
  t.notOk(both?.stderr.includes(SECRET))
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-auth-keys-'))
  writeFileSync(join(dir, 'bad.json'), '{"keys": 1}')
  writeFileSync(join(dir, 'secret.pem'), generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }))
  const keyFiles: [Record<string, string>, RegExp][] = [
    [{ TAILCAST_JWT_PUBLIC_KEY_FILE: join(dir, 'missing.pem') }, /auth.jwt.publicKeyFile .*missing.pem: not a readable PEM public key \(ENOENT\)/],
    [{ TAILCAST_JWT_PUBLIC_KEY_FILE: join(dir, 'secret.pem') }, /an RSA \(RS256\) or EC P-256 \(ES256\) public key is needed, got ed25519/],
    [{ TAILCAST_JWT_JWKS_FILE: join(dir, 'bad.json') }, /auth.jwt.jwksFile .*: not a readable JWKS/],
  ]
  for (const [keyEnv, message] of keyFiles) {
    const bad = await run(process.execPath, [CLI, 'serve'], { env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', ...keyEnv } }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    )
    t.equal(bad?.code, 2, 'a key that cannot be used stops the start (exit 2)')
    t.match(bad?.stderr, message)
  }
})

t.test('a token in the cookie is accepted only from pages of allowed origins, even when CORS is *', async (t) => {
  const token = await sign(VIP)
  const s = await startServer({ auth: { jwt: { secret: SECRET }, cookieOrigins: ['https://app.example'] } })
  t.teardown(() => s.close())
  const cookie = `tailcast_token=${token}`
  const path = '/messages?room=vip'
  for (const transport of ['sse', 'ws'] as const) {
    const opened = (headers: Record<string, string>) => (transport === 'sse' ? openSse(s.url + path, headers) : openWs(s.wsUrl + path, headers))
    const evil = opened({ cookie, origin: 'https://evil.example' })
    t.equal(await evil.status, 403, `${transport}: a cross-site page with the cookie is refused`)
    t.match(await evil.errorBody, { statusCode: 403, message: /cookie is not accepted from a page of origin "https:\/\/evil.example"/ })
    t.equal(await opened({ cookie, origin: 'null' }).status, 403, `${transport}: an opaque origin too`)
    for (const [why, headers] of [
      ['a listed origin', { cookie, origin: 'https://app.example' }],
      ["the server's own page", { cookie, origin: s.url }],
      ['no Origin (not a page)', { cookie }],
      ['a token in the header from any origin (CORS *)', { authorization: `Bearer ${token}`, origin: 'https://evil.example' }],
    ] as const) {
      const c = opened(headers)
      await c.waitFor(isLive, 10_000, `${transport}: ${why}`)
      t.pass(`${transport}: ${why} is live`)
      c.close()
    }
  }
})

t.test('issue #21 row 10: claim patterns with 20 stars against 128-character names answer at once (subscribe, publish, presence)', async (t) => {
  const s = await startServer({ auth: { jwt: { secret: SECRET } } })
  t.teardown(() => s.close())
  const stars = '*a'.repeat(20) + '*'
  const token = await sign({ tailcast: { subscribe: [`/messages?room=${stars}b`, `/v1/competitions/${stars}b`], publish: [`room:${stars}b`] } })
  const auth = { authorization: `Bearer ${token}` }
  const room = 'a'.repeat(127) + 'c'
  const start = Date.now()
  const sse = openSse(`${s.url}/messages?room=${room}`, auth)
  t.equal(await sse.status, 403, 'subscribe: refused')
  const ws = openWs(`${s.wsUrl}/v1/competitions/${room}`, auth)
  t.equal(await ws.status, 403, 'WebSocket: refused')
  t.equal((await s.post({ text: 'x', room }, auth)).status, 403, 'publish: refused')
  const presence = await fetch(`${s.url}/v1/presence?stream=${encodeURIComponent(`/messages?room=${room}`)}`, { headers: auth })
  t.equal(presence.status, 403, 'presence: refused')
  const allowed = openSse(`${s.url}/messages?room=${'a'.repeat(127)}b`, auth)
  await allowed.waitFor(isLive, 10_000, 'a matching room')
  allowed.close()
  // A backtracking matcher takes seconds to hours on these; generous for a busy machine.
  t.ok(Date.now() - start < 5000, `all answered in ${Date.now() - start} ms`)
})

t.test('a relay of a private upstream refuses to start without auth of its own or upstream.public, and says both ways out', async (t) => {
  const base = { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', TAILCAST_UPSTREAM: 'ws://127.0.0.1:9/messages?room=vip' }
  const refusals = [{ TAILCAST_UPSTREAM_TOKEN: 'eyJ.private.token' }, { TAILCAST_UPSTREAM: 'ws://127.0.0.1:9/messages?room=vip&access_token=eyJ.private.token' }]
  for (const env of refusals) {
    const bad = await run(process.execPath, [CLI, 'serve'], { env: { ...base, ...env }, timeout: 20_000 }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    )
    t.equal(bad?.code, 2, `${Object.keys(env).join(',')}: a configuration error (exit 2)`)
    t.match(bad?.stderr, /no auth of its own[\s\S]*TAILCAST_JWT_SECRET[\s\S]*TAILCAST_UPSTREAM_PUBLIC=true/, 'the message names both ways out')
    t.notOk(bad?.stderr.includes('eyJ.private.token'), 'and does not show the token')
  }
  // Either way out starts (checked with --print-config: the configuration is accepted).
  for (const fix of [{ TAILCAST_UPSTREAM_PUBLIC: 'true' }, { TAILCAST_JWT_SECRET: SECRET }]) {
    const ok = await run(process.execPath, [CLI, 'serve', '--print-config'], { env: { ...base, ...refusals[0], ...fix }, timeout: 20_000 })
    t.match(ok.stdout, /"public"/, `${Object.keys(fix)[0]}: accepted`)
  }
})

t.test('a relay (upstream.token) and the recorder (--token) follow a private upstream; without a token the recorder stops on the 401', async (t) => {
  const producer = await startServer({ auth: { jwt: { secret: SECRET } }, post: { token: 'producer-post-token' } })
  t.teardown(() => producer.close())
  const token = await sign(VIP)
  // Serving the private room to anyone is on purpose here (upstream.public).
  const relay = await startServer({ upstream: { url: `${producer.wsUrl}/messages?room=vip`, token, public: true, reconnectMinMs: 50, reconnectMaxMs: 300 } })
  t.teardown(() => relay.close())
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-auth-rec-'))
  const quiet = { write: () => true }
  const recorder = await startRecording({ url: `${producer.url}/messages?room=vip`, token, file: join(dir, 'vip.jsonl'), output: quiet, minBackoffMs: 50, maxBackoffMs: 200 })
  t.teardown(() => recorder.stop().then(() => undefined))
  const consumer = openSse(`${relay.url}/messages?room=vip`)
  t.teardown(() => consumer.close())
  await consumer.waitFor(isLive, 10_000, 'the relay\'s consumer live')
  for (let i = 0; i < 3; i++) t.equal((await producer.post({ text: `v${i}`, room: 'vip' }, { authorization: 'Bearer producer-post-token' })).status, 202)
  await consumer.waitFor((e) => dataEvents(e).length === 3, 10_000, 'three events through the relay')
  const deadline = Date.now() + 10_000
  while (recorder.recorded < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  t.equal(recorder.recorded, 3, 'the recorder wrote the three events')

  const refused = await startRecording({ url: `${producer.wsUrl}/messages?room=vip`, file: join(dir, 'none.jsonl'), output: quiet })
  const err = await Promise.race([refused.failed.catch((e: Error) => e), new Promise<null>((r) => setTimeout(() => r(null), 10_000))])
  t.match(err?.message, /answered 401: this stream needs a token/, 'no token: the recorder stops and says why')
  await refused.stop()
})

t.test('tailcast token mints what the server accepts: HS256 from TAILCAST_JWT_SECRET, RS256 from --key', async (t) => {
  const cli = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [CLI, 'token', ...args], { env: { PATH: process.env.PATH ?? '', ...env } }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    )
  const s = await startServer({ auth: { jwt: { secret: SECRET } } })
  t.teardown(() => s.close())
  const hs = await cli(['-s', '/messages?room=vip', '-s', '/v1/competitions/*', '-e', '5m'], { TAILCAST_JWT_SECRET: SECRET })
  t.equal(hs.code, 0)
  const token = hs.stdout.trim()
  for (const [transport, path] of [['sse', '/messages?room=vip'], ['ws', '/v1/competitions/c9']] as const) {
    const c = open(s, transport, path, token, 'query')
    await c.waitFor(isLive, 5000, 'live')
    t.pass(`${transport} ${path}: the minted token opens it`)
    c.close()
  }
  const other = open(s, 'sse', '/messages?room=other', token)
  t.equal(await other.status, 403, 'and nothing else')

  const dir = mkdtempSync(join(tmpdir(), 'tailcast-token-'))
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  writeFileSync(join(dir, 'public.pem'), publicKey.export({ type: 'spki', format: 'pem' }))
  writeFileSync(join(dir, 'private.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }))
  const rsServer = await startServer({ auth: { jwt: { publicKeyFile: join(dir, 'public.pem') } } })
  t.teardown(() => rsServer.close())
  const rs = await cli(['-s', '/messages', '--key', join(dir, 'private.pem')])
  t.equal(rs.code, 0)
  const c = open(rsServer, 'ws', '/messages?room=any', rs.stdout.trim())
  await c.waitFor(isLive, 5000, 'live')
  t.pass('an RS256 token from --key opens every room with /messages')
  c.close()

  const errors: [string[], Record<string, string>, RegExp][] = [
    [['-s', '/messages'], {}, /no signing key: set TAILCAST_JWT_SECRET/],
    [[], { TAILCAST_JWT_SECRET: SECRET }, /give at least one --subscribe or --publish/],
    [['-s', 'messages'], { TAILCAST_JWT_SECRET: SECRET }, /the subscribe pattern "messages" matches no stream: a stream path is \/v1\/competitions/],
    [['-P', 'vip'], { TAILCAST_JWT_SECRET: SECRET }, /a publish pattern is room:NAME, competition:ID or competitions/],
    [['-s', '/messages', '-e', 'soon'], { TAILCAST_JWT_SECRET: SECRET }, /--expires must be a time span/],
    [['-s', '/messages', '--key', join(dir, 'public.pem')], {}, /not a PEM private key/],
  ]
  for (const [args, env, message] of errors) {
    const r = await cli(args, env)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, message)
    t.notOk(r.stderr.includes(SECRET), 'the secret is not shown')
  }
})
