import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MongoClient } from 'mongodb'
import { MongoEventStore } from '../../src/store/mongo-store.js'
import { dataEvents, Follower, postTo } from '../helpers/clients.js'
import { waitUntil } from '../helpers/wait.js'

const LOCAL_SH = fileURLToPath(new URL('../../deploy/local.sh', import.meta.url))
const CLIENTS = 20
const ROOM = 'roll'
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** `bash deploy/local.sh ARGS` with exactly this environment (PATH and HOME kept): code, output, time. */
function localSh(env: Record<string, string>, ...args: string[]): Promise<{ code: number; out: string; ms: number }> {
  const started = performance.now()
  return new Promise((resolve) => {
    execFile('bash', [LOCAL_SH, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env }, timeout: 180_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? Number((err as { code: number }).code) : 1
      resolve({ code, out: `${stdout}${stderr}`, ms: performance.now() - started })
    })
  })
}

const free = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })

/** A base port whose 21 ports (local.sh: base .. base+20) are all free. */
async function freeBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 400) * 50
    const ports = Array.from({ length: 21 }, (_, i) => base + i)
    if ((await Promise.all(ports.map(free))).every(Boolean)) return base
  }
  throw new Error('no free range of 21 ports found')
}

interface Post {
  text: string
  sentAt: number
  status: number
  body: any
}

/**
 * deploy/local.sh as an operator runs it, on non-default ports (one base port), with its own
 * FerretDB and NATS cluster: `status` from a shell that knows only the data directory, a port
 * conflict refused before anything starts, then `local.sh roll` while 20 SSE clients follow through
 * nginx and 40 posts/s go through nginx: no post refused, every client exact; then `down`, timed.
 */
t.test('local.sh on a base port: status from another shell, conflicts, roll with 0 refused and every client exact, down', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-local-'))
  const base = await freeBase()
  // MONGODB_URL empty: local.sh starts its own FerretDB (the test services' one is not used).
  const env = { TAILCAST_LOCAL_DIR: dir, TAILCAST_LOCAL_PORT: String(base), TAILCAST_HEARTBEAT_SECONDS: '2' }
  t.teardown(async () => {
    await localSh({ TAILCAST_LOCAL_DIR: dir }, 'down')
    rmSync(dir, { recursive: true, force: true })
  })
  const up = await localSh(env, 'up')
  t.equal(up.code, 0, `local.sh up on base port ${base} (${Math.round(up.ms)} ms)`) || t.comment(up.out)
  if (up.code !== 0) return
  const url = `http://127.0.0.1:${base}`

  // Another shell: only the data directory, none of the port variables.
  const status = await localSh({ TAILCAST_LOCAL_DIR: dir }, 'status')
  t.equal(status.code, 0, 'status exits 0')
  const lines = status.out.trim().split('\n')
  t.same(lines.map((l) => l.split(':')[0]), ['nginx', 'tailcast1', 'tailcast2', 'tailcast3', 'nats1', 'nats2', 'nats3', 'ferretdb'], 'one line per component') || t.comment(status.out)
  t.match(lines[0], `running (pid`, 'nginx runs')
  t.match(lines[0], `http://127.0.0.1:${base}/`, 'on the base port')
  for (const [i, l] of lines.slice(1, 4).entries()) t.match(l, new RegExp(`^tailcast${i + 1}: +ready \\(pid \\d+, :${base + 1 + i}\\), NATS nats[123]`), `tailcast${i + 1}: ready, its port and its NATS node`)
  t.equal(lines.filter((l) => l.endsWith('writer-lease holder')).length, 1, 'exactly one instance is named the writer-lease holder')
  for (const [i, l] of lines.slice(4, 7).entries()) t.match(l, new RegExp(`^nats${i + 1}: +running \\(pid \\d+, :${base + 10 + i}\\), JetStream healthy`), `nats${i + 1}: running on its port`)
  t.match(lines[7], new RegExp(`^ferretdb: +running \\(pid \\d+, :${base + 20}\\)`), 'ferretdb on its port')
  const elsewhere = mkdtempSync(join(tmpdir(), 'tailcast-local-other-'))
  t.teardown(() => rmSync(elsewhere, { recursive: true, force: true }))
  const other = await localSh({ TAILCAST_LOCAL_DIR: elsewhere }, 'status')
  t.match(other.out, /^nothing started from /, 'status in another data directory says nothing runs from it (and probes no port)')

  // The same ports from another data directory: refused before anything starts.
  const conflict = await localSh({ ...env, TAILCAST_LOCAL_DIR: elsewhere }, 'up')
  t.equal(conflict.code, 1, 'up on ports in use exits 1')
  t.match(conflict.out, new RegExp(`port ${base} \\(for nginx\\) is in use`), 'naming the port and the component') || t.comment(conflict.out)
  t.notOk(existsSync(join(elsewhere, 'run')) && readdirSync(join(elsewhere, 'run')).length > 0, 'and starting nothing')
  const clash = await localSh({ ...env, TAILCAST_LOCAL_DIR: elsewhere, TAILCAST_LOCAL_NATS_PORT: String(base + 2) }, 'up')
  t.match(clash.out, new RegExp(`port ${base + 2} is wanted by both tailcast2 and nats1`), 'two components on one port: refused, naming both') || t.comment(clash.out)

  // FerretDB-sized: the collection local.sh's instances created.
  const mongo = new MongoClient(`mongodb://127.0.0.1:${base + 20}/`)
  t.teardown(() => mongo.close())
  const [info] = await mongo.db('tailcast').listCollections({ name: 'messages' }).toArray()
  t.equal((info as any)?.options?.max, 10000, 'local.sh runs FerretDB with a 10,000-event capped collection') || t.comment(JSON.stringify(info))

  const followers: Follower[] = []
  let posting = true
  t.teardown(() => {
    posting = false
    followers.forEach((f) => f.stop())
  })
  for (let k = 0; k < CLIENTS; k++) followers.push(new Follower('sse', [{ url, wsUrl: `ws://127.0.0.1:${base}` }], 0, `/messages?room=${ROOM}`))
  await Promise.all(followers.map((f) => f.start()))

  // 40 posts/s: two lanes, one post every 50 ms each (a slow answer delays that lane only).
  const posts: Post[] = []
  const lane = async (n: number): Promise<void> => {
    for (let i = 0, next = performance.now(); posting; i++) {
      const text = `l${n}-${i}`
      const sentAt = performance.now()
      const r = await postTo(url, { text, room: ROOM }).catch((err: Error) => ({ status: 0, body: err.message }))
      posts.push({ text, sentAt, status: r.status, body: r.body })
      next += 50
      await sleep(Math.max(0, next - performance.now()))
    }
  }
  const lanes = [lane(0), lane(1)]
  await sleep(1000)
  const roll = await localSh({ TAILCAST_LOCAL_DIR: dir }, 'roll')
  t.equal(roll.code, 0, `local.sh roll (${Math.round(roll.ms)} ms)`) || t.comment(roll.out)
  t.comment(roll.out.trim().split('\n').filter((l) => /ready in/.test(l)).join('; '))
  await sleep(1000)
  posting = false
  await Promise.all(lanes)

  const refused = posts.filter((p) => p.status !== 202)
  t.equal(refused.length, 0, `no post refused during the roll (${posts.length} posted, ${(posts.length / ((posts.at(-1)!.sentAt - posts[0].sentAt) / 1000)).toFixed(1)}/s)`) ||
    t.comment(JSON.stringify(refused.slice(0, 5)))

  // The test's own view of the store: a slow read on a busy machine is no finding here.
  const reader = new MongoEventStore({ url: `mongodb://127.0.0.1:${base + 20}/`, database: 'tailcast', collection: 'messages', cappedSize: 16777216, cappedMax: 10000, timeoutMs: 60_000 })
  await reader.open()
  t.teardown(() => reader.close())
  const acceptedIds = new Set(posts.filter((p) => p.status === 202).map((p) => String(p.body.id)))
  let storeIds: string[] = []
  await waitUntil(async () => {
    storeIds = (await reader.read({ kind: 'room', room: ROOM }, 0, 1_000_000)).map((e) => String(e.id))
    const have = new Set(storeIds)
    return [...acceptedIds].every((id) => have.has(id)) && followers.every((f) => dataEvents(f.events).length >= storeIds.length) ? true : undefined
  }, 30_000, 'the store to hold every accepted post and every client to have the store', 250).catch((err: Error) => t.fail(err.message))
  t.equal(storeIds.length, acceptedIds.size, `the store holds exactly the ${acceptedIds.size} accepted posts`)
  let exact = 0
  for (const [k, f] of followers.entries()) {
    const ids = dataEvents(f.events).map((e) => e.id)
    if (ids.length === storeIds.length && ids.every((id, i) => id === storeIds[i])) exact++
    else t.fail(`client ${k} (${f.reconnects} reconnects, ${f.resets} resets): ${ids.length} events, ${storeIds.filter((id) => !ids.includes(id)).length} of the store missing`)
  }
  t.equal(exact, CLIENTS, `all ${CLIENTS} clients hold exactly the store's ${storeIds.length} events, in order`)
  t.equal(followers.reduce((s, f) => s + f.resets, 0), 0, 'no client needed a reset')
  const reconnects = followers.reduce((s, f) => s + f.reconnects, 0)
  t.ok(reconnects >= CLIENTS, `the roll moved every client (${reconnects} reconnects)`)
  followers.forEach((f) => f.stop())

  const down = await localSh({ TAILCAST_LOCAL_DIR: dir }, 'down')
  t.equal(down.code, 0, 'down exits 0')
  // Generous: 4-7 s measured at a load average near 10, 11 s near 43.
  t.ok(down.ms < 20_000, `down stopped all 8 components in ${Math.round(down.ms)} ms (in parallel; one after another it took 13-15 s)`)
  t.same(readdirSync(join(dir, 'run')), [], 'no pid file left')
  t.ok((await Promise.all([base, base + 1, base + 10, base + 20].map(free))).every(Boolean), 'nginx, instance, NATS and FerretDB ports are free again')
})
