import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
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
