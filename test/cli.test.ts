import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { spawnServer } from './helpers/process.js'
import { freePort } from './helpers/server.js'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }

/** Run the built CLI to its end (`npm test` builds dist/ first). */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })))
}

t.test('--help lists the commands, serve\'s options (--port, --host, --config, --print-config) and --version', async (t) => {
  for (const args of [['--help'], ['help']]) {
    const help = await cli(args)
    t.equal(help.code, 0, `${args[0]}: exit 0`)
    t.equal(help.stderr, '')
    for (const word of ['serve [options]', 'record [options]', 'replay [options]', '-V, --version', '-p, --port <port>', '--host <host>', '-c, --config <file>', '--print-config', '--upstream <url>']) {
      t.ok(help.stdout.includes(word), `${args[0]} shows ${word}`)
    }
    t.notMatch(help.stdout, /words/, 'no internal argument shown')
  }
  const serveHelp = await cli(['serve', '--help'])
  t.match(serveHelp.stdout, /Precedence: these options > environment variables > config file > config\/default.json/)
})

t.test('--version prints the version of package.json', async (t) => {
  for (const flag of ['--version', '-V']) {
    const out = await cli([flag])
    t.same({ code: out.code, stdout: out.stdout, stderr: out.stderr }, { code: 0, stdout: `${version}\n`, stderr: '' }, flag)
  }
})

t.test('usage errors exit with code 2 and say what is wrong', async (t) => {
  const cases: [string[], RegExp][] = [
    [['foo'], /unknown command 'foo'\. Commands: serve, record, replay, token, help/],
    [['srve', '--port', '1'], /unknown command 'srve'/],
    [['serve', 'foo'], /serve takes no arguments, got 'foo'/],
    [['--port', '1', 'record'], /the command comes first: tailcast record \[options\]/],
    [['serve', '--prot', '1'], /unknown option '--prot'[\s\S]*Did you mean --port\?/],
    [['--port', 'eighty'], /--port <port>' argument 'eighty' is invalid\. expected a port number 0-65535/],
    [['serve', '--port', '70000'], /argument '70000' is invalid/],
    [['replay'], /required option '-f, --file <file>' not specified/],
    [['record', '--url'], /option '-u, --url <url>' argument missing/],
  ]
  const results = await Promise.all(cases.map(([args]) => cli(args)))
  cases.forEach(([args, message], i) => {
    t.equal(results[i].code, 2, `${args.join(' ')}: exit code 2`)
    t.match(results[i].stderr, message, `${args.join(' ')}: ${message}`)
    t.equal(results[i].stdout, '', `${args.join(' ')}: nothing on stdout`)
  })
})

t.test('serve --port/--host/--config: options over environment over file over defaults', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'config.json')
  writeFileSync(file, JSON.stringify({ port: 7001, host: '10.0.0.1', streams: { retryMs: 77 }, post: { open: true } }))
  const printed = async (args: string[], env: Record<string, string> = {}): Promise<{ port: number; host: string; streams: { retryMs: number } }> => {
    const out = await cli([...args, '--print-config'], env)
    t.equal(out.code, 0, `${args.join(' ')}: exit 0 (${out.stderr.trim()})`)
    return JSON.parse(out.stdout)
  }
  t.match(await printed([]), { port: 8080, host: '127.0.0.1', post: { open: false } }, 'defaults')
  t.match(await printed(['--config', file]), { port: 7001, host: '10.0.0.1', streams: { retryMs: 77 } }, 'file over defaults')
  t.match(await printed(['-c', file], { PORT: '7002', HOST: '10.0.0.2' }), { port: 7002, host: '10.0.0.2', streams: { retryMs: 77 } }, 'environment over file')
  t.match(await printed(['serve', '--config', file, '--port', '7003', '--host', '10.0.0.3'], { PORT: '7002', HOST: '10.0.0.2' }), { port: 7003, host: '10.0.0.3', streams: { retryMs: 77 } }, 'options over environment')

  // And the server really listens where --port says, not on env PORT.
  const [cliPort, envPort] = [await freePort(), await freePort()]
  const server = await spawnServer({ PORT: String(envPort) }, ['--port', String(cliPort), '--host', '127.0.0.1'])
  t.teardown(() => server.kill('SIGKILL'))
  t.equal((await fetch(`http://127.0.0.1:${cliPort}/health`)).status, 200, `listening on --port ${cliPort}`)
  await t.rejects(fetch(`http://127.0.0.1:${envPort}/health`), 'not on env PORT')
  t.same(await server.kill('SIGTERM'), { code: 0, signal: null })
})

t.test('serve --upstream: a malformed URL is shown with only its credentials hidden; a wrong one is not ready and says why', async (t) => {
  const bad = await cli(['serve', '--upstream', 'htps://bob:hunter2@up.example:8080/messages?room=a&token=hunter2'])
  t.equal(bad.code, 2, 'a config error exits 2')
  t.match(bad.stderr, /upstream\.url = "htps:\/\/\[redacted\]@up\.example:8080\/messages\?room=a&token=\[redacted\]": must match pattern/, 'the typo can be seen')
  t.notMatch(bad.stderr, /hunter2|bob/)

  const producer = await spawnServer()
  t.teardown(() => producer.kill('SIGKILL'))
  const relay = await spawnServer({}, ['--upstream', `${producer.url}/health`], { until: '/health' })
  t.teardown(() => relay.kill('SIGKILL'))
  let ready = await relay.ready()
  for (let i = 0; i < 250 && !/not a stream/.test(String(ready.body.upstream)); i++) {
    await new Promise((r) => setTimeout(r, 20))
    ready = await relay.ready()
  }
  t.equal(ready.status, 503)
  t.match(ready.body, { status: 'not ready', upstream: /relaying stopped: http:\/\/127\.0\.0\.1:\d+\/health answered 200: application\/json.*not a stream/ })
  const stream = await fetch(`${relay.url}/messages`, { headers: { accept: 'text/event-stream' } })
  t.equal(stream.status, 503, 'a stream request gets 503')
  t.match(await stream.json(), { statusCode: 503, error: 'Service Unavailable', message: /not a stream/ })
  t.match(relay.output(), /upstream refused: .*not a stream/, 'the log says it too')
})

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'

t.test('safe by default: open posting on a non-loopback address refuses to start (exit 2) and names the ways out', async (t) => {
  const port = await freePort()
  for (const [what, args, env] of [
    ['--host 0.0.0.0', ['serve', '--host', '0.0.0.0', '--port', String(port)], {}],
    ['HOST=::', ['serve', '--port', String(port)], { HOST: '::' }],
    ['a host name', ['--host', 'tailcast.example', '--port', String(port)], {}],
  ] as [string, string[], Record<string, string>][]) {
    const out = await cli(args, env)
    t.equal(out.code, 2, `${what}: exit 2`)
    t.match(out.stderr, /^tailcast: refusing to start: POST \/messages would be open to anyone who reaches /, `${what}: says why`)
    t.match(out.stderr, /TAILCAST_POST_TOKEN=.*\(post\.token\)/, `${what}: way out 1, a token`)
    t.match(out.stderr, /TAILCAST_POST_OPEN=true \(post\.open\)/, `${what}: way out 2, open posting said explicitly`)
    t.equal(out.stdout, '')
  }
  await t.rejects(fetch(`http://127.0.0.1:${port}/health`), 'nothing listens')

  // Either way out starts it; loopback (the default) needs neither; a relay takes no posts.
  for (const [what, env, args] of [
    ['a post token', { HOST: '0.0.0.0', TAILCAST_POST_TOKEN: 'a-post-token' }, []],
    ['post.open', { HOST: '0.0.0.0', TAILCAST_POST_OPEN: 'true' }, []],
    ['a JWT key', { HOST: '0.0.0.0', TAILCAST_JWT_SECRET: SECRET }, []],
    ['posting disabled', { HOST: '0.0.0.0', TAILCAST_POST_ENABLED: 'false' }, []],
    ['loopback', { HOST: '127.0.0.1' }, []],
  ] as [string, Record<string, string>, string[]][]) {
    const server = await spawnServer(env, args, { until: '/health' })
    t.equal((await fetch(`${server.url}/health`)).status, 200, `${what}: serving`)
    t.same(await server.kill('SIGTERM'), { code: 0, signal: null }, `${what}: stops cleanly`)
  }
})

/** `--print-config`'s banner (stderr) as label -> value, and its warnings. */
async function printedBanner(t: Test, env: Record<string, string>, args: string[] = []): Promise<{ code: number | null; lines: Record<string, string>; warnings: string[]; stderr: string }> {
  const out = await cli([...args, '--print-config'], env)
  const lines: Record<string, string> = {}
  const warnings: string[] = []
  for (const line of out.stderr.split('\n')) {
    const w = /^warning: (.*)$/.exec(line)
    if (w !== null) warnings.push(w[1])
    const m = /^([a-z]+):\s+(.*)$/.exec(line)
    if (m !== null && w === null) lines[m[1]] = m[2]
  }
  t.doesNotThrow(() => JSON.parse(out.stdout), 'stdout stays the configuration as JSON')
  return { code: out.code, lines, warnings, stderr: out.stderr }
}

t.test('the startup banner: version, runtime, listen address and page, store, NATS, upstream, auth, posting', async (t) => {
  const base = await printedBanner(t, {})
  t.equal(base.code, 0)
  t.match(base.lines, {
    version: `tailcast ${version}`,
    runtime: new RegExp(`^Node ${process.version.replace(/\./g, '\\.')}`),
    listening: 'http://127.0.0.1:8080',
    page: 'http://127.0.0.1:8080/',
    store: /^embedded: not persistent, 10000 events \(store\.capacity\)/,
    nats: /^off/,
    upstream: 'off',
    auth: /^off: every stream is public/,
    posting: /^open: anyone who reaches the port may post$/,
  }, 'defaults: embedded store, open posting on loopback')

  const mongo = await printedBanner(t, { TAILCAST_STORE: 'mongodb', MONGODB_URL: 'mongodb://bob:hunter2@db.example:27017/?replicaSet=rs0', TAILCAST_POST_TOKEN: 'tok', TAILCAST_STORE_CAPACITY: '500' })
  t.match(mongo.lines, { store: 'MongoDB mongodb://[redacted]@db.example:27017/?replicaSet=rs0, tailcast.messages', posting: /^with the post token/ }, 'MongoDB and a post token')
  t.notMatch(mongo.stderr, /hunter2|bob/, 'no credentials')

  const nats = await printedBanner(t, { NATS_URL: 'nats://tok3n@n1.example:4222', TAILCAST_JWT_SECRET: SECRET, HOST: '0.0.0.0', PORT: '9000' })
  t.match(nats.lines, { nats: 'nats://[redacted]@n1.example:4222, stream TAILCAST', auth: /^JWT \(HS256 secret/, posting: /^with a JWT whose "tailcast\.publish" claim/, listening: 'http://0.0.0.0:9000', page: 'http://localhost:9000/' }, 'NATS and JWTs on every interface')
  t.equal(nats.code, 0, 'a JWT key: not refused off loopback')

  const both = await printedBanner(t, { TAILCAST_JWT_SECRET: SECRET, TAILCAST_POST_TOKEN: 'tok' })
  t.match(both.lines, { posting: /^with the post token or a JWT/ })

  const relay = await printedBanner(t, { HOST: '0.0.0.0', TAILCAST_UPSTREAM_PUBLIC: 'true' }, ['--upstream', 'wss://up.example/messages?room=a&access_token=secret1'])
  t.match(relay.lines, { upstream: 'relaying wss://up.example/messages?room=a&access_token=[redacted]', posting: /^none: a read-only relay/ }, 'a relay')
  t.equal(relay.code, 0, 'a relay is never refused for open posting')

  const disabled = await printedBanner(t, { TAILCAST_POST_ENABLED: 'false' })
  t.match(disabled.lines, { posting: /^disabled/ })

  const open = await printedBanner(t, { HOST: '0.0.0.0', TAILCAST_POST_OPEN: 'true' })
  t.match(open.lines, { posting: 'open: anyone who reaches the port may post (post.open = true)' })
  const refused = await printedBanner(t, { HOST: '0.0.0.0' })
  t.equal(refused.code, 2, '--print-config checks as serve would: exit 2')
  t.match(refused.lines, { posting: /serve refuses to start/ })
  t.match(refused.stderr, /refusing to start/)
})

t.test('a setting given but unused is a warning, not silence', async (t) => {
  const out = await printedBanner(t, { MONGODB_URL: 'mongodb://db.example:27017', TAILCAST_UPSTREAM_TOKEN: 'x', TAILCAST_NATS_REPLICAS: '3' })
  t.equal(out.code, 0)
  t.match(out.lines, { store: /^embedded/ }, 'MONGODB_URL alone does not choose the store')
  t.ok(out.warnings.some((w) => /^store\.mongodb\.url \(env MONGODB_URL\) is set but store\.type is "memory": not used; set TAILCAST_STORE=mongodb/.test(w)), 'MONGODB_URL with the embedded store')
  t.ok(out.warnings.some((w) => /^upstream\.token .* is set but upstream\.url is not/.test(w)), 'an upstream token without an upstream')
  t.ok(out.warnings.some((w) => /^nats\.replicas .* is set but nats\.url is not/.test(w)), 'NATS replicas without NATS')

  // And in the log of a running server: the banner at info, one block, then the warnings.
  const server = await spawnServer({ LOG_LEVEL: 'info', MONGODB_URL: 'mongodb://db.example:27017' })
  t.teardown(() => server.kill('SIGKILL'))
  await server.kill('SIGTERM')
  const lines = server.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>)
  const started = lines.filter((l) => l.startup !== undefined)
  t.equal(started.length, 1, 'one banner block')
  t.match(started[0], { level: 30, msg: /^tailcast started\nversion: +tailcast /, startup: { listening: `http://127.0.0.1:${server.port}`, page: `http://127.0.0.1:${server.port}/`, store: /^embedded: not persistent/ } })
  t.ok(lines.some((l) => l.level === 40 && /MONGODB_URL\) is set but store\.type is "memory"/.test(l.msg)), 'the warning is logged at warn')
  const order = lines.map((l) => l.msg as string)
  const down = order.findIndex((m) => /^shutting down/.test(m))
  const storeClosed = order.findIndex((m) => /the store closed/.test(m))
  t.ok(down >= 0 && storeClosed > down, `"shutting down" comes before "the store closed" (${down}, ${storeClosed})`) || t.comment(server.output())
})

t.test('configuration errors exit 2 everywhere; a backing service that cannot be used at start exits 1, named with its setting', async (t) => {
  const closed = await freePort()
  const cases: [string, string[], Record<string, string>, number, RegExp][] = [
    ['workers > 1 on the embedded store', [], { TAILCAST_WORKERS: '2' }, 2, /workers > 1 needs a shared store: set store\.type to "mongodb" \(env TAILCAST_STORE/],
    ['an invalid value', [], { TAILCAST_STORE: 'redis' }, 2, /store\.type = "redis": must be equal to one of the allowed values/],
    ['open posting off loopback', ['--host', '0.0.0.0'], {}, 2, /refusing to start/],
    ['a config file that does not exist', ['-c', '/nonexistent/tailcast.json'], {}, 2, /cannot read config file \/nonexistent\/tailcast\.json/],
    [
      'a configuration error found in the workers',
      [],
      { TAILCAST_WORKERS: '2', TAILCAST_STORE: 'mongodb', TAILCAST_JWT_PUBLIC_KEY_FILE: '/nonexistent.pem', MONGODB_URL: `mongodb://127.0.0.1:${closed}/?serverSelectionTimeoutMS=500` },
      2,
      /auth\.jwt\.publicKeyFile \/nonexistent\.pem: not a readable PEM public key[\s\S]*a configuration error, above\); stopping/,
    ],
    [
      'MongoDB refusing connections',
      [],
      { TAILCAST_STORE: 'mongodb', MONGODB_URL: `mongodb://bob:hunter2@127.0.0.1:${closed}/?serverSelectionTimeoutMS=1000` },
      1,
      new RegExp(`^tailcast: MongoDB at mongodb://\\[redacted\\]@127\\.0\\.0\\.1:${closed}/\\?serverSelectionTimeoutMS=1000 cannot be used: .*ECONNREFUSED.* \\(the address is store\\.mongodb\\.url, env MONGODB_URL\\)\\n$`),
    ],
    ['NATS refusing connections', [], { NATS_URL: `nats://127.0.0.1:${closed}` }, 1, new RegExp(`^tailcast: NATS at nats://127\\.0\\.0\\.1:${closed} cannot be used: .* \\(the address is nats\\.url, env NATS_URL\\)\\n$`)],
  ]
  const results = await Promise.all(cases.map(([, args, env]) => cli(['serve', '--port', String(closed), ...args], env)))
  cases.forEach(([what, , , code, message], i) => {
    t.equal(results[i].code, code, `${what}: exit ${code}`)
    t.match(results[i].stderr, message, `${what}: ${results[i].stderr.trim().split('\n')[0]}`)
    t.notMatch(results[i].stderr, /hunter2|at [A-Za-z.]+ \(|\.js:\d+/, `${what}: no credentials, no stack`)
  })
})

t.test('token checks stream patterns and post targets as the server reads them', async (t) => {
  const env = { TAILCAST_JWT_SECRET: SECRET }
  const bad: [string[], RegExp][] = [
    [['-s', '/nope'], /the subscribe pattern "\/nope" matches no stream: a stream path is \/v1\/competitions, \/v1\/competitions\/ID, \/messages or \/messages\?room=ROOM/],
    [['-s', 'messages'], /the subscribe pattern "messages" matches no stream/],
    [['-s', '/messages?room=a b'], /the subscribe pattern "\/messages\?room=a b" matches no stream/],
    [['-s', '/v1/competitions/a/b'], /matches no stream/],
    [['-s', '/messages?room=vip&x=1'], /matches no stream/],
    [['-P', 'room'], /a publish pattern is room:NAME, competition:ID or competitions \(the list\), got "room"/],
    [['-P', 'room:'], /the publish pattern "room:" matches no room/],
    [['-P', 'room:bad room'], /the publish pattern "room:bad room" matches no room: a room is 1-128 letters/],
    [['-P', 'competition:-x'], /the publish pattern "competition:-x" matches no competition: a competition id is/],
  ]
  const results = await Promise.all(bad.map(([args]) => cli(['token', ...args], env)))
  bad.forEach(([args, message], i) => {
    t.equal(results[i].code, 2, `${args.join(' ')}: exit 2`)
    t.match(results[i].stderr, message, `${args.join(' ')}: ${results[i].stderr.trim()}`)
    t.equal(results[i].stdout, '', `${args.join(' ')}: no token printed`)
  })
  const good = await cli(['token', '-s', '/v1/competitions', '-s', '/v1/competitions/*', '-s', '/messages', '-s', '/messages?room=team-*', '-P', 'room:*', '-P', 'competition:c-42'], env)
  t.equal(good.code, 0, good.stderr)
  t.match(good.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'a JWT')
})
