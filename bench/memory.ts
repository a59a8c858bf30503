/**
 * Memory per stored byte: `npm run bench:memory -- [--store memory|mongodb] [--events 4000] [--size 62000] [--budget BYTES] [--server-dist DIR]`
 * (`npm run bench:memory -- …` builds first). Starts tailcast (dist/) as a child process, measures its
 * idle RSS, posts `--events` events of `--size` bytes of text each (4 at a time), and prints RSS,
 * the `tailcast_memory_bytes` parts, the bytes of events the process holds and the ratios
 * RSS / held bytes and (RSS - idle) / held bytes. On `--store mongodb` (MONGODB_URL, a collection of
 * its own) the process holds only its hot history: the store's bytes are in MongoDB.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : def
}
const store = arg('--store', 'memory')
const events = Number(arg('--events', '4000'))
const size = Number(arg('--size', '62000'))
const budget = arg('--budget', '0')
/** Another build of tailcast (e.g. an older commit's dist/, for before/after). */
const dist = resolve(arg('--server-dist', resolve(repo, 'dist')))
const MB = 1024 * 1024

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo
      s.close(() => res(port))
    })
  })
}

const port = await freePort()
const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn', TAILCAST_MEMORY_BUDGET: budget }
if (store === 'mongodb') {
  if (process.env.MONGODB_URL === undefined) throw new Error('--store mongodb needs MONGODB_URL (bash scripts/test-services.sh run -- node dist-bench/memory.js --store mongodb)')
  Object.assign(env, { TAILCAST_STORE: 'mongodb', MONGODB_URL: process.env.MONGODB_URL, TAILCAST_MONGODB_COLLECTION: `bench_memory_${process.pid}`, TAILCAST_MONGODB_CAPPED_SIZE: String(2 * events * (size + 200) + MB) })
}
const child = spawn(process.execPath, [resolve(dist, 'cli.js'), 'serve'], { env, stdio: ['ignore', 'inherit', 'inherit'] })
const url = `http://127.0.0.1:${port}`
const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
try {
  const until = Date.now() + 60_000
  for (;;) {
    if (Date.now() > until) throw new Error('the server did not become ready in 60 s')
    try {
      if ((await fetch(`${url}/ready`)).ok) break
    } catch {}
    await new Promise((r) => setTimeout(r, 100))
  }
  await new Promise((r) => setTimeout(r, 1000))
  const idle = rss()
  let next = 0
  let posted = 0
  const started = Date.now()
  const worker = async (): Promise<void> => {
    while (next < events) {
      const i = next++
      const body = JSON.stringify({ type: 'T', room: 'bench', data: { i, s: 'x'.repeat(size) } })
      const res = await fetch(`${url}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
      await res.text()
      if (res.status !== 202) throw new Error(`post ${i}: ${res.status}`)
      posted += body.length
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()])
  const seconds = (Date.now() - started) / 1000
  const after = rss()
  const text = await (await fetch(`${url}/metrics`)).text()
  const parts: Record<string, number> = {}
  for (const m of text.matchAll(/^tailcast_memory_bytes\{part="(\w+)"\} (\d+)/gm)) parts[m[1]] = Number(m[2])
  const gauge = (name: string): number => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? NaN)
  const held = store === 'memory' ? parts.store : parts.history
  const sum = Object.values(parts).reduce((a, b) => a + b, 0)
  console.log(
    JSON.stringify(
      {
        store,
        events,
        eventBytes: size,
        postsPerSecond: Math.round(events / seconds),
        postedMB: +(posted / MB).toFixed(1),
        budgetMB: +(gauge('tailcast_memory_budget_bytes') / MB).toFixed(0),
        idleRssMB: +(idle / MB).toFixed(0),
        rssMB: +(after / MB).toFixed(0),
        partsMB: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, +(v / MB).toFixed(1)])),
        heldMB: +(held / MB).toFixed(1),
        rssPerPostedByte: +(after / posted).toFixed(2),
        rssPerHeldByte: +(after / held).toFixed(2),
        grownRssPerHeldByte: +((after - idle) / held).toFixed(2),
        rssMinusIdleMinusPartsMB: +((after - idle - sum) / MB).toFixed(0),
      },
      null,
      1,
    ),
  )
} finally {
  child.kill('SIGKILL')
}
