import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { delimiter } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { freePort } from './helpers/server.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
const pinned: string = pkg.optionalDependencies.node
const major = (version: string): number => Number(/^v?(\d+)\./.exec(version)?.[1])

t.test('the pinned runtime is one place: package.json, README and .ci/run agree, @types/node and engines match it', async (t) => {
  t.match(pinned, /^\d+\.\d+\.\d+$/, 'an exact version')
  t.ok(major(pinned) >= 24, 'a supported LTS')
  t.equal(major(pkg.devDependencies['@types/node'].replace(/^\D+/, '')), major(pinned), '@types/node of the same major')
  const engines = /^>=(\d+)\.(\d+)$/.exec(pkg.engines.node)
  t.ok(engines && major(pinned) >= Number(engines[1]), `engines.node (${pkg.engines.node}) admits the pinned ${pinned}`)
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const ci = readFileSync(new URL('../.ci/run', import.meta.url), 'utf8')
  t.same([...new Set(readme.match(/node@[\d.]+/g))], [`node@${pinned}`], 'the README installs with the pinned node')
  t.same([...new Set(ci.match(/node@[\d.]+/g))], [`node@${pinned}`], '.ci/run installs with the pinned node')
})

// The pinned major: `npm ci --omit=optional` on a machine's own Node 24 passes too (README "Runtime").
t.test('the tests run on the pinned major', async (t) => {
  t.equal(major(process.version), major(pinned), process.version)
})

t.test('npm start runs the server on the pinned major even when the npm that starts it runs on another node', async (t) => {
  // The machine's own PATH: without the node_modules/.bin directories (and npx's) that npm test puts first.
  const PATH = (process.env.PATH ?? '').split(delimiter).filter((dir) => !dir.includes('node_modules')).join(delimiter)
  const port = await freePort()
  const child = spawn('npm', ['start'], {
    cwd: ROOT,
    env: { PATH, HOME: process.env.HOME ?? '', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d))
  child.stderr.on('data', (d: Buffer) => (out += d))
  const exited = new Promise((resolve) => child.once('exit', resolve))
  t.teardown(async () => {
    if (child.exitCode === null) {
      process.kill(-child.pid!, 'SIGTERM')
      await exited
    }
  })
  let health: { status: string; node: string } | undefined
  for (const deadline = Date.now() + 30_000; health === undefined && Date.now() < deadline; ) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`)
      if (res.ok) health = await res.json()
    } catch {
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  t.ok(health, `npm start answered /health within 30 s:\n${out}`)
  t.equal(health?.status, 'ok')
  t.equal(major(health?.node ?? ''), major(pinned), `the server runs on the pinned major (${health?.node})`)
})
