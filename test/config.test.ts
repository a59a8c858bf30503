import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { Ajv } from 'ajv'
import { ConfigError, ConfigSchema, ENV_KEYS, loadConfig, redact, redactUrl, UpstreamConfigSchema } from '../src/config.js'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
const run = promisify(execFile)

function fileWith(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-config-'))
  const path = join(dir, 'config.json')
  writeFileSync(path, content)
  return path
}

t.test('defaults < file < environment', async (t) => {
  const file = fileWith(JSON.stringify({ port: 9000, store: { capacity: 50 }, streams: { retryMs: 10 } }))
  const c = loadConfig({ file, env: { PORT: '9100', TAILCAST_CORS_ORIGINS: 'https://a.example, https://b.example', TAILCAST_POST_ENABLED: 'false' } })
  t.equal(c.port, 9100, 'env over file')
  t.equal(c.store.capacity, 50, 'file over default')
  t.equal(c.streams.retryMs, 10)
  t.equal(c.streams.heartbeatSeconds, 15, 'default')
  t.same(c.cors.origins, ['https://a.example', 'https://b.example'])
  t.equal(c.post.enabled, false)
})

/** Each invalid setting and what its error must name. */
const INVALID: { name: string; file?: unknown; env?: Record<string, string>; error: RegExp }[] = [
  { name: 'port out of range', env: { PORT: '70000' }, error: /port = 70000: must be <= 65535/ },
  { name: 'port not a number', env: { PORT: 'eighty' }, error: /PORT="eighty": expected a number/ },
  { name: 'unknown store type', env: { TAILCAST_STORE: 'redis' }, error: /store.type = "redis": must be equal to one of the allowed values: allowed "memory", "mongodb"/ },
  { name: 'capacity zero', file: { store: { capacity: 0 } }, error: /store.capacity = 0: must be >= 1/ },
  { name: 'capacity fractional', file: { store: { capacity: 1.5 } }, error: /store.capacity = 1.5: must be integer/ },
  { name: 'log level', env: { LOG_LEVEL: 'loud' }, error: /logLevel = "loud".*allowed "fatal"/ },
  { name: 'body limit too small', env: { TAILCAST_BODY_LIMIT: '10' }, error: /bodyLimit = 10: must be >= 256/ },
  { name: 'boolean', env: { TAILCAST_POST_ENABLED: 'maybe' }, error: /TAILCAST_POST_ENABLED="maybe": expected true or false/ },
  { name: 'heartbeat negative', env: { TAILCAST_HEARTBEAT_SECONDS: '-1' }, error: /streams.heartbeatSeconds = -1: must be >= 0.01/ },
  { name: 'unknown key', file: { stores: {} }, error: /unknown key "stores"/ },
  { name: 'unknown nested key', file: { streams: { heartbeat: 3 } }, error: /unknown key "streams.heartbeat"/ },
  // A URL is shown without its credentials, so the typo can be seen.
  { name: 'mongodb url scheme', env: { MONGODB_URL: 'http://user:hunter2@db' }, error: /store.mongodb.url = "http:\/\/\[redacted\]@db": must match pattern/ },
  { name: 'upstream url scheme typo', env: { TAILCAST_UPSTREAM: 'htps://bob:hunter2@up.example/v1/competitions?room=a&token=hunter2' }, error: /upstream.url = "htps:\/\/\[redacted\]@up.example\/v1\/competitions\?room=a&token=\[redacted\]": must match pattern/ },
  { name: 'upstream url without its colon', env: { TAILCAST_UPSTREAM: 'wss//bob:hunter2@up.example/messages' }, error: /upstream.url = "wss\/\/\[redacted\]@up.example\/messages"/ },
  { name: 'upstream url with one slash', env: { TAILCAST_UPSTREAM: 'wss:/bob:hunter2@up.example/messages' }, error: /upstream.url = "wss:\/\[redacted\]@up.example\/messages"/ },
  { name: 'upstream url without a scheme', file: { upstream: { url: 'bob:hunter2@up.example/messages' } }, error: /upstream.url = "\[redacted\]@up.example\/messages"/ },
  { name: 'nats url scheme typo', env: { NATS_URL: 'nat://tok-hunter2@h1:4222' }, error: /nats.url = "nat:\/\/\[redacted\]@h1:4222"/ },
  { name: 'an upstream url that is not a string', file: { upstream: { url: 1234 } }, error: /upstream.url = "\[redacted\]": must be string/ },
  { name: 'cors origins type', file: { cors: { origins: 'everyone' } }, error: /cors.origins = "everyone": must be array/ },
  { name: 'a string where the MongoDB settings go', file: { store: { mongodb: 'mongodb://bob:hunter2@h' } }, error: /store.mongodb = \(a string, value hidden\): must be object/ },
  { name: 'a string where the post settings go', file: { post: 'hunter2' }, error: /post = \(a string, value hidden\): must be object/ },
  { name: 'an array where the NATS settings go', file: { nats: ['nats://u:hunter2@h'] }, error: /nats = \(an array, value hidden\): must be object/ },
  { name: 'a token that is not a string', file: { post: { token: 1234 } }, error: /post.token = "\[redacted\]": must be string/ },
  { name: 'file not JSON', file: '{ port: 1 ', error: /is not valid JSON/ },
  { name: 'file not JSON at a secret', file: '{"post": {"token": hunter2}}', error: /is not valid JSON.*line 1/ },
  { name: 'file not an object', file: '[1]', error: /must hold a JSON object/ },
  { name: 'trustProxy not an address', env: { TAILCAST_TRUST_PROXY: '10.0.0.1, nginx.local' }, error: /trustProxy.1 = "nginx.local": must match pattern/ },
  { name: 'a private upstream relayed without auth', env: { TAILCAST_UPSTREAM: 'ws://u/messages', TAILCAST_UPSTREAM_TOKEN: 'hunter2' }, error: /no auth of its own.*TAILCAST_UPSTREAM_PUBLIC=true/ },
]

t.test('TAILCAST_TRUST_PROXY: a comma-separated list of addresses and CIDRs', async (t) => {
  t.same(loadConfig({ env: {} }).trustProxy, [], 'off by default: X-Forwarded-For is not believed')
  t.same(loadConfig({ env: { TAILCAST_TRUST_PROXY: '127.0.0.1, 10.0.0.0/8,::1,loopback' } }).trustProxy, ['127.0.0.1', '10.0.0.0/8', '::1', 'loopback'])
})

for (const bad of INVALID) {
  t.test(`invalid: ${bad.name}`, async (t) => {
    const file = bad.file === undefined ? undefined : fileWith(typeof bad.file === 'string' ? bad.file : JSON.stringify(bad.file))
    t.throws(() => loadConfig({ file, env: bad.env ?? {} }), ConfigError)
    t.throws(() => loadConfig({ file, env: bad.env ?? {} }), { message: bad.error })
    try {
      loadConfig({ file, env: bad.env ?? {} })
    } catch (err) {
      t.notMatch((err as Error).message, /hunter2|1234/, 'no secret in the error')
    }
  })
}

t.test('the exported schema is the one loadConfig checks: it accepts the defaults and its pieces validate alone', async (t) => {
  const defaults = JSON.parse(readFileSync(new URL('../config/default.json', import.meta.url), 'utf8'))
  const ajv = new Ajv({ allErrors: true, strict: true })
  t.ok(ajv.validate(ConfigSchema, defaults), 'config/default.json matches ConfigSchema')
  t.same(Object.keys(ConfigSchema.properties).sort(), Object.keys(defaults).sort(), 'one schema property per top-level key')
  t.same(loadConfig({ env: {} }), defaults, 'loadConfig returns the validated tree as it is')
  t.notOk(ajv.validate(UpstreamConfigSchema, { ...defaults.upstream, url: 'ftp://x' }), 'a piece rejects what loadConfig rejects')
})

t.test('a missing config file is an error naming it', async (t) => {
  t.throws(() => loadConfig({ file: '/nonexistent/tailcast.json', env: {} }), { message: /cannot read config file \/nonexistent\/tailcast.json/ })
})

t.test('redact hides the token and the credentials of the MongoDB URL', async (t) => {
  const c = loadConfig({ env: { TAILCAST_POST_TOKEN: 'hunter2', MONGODB_URL: 'mongodb://admin:hunter2@db.example:27017/?tls=true' } })
  const out = JSON.stringify(redact(c))
  t.notMatch(out, /hunter2/)
  t.match(out, /mongodb:\/\/\[redacted\]@db.example:27017/)
  t.equal((redact(c).post as { token: string }).token, '[redacted]')
})

t.test('redactUrl hides user info and secret query parameters in every URL of a list, and keeps the rest visible', async (t) => {
  const cases: [string, string][] = [
    ['nats://tok@h1:4222,nats://user:pass@h2:4222', 'nats://[redacted]@h1:4222,nats://[redacted]@h2:4222'],
    ['mongodb://bob:p,w@h1,h2:27018/db?replicaSet=rs&authSource=admin', 'mongodb://[redacted]@h1,h2:27018/db?replicaSet=rs&authSource=admin'],
    ['wss://up.exmaple/v1/competitions?token=t0k&room=a', 'wss://up.exmaple/v1/competitions?token=[redacted]&room=a'],
    ['https://h/s?a=1&ACCESS_TOKEN=x&Auth=y&password=z&secret=s&key=k&apikey=k&api_key=k&jwt=j&client_secret=c&b=2#frag', 'https://h/s?a=1&ACCESS_TOKEN=[redacted]&Auth=[redacted]&password=[redacted]&secret=[redacted]&key=[redacted]&apikey=[redacted]&api_key=[redacted]&jwt=[redacted]&client_secret=[redacted]&b=2#frag'],
    ['/messages?room=r&access_token=eyJhbGc.x.y', '/messages?room=r&access_token=[redacted]'],
    ['connect to mongodb://bob:pw@db:27017/?tls=true failed (token=abc)', 'connect to mongodb://[redacted]@db:27017/?tls=true failed (token=abc)'],
    ['ws://h/x?keyboard=1&monkey=2', 'ws://h/x?keyboard=1&monkey=2'],
    // Judged on the name the server reads: percent-decoded (once or more), and undecodable ones hidden.
    ['/messages?room=r&access_toke%6E=eyJ.x.y', '/messages?room=r&access_toke%6E=[redacted]'],
    ['/messages?%61ccess_token=a&%2561ccess_token=b&r%6Fom=r', '/messages?%61ccess_token=[redacted]&%2561ccess_token=[redacted]&r%6Fom=r'],
    ['/x?tok%E0en=a&page%20=2', '/x?tok%E0en=[redacted]&page%20=2'],
    ['', ''],
  ]
  for (const [url, want] of cases) t.equal(redactUrl(url), want, url)
})

t.test('redact hides every URL of a NATS server list and tokens in the upstream query', async (t) => {
  const nats = JSON.stringify(redact(loadConfig({ env: { NATS_URL: 'nats://tok-hunter2@h1:4222,nats://user:pass-hunter2@h2:4222' } })))
  t.notMatch(nats, /hunter2/)
  t.match(nats, /nats:\/\/\[redacted\]@h1:4222,nats:\/\/\[redacted\]@h2:4222/, 'both hosts stay visible')
  const up = redact(loadConfig({ env: { TAILCAST_UPSTREAM: 'wss://up.example/v1/competitions?room=a&token=hunter2', TAILCAST_UPSTREAM_PUBLIC: 'true' } }))
  t.equal((up.upstream as { url: string }).url, 'wss://up.example/v1/competitions?room=a&token=[redacted]')
})

t.test('--print-config prints the effective config, secrets redacted; every env name is documented', async (t) => {
  const { stdout } = await run(process.execPath, [CLI, '--print-config'], {
    env: { PATH: process.env.PATH, PORT: '9999', TAILCAST_POST_TOKEN: 'hunter2', MONGODB_URL: 'mongodb://u:hunter2@h/', TAILCAST_UPSTREAM: 'ws://up.example:8080/v1/competitions?token=hunter2', TAILCAST_UPSTREAM_PUBLIC: 'true' },
  })
  const printed = JSON.parse(stdout)
  t.equal(printed.port, 9999)
  t.equal(printed.post.token, '[redacted]')
  t.notMatch(stdout, /hunter2/)
  t.equal(printed.upstream.url, 'ws://up.example:8080/v1/competitions?token=[redacted]', 'host and path of the upstream stay visible')
  const { readFile } = await import('node:fs/promises')
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
  for (const name of Object.keys(ENV_KEYS)) t.match(readme, `\`${name}\``, `README documents ${name}`)
  const keys = (o: Record<string, unknown>, prefix = ''): string[] =>
    Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v) ? keys(v as Record<string, unknown>, `${prefix}${k}.`) : [`${prefix}${k}`]))
  for (const key of keys(printed)) t.match(readme, `| \`${key}\` |`, `README's configuration table has ${key}`)
})

t.test('an invalid config stops the server with exit code 2 and the reason', async (t) => {
  const err = await run(process.execPath, [CLI], { env: { PATH: process.env.PATH, PORT: 'x' } }).catch((e: { code: number; stderr: string }) => e)
  t.match(err, { code: 2, stderr: /tailcast: PORT="x": expected a number/ })
})

t.test('every CORS list can be set from the environment; the default allows what the API asks of clients', async (t) => {
  const d = loadConfig({ env: {} })
  for (const h of ['Idempotency-Key', 'Last-Event-ID', 'Authorization', 'Content-Type']) t.ok(d.cors.headers.includes(h), `${h} is allowed by default`)
  t.same(d.cors.exposedHeaders, ['Retry-After'])
  const c = loadConfig({
    env: { TAILCAST_CORS_METHODS: 'GET, POST', TAILCAST_CORS_HEADERS: 'Content-Type,Idempotency-Key', TAILCAST_CORS_EXPOSED_HEADERS: 'Retry-After, X-Request-Id' },
  })
  t.same(c.cors, { origins: ['*'], methods: ['GET', 'POST'], headers: ['Content-Type', 'Idempotency-Key'], exposedHeaders: ['Retry-After', 'X-Request-Id'] })
})

/** GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`; repeats get -1, -2. */
function anchors(markdown: string): { level: number; text: string; anchor: string }[] {
  const seen = new Map<string, number>()
  const out: { level: number; text: string; anchor: string }[] = []
  let fence = false
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fence = !fence
    const m = fence ? null : /^(#{2,3}) (.+)$/.exec(line)
    if (m === null) continue
    const base = m[2].toLowerCase().replace(/[^\p{L}\p{N}_\- ]/gu, '').replace(/ /g, '-')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    out.push({ level: m[1].length, text: m[2], anchor: n === 0 ? base : `${base}-${n}` })
  }
  return out
}

t.test('README: the table of contents lists every section, and every link in it (and every #link) leads to a heading', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const headings = anchors(readme)
  const toc = readme.slice(readme.indexOf('## Contents\n'), readme.indexOf('\n## ', readme.indexOf('## Contents\n') + 1))
  t.ok(toc.length > 0, 'a Contents section')
  const listed = new Set([...toc.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]))
  for (const h of headings.filter((h) => h.level === 2 && h.text !== 'Contents')) t.ok(listed.has(h.anchor), `Contents lists "${h.text}" (#${h.anchor})`)
  const known = new Set(headings.map((h) => h.anchor))
  for (const [, link] of readme.matchAll(/\]\(#([^)]+)\)/g)) t.ok(known.has(link), `#${link} is a heading`)
})
