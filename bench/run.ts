/**
 * npm run bench [-- --quick] [-- --phases idle,load,multi,storm] [-- --clients 1000,10000] [-- --rate 50]
 *                [-- --store mongodb] [-- --nats] [-- --workers N] [-- --cpu-prof] [-- --filter TEXT]
 *                [-- --storm-clients 1000,10000] [-- --storm-events 10000] [-- --storm-window 1000]
 *                [-- --phases old-resume] [-- --old-resume-clients 500] [-- --old-resume-events 5000] [-- --old-resume-history 1000]
 *                [-- --server-dist DIR] [-- --phases h2]
 *
 * For each phase: start the server (tailcast from dist/, on the embedded store unless --store
 * mongodb, --nats or --workers N; or the raw node:http baseline; or the same fan-out on fastify +
 * fastify-sse-v2, bench/fastify-sse.ts) as a child process with the highest
 * fd limit the shell allows, open the clients from separate load processes on loopback (source
 * addresses across 127.0.0.0/8), measure RSS idle, inject events at a set rate for a set time with
 * POST /messages, then collect deliveries/s, latency, CPU and errors. Prints a table and the
 * tailcast/baseline and tailcast/fastify-sse-v2 ratios, and writes bench/results/*.json.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdirSync, rmSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import http from 'node:http'
import https from 'node:https'
import os from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MongoClient } from 'mongodb'
import { connect as natsConnect } from 'nats'
import { Histogram } from './histogram.js'
import { formatSelfTimes } from './profile.js'
import { OLD_RESUME, SEAM_TRIES, oldResume, storm, type OldResumeResult, type StormResult, type Timed } from './storm.js'

const here = dirname(fileURLToPath(import.meta.url))
const repo = resolve(here, '..') // dist-bench -> repo root
const CLK_TCK = 100
const MAX_INFLIGHT = 64
/** Connections per load process: each process has the same fd hard limit (20000 here). */
const PER_LOAD_PROCESS = 9000

type Target = 'tailcast' | 'baseline' | 'fastify-sse-v2'
/** What each target runs: tailcast's CLI, or one of the bench's own SSE fan-outs. */
const SCRIPTS: Record<Exclude<Target, 'tailcast'>, string> = { baseline: 'baseline.js', 'fastify-sse-v2': 'fastify-sse.js' }
interface Setup {
  /** tailcast's store: the embedded one, or MongoDB at MONGODB_URL. */
  store: 'memory' | 'mongodb'
  /** POST /messages goes through NATS JetStream at NATS_URL. */
  nats: boolean
  /** Server processes on the port (TAILCAST_WORKERS); more than 1 needs the MongoDB store. */
  workers: number
}
interface Phase extends Setup {
  name: string
  target: Target
  sse: number
  ws: number
  /** Events per second injected during the load window (0: idle only). */
  rate: number
  seconds: number
  /**
   * tailcast with tls.cert/tls.key, its SSE clients on HTTP/1.1 over TLS or on HTTP/2 (10 streams a
   * connection, as a browser's tabs); events posted over HTTPS.
   */
  tls?: 'https1' | 'h2'
  /** A resume storm (bench/storm.ts) instead of a load phase: events in the stream, resumes among the newest `window`. */
  storm?: { events: number; window: number }
  /** An old-resume storm (bench/storm.ts) instead of a load phase: events in the stream, the hot history's events, every resume from the oldest. */
  oldResume?: { events: number; history: number }
}

interface PhaseResult extends Phase {
  eventsSent: number
  connections: number
  connectSeconds: number
  /** CPU seconds the server spent while the clients connected: all its processes, and the primary alone. */
  connectCpuSeconds: { all: number; primary: number }
  deliveries: number
  expectedDeliveries: number
  deliveriesPerSec: number
  latencyMs: { p50: number; p99: number; max: number }
  rssBeforeMB: number
  rssIdleMB: number
  rssEndMB: number
  rssPerConnectionKB: number
  cpuSeconds: number
  cpuSecondsPerMillionDeliveries: number
  errors: number
  disconnects: number
  errorSamples: string[]
}

function args(): {
  quick: boolean
  clients: number[]
  rate: number | null
  seconds: number | null
  phases: string[]
  idle: number[]
  cpuProf: boolean
  peak: number
  filter: string | undefined
  setup: Setup
  storm: { clients: number[]; events: number; window: number }
  oldResume: { clients: number[]; events: number; history: number }
} {
  const a = process.argv.slice(2)
  const get = (name: string): string | undefined => {
    const i = a.indexOf(name)
    return i === -1 ? undefined : a[i + 1]
  }
  const list = (s: string | undefined): number[] | undefined => s?.split(',').map(Number)
  const quick = a.includes('--quick')
  return {
    quick,
    clients: list(get('--clients')) ?? (quick ? [1000] : [1000, 10000]),
    idle: list(get('--idle')) ?? (quick ? [] : [1000, 10000, 19500]),
    rate: get('--rate') === undefined ? null : Number(get('--rate')),
    seconds: get('--seconds') === undefined ? null : Number(get('--seconds')),
    phases: get('--phases')?.split(',') ?? ['idle', 'load', 'storm'],
    cpuProf: a.includes('--cpu-prof'),
    filter: get('--filter'),
    peak: get('--peak') === undefined ? (quick ? 1 : 4) : Number(get('--peak')),
    setup: {
      store: get('--store') === 'mongodb' ? 'mongodb' : 'memory',
      nats: a.includes('--nats'),
      workers: get('--workers') === undefined ? 1 : Number(get('--workers')),
    },
    storm: {
      clients: list(get('--storm-clients')) ?? (quick ? [1000] : [1000, 10000]),
      events: Number(get('--storm-events') ?? 10_000),
      window: Number(get('--storm-window') ?? 1000),
    },
    oldResume: {
      clients: list(get('--old-resume-clients')) ?? [OLD_RESUME.clients],
      events: Number(get('--old-resume-events') ?? OLD_RESUME.events),
      history: Number(get('--old-resume-history') ?? OLD_RESUME.history),
    },
  }
}

/** tailcast's build to run: this checkout's dist/, or another one's (--server-dist, e.g. an older commit's, for before/after). */
const SERVER_DIST = (() => {
  const i = process.argv.indexOf('--server-dist')
  return i === -1 ? join(repo, 'dist') : resolve(process.argv[i + 1])
})()

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** CPU seconds and RSS of the server: its process and, with workers, every process under it. */
function procStat(pid: number): { cpu: number; rssMB: number } {
  if (!existsSync(`/proc/${pid}/stat`)) throw new Error(`server process ${pid} is gone: ${exitNote.get(pid) ?? 'no exit seen yet'}`)
  let cpu = 0
  let rssMB = 0
  for (const p of processTree(pid)) {
    try {
      cpu += processCpu(p)
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))
      rssMB += m ? Number(m[1]) / 1024 : NaN
    } catch {
      // a worker that exited in between: its time is gone with it
    }
  }
  return { cpu, rssMB }
}

/** CPU seconds (user + system) of one process. */
function processCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLK_TCK // utime, stime (fields 14, 15)
}

function processTree(pid: number): number[] {
  const out = [pid]
  for (let i = 0; i < out.length; i++) {
    try {
      for (const c of readFileSync(`/proc/${out[i]}/task/${out[i]}/children`, 'utf8').trim().split(' ')) if (c !== '') out.push(Number(c))
    } catch {
      // gone
    }
  }
  return out
}

async function waitHealthy(port: number, child: ChildProcess, secure = false): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`server exited with code ${child.exitCode}`)
    const ok = await new Promise<boolean>((r) => {
      ;(secure ? https : http).get({ host: '127.0.0.1', port, path: '/health', agent: false, rejectUnauthorized: false }, (res) => {
        res.resume()
        r(res.statusCode === 200)
      }).on('error', () => r(false))
    })
    if (ok) return
    await sleep(100)
  }
  throw new Error('server did not answer /health within 20 s')
}

let cert: { TAILCAST_TLS_CERT: string; TAILCAST_TLS_KEY: string } | undefined
/** A self-signed certificate for the TLS phases, made once per run in the temp dir (never kept). */
function benchCert(): { TAILCAST_TLS_CERT: string; TAILCAST_TLS_KEY: string } {
  if (cert !== undefined) return cert
  const dir = join(os.tmpdir(), `tailcast-bench-tls-${process.pid}`)
  mkdirSync(dir, { recursive: true })
  cert = { TAILCAST_TLS_CERT: join(dir, 'cert.pem'), TAILCAST_TLS_KEY: join(dir, 'key.pem') }
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost',
    '-keyout', cert.TAILCAST_TLS_KEY, '-out', cert.TAILCAST_TLS_CERT], { stdio: 'ignore' })
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
  return cert
}

let portSeq = 0
function startServer(p: Phase, profDir: string | null): { child: ChildProcess; port: number; setup: Record<string, string> } {
  const target = p.target
  const port = 18000 + (process.pid % 1000) * 10 + (portSeq++ % 10)
  const prof = profDir === null ? '' : `--cpu-prof --cpu-prof-dir=${profDir} `
  const script = target === 'tailcast' ? join(SERVER_DIST, 'cli.js') + ' serve' : join(here, SCRIPTS[target])
  const setup = setupEnv(p)
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    TAILCAST_POST_TOKEN: '',
    TAILCAST_POST_ENABLED: 'true',
    ...setup,
    ...(p.tls === undefined ? {} : benchCert()),
  }
  // Only what the phase asks for: the URLs test-services exports must not switch on NATS or MongoDB.
  if (!p.nats) delete env.NATS_URL
  if (p.store !== 'mongodb') delete env.MONGODB_URL
  // The soft fd limit goes up to the hard one; the hard one needs CAP_SYS_RESOURCE to go further.
  const child = spawn('bash', ['-c', `ulimit -n $(ulimit -Hn); exec node ${prof}${script}`], {
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  child.on('exit', (code, signal) => exitNote.set(child.pid!, `exit code ${code}, signal ${signal}`))
  return { child, port, setup }
}
const exitNote = new Map<number, string>()

let setupSeq = 0
/** The environment for a phase's store, NATS and workers; each phase gets a fresh collection and stream. */
function setupEnv(p: Phase): Record<string, string> {
  const env: Record<string, string> = { TAILCAST_STORE: p.store, TAILCAST_WORKERS: String(p.workers) }
  // The storm table counts the store's finds (tailcast_store_commands_total).
  if (p.storm !== undefined) Object.assign(env, { TAILCAST_STORE_CAPACITY: String(2 * p.storm.events), TAILCAST_MONGODB_MONITOR_COMMANDS: 'true' })
  // Resumes from the oldest event must read the store: a hot history far shorter than the room.
  if (p.oldResume !== undefined) {
    Object.assign(env, { TAILCAST_STORE_CAPACITY: String(2 * p.oldResume.events), TAILCAST_HISTORY_MAX_EVENTS: String(p.oldResume.history), TAILCAST_MONGODB_MONITOR_COMMANDS: 'true' })
  }
  const tag = `bench_${process.pid}_${setupSeq++}`
  if (p.store === 'mongodb') {
    env.TAILCAST_MONGODB_DATABASE = 'tailcast_bench'
    env.TAILCAST_MONGODB_COLLECTION = tag
  }
  if (p.nats) {
    env.TAILCAST_NATS_STREAM = tag
    env.TAILCAST_NATS_SUBJECT = `${tag}.events`
    env.TAILCAST_NATS_DURABLE = tag
    env.TAILCAST_NATS_DEAD_LETTER_SUBJECT = `${tag}.dead`
  }
  return env
}

/** What the phase name says about the set-up, when it is not the default one. */
function setupLabel(s: Setup): string {
  const parts = [s.store === 'mongodb' ? 'mongodb' : '', s.nats ? 'nats' : '', s.workers > 1 ? `${s.workers} procs` : ''].filter((x) => x !== '')
  return parts.length === 0 ? '' : ` [${parts.join(', ')}]`
}

class LoadProcess {
  readonly child: ChildProcess
  private waiting = new Map<string, (m: any) => void>()
  constructor() {
    this.child = fork(join(here, 'load.js'), [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.child.on('message', (m: any) => {
      const w = this.waiting.get(m.type)
      if (w) {
        this.waiting.delete(m.type)
        w(m)
      }
    })
  }
  request(cmd: Record<string, unknown>, reply: string): Promise<any> {
    return new Promise((r) => {
      this.waiting.set(reply, r)
      this.child.send(cmd)
    })
  }
  ready(): Promise<any> {
    return new Promise((r) => this.waiting.set('ready', r))
  }
}

/** POST events at `rate`/s for `seconds` over a few keep-alive sockets; each carries its send time. */
async function inject(port: number, rate: number, seconds: number, secure = false): Promise<{ sent: number; failed: number }> {
  const agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 8, rejectUnauthorized: false }) : new http.Agent({ keepAlive: true, maxSockets: 8 })
  const pad = 'x'.repeat(120)
  let sent = 0
  let failed = 0
  const inflight = new Set<Promise<void>>()
  const post = (seq: number): Promise<void> =>
    new Promise((r) => {
      const body = `{"type":"bench","room":"bench","data":{"seq":${seq},"pad":"${pad}","sentAt":${(performance.timeOrigin + performance.now()).toFixed(3)}}}`
      const req = (secure ? https : http).request({ host: '127.0.0.1', port, path: '/messages', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
        if (res.statusCode !== 202 && res.statusCode !== 201) failed++
        res.resume()
        res.on('end', r)
      })
      req.on('error', () => {
        failed++
        r()
      })
      req.end(body)
    })
  const t0 = performance.now()
  const total = Math.round(rate * seconds)
  const deadline = t0 + seconds * 1000
  let lastLog = t0
  // Bounded: at most MAX_INFLIGHT posts outstanding and never past the window; a server that cannot
  // take the rate simply gets fewer events (the table shows the events actually sent).
  while (sent < total && performance.now() < deadline) {
    if (process.env.BENCH_DEBUG && performance.now() - lastLog > 1000) {
      lastLog = performance.now()
      process.stderr.write(`    inject: sent ${sent} inflight ${inflight.size} failed ${failed}\n`)
    }
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1)
    while (sent < due && inflight.size < MAX_INFLIGHT) {
      const p = post(sent++)
      inflight.add(p)
      void p.then(() => inflight.delete(p))
    }
    await sleep(2)
  }
  await Promise.race([Promise.all(inflight), sleep(3000)])
  agent.destroy()
  return { sent, failed }
}

let addressBlock = process.pid % 250 // another run a minute ago most likely used other blocks
/**
 * Source addresses for n connections: one per 5,000, each phase in a block of 127.0.0.0/8 of its own.
 * A client bound to an address takes an ephemeral port for that address whatever it connects to,
 * and the ports the previous phases closed stay in TIME_WAIT for a minute: reusing their addresses
 * makes every bind search a nearly full port range (seen: 10,000 connections taking 30 s of system
 * CPU instead of 5 s).
 */
function localAddresses(n: number): string[] {
  const block = 1 + (addressBlock++ % 250)
  return Array.from({ length: Math.max(2, Math.ceil(n / 5000)) }, (_, i) => `127.${block}.${Math.floor(i / 250)}.${1 + (i % 250)}`)
}

async function runPhase(p: Phase, profDir: string | null): Promise<PhaseResult> {
  const { child, port, setup } = startServer(p, profDir)
  const loads: LoadProcess[] = []
  try {
    await waitHealthy(port, child, p.tls !== undefined)
    await sleep(300)
    const before = procStat(child.pid!)
    const total = p.sse + p.ws
    const nLoad = Math.max(1, Math.ceil(total / PER_LOAD_PROCESS))
    for (let i = 0; i < nLoad; i++) loads.push(new LoadProcess())
    await Promise.all(loads.map((l) => l.ready()))
    const addrs = localAddresses(total)
    const share = (n: number, i: number): number => Math.floor(n / nLoad) + (i < n % nLoad ? 1 : 0)
    const cpuBeforeConnect = { all: procStat(child.pid!).cpu, primary: processCpu(child.pid!) }
    const t0 = performance.now()
    const url = `${p.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}/messages?room=bench`
    const protocol = p.tls ?? 'http'
    const opened = await Promise.all(
      loads.map((l, i) => l.request({ cmd: 'open', url, sse: share(p.sse, i), ws: share(p.ws, i), localAddresses: addrs, concurrency: 200, protocol, streamsPerConnection: 10 }, 'opened')),
    )
    const connectSeconds = (performance.now() - t0) / 1000
    // With workers: how much of the server's CPU while connecting was the primary's (node:cluster
    // hands connections over from there unless the workers bind the port themselves).
    const connectCpu = { all: round(procStat(child.pid!).cpu - cpuBeforeConnect.all, 2), primary: round(processCpu(child.pid!) - cpuBeforeConnect.primary, 2) }
    const connections = opened.reduce((s, m) => s + m.open, 0)
    const cpuNote = p.workers > 1 ? ` (server CPU ${connectCpu.all} s, of which the primary ${connectCpu.primary} s)` : ''
    process.stderr.write(`  ${p.name}: ${connections}/${total} connected in ${connectSeconds.toFixed(1)} s${cpuNote}\n`)
    await sleep(2000)
    const idle = procStat(child.pid!)
    await Promise.all(loads.map((l) => l.request({ cmd: 'reset' }, 'reset')))
    const cpu0 = procStat(child.pid!).cpu
    const w0 = performance.now()
    const inj = p.rate > 0 ? await inject(port, p.rate, p.seconds, p.tls !== undefined) : (await sleep(p.seconds * 1000), { sent: 0, failed: 0 })
    process.stderr.write(`  ${p.name}: injected ${inj.sent} events (${inj.failed} failed) in ${((performance.now() - w0) / 1000).toFixed(1)} s\n`)
    // Let the last events arrive: until all have, or none has for 2 s (a store tail may pause), at most 15 s.
    let last = -1
    let still = 0
    let reports: any[] = []
    for (let i = 0; i < 75; i++) {
      reports = await Promise.all(loads.map((l) => l.request({ cmd: 'report' }, 'report')))
      const d = reports.reduce((s, r) => s + r.deliveries, 0)
      if (d >= inj.sent * connections) break
      still = d === last ? still + 1 : 0
      if (still >= 10) break
      last = d
      await sleep(200)
    }
    // The window ends when the last event arrived, not when the wait above gave up.
    const lastAt = Math.max(...reports.map((r) => r.lastAt as number))
    const windowS = lastAt > 0 ? (lastAt - (performance.timeOrigin + w0)) / 1000 : (performance.now() - w0) / 1000
    const end = procStat(child.pid!)
    const hist = new Histogram()
    for (const r of reports) hist.add(r.hist, r.total, r.max)
    const deliveries = reports.reduce((s, r) => s + r.deliveries, 0)
    const cpuSeconds = end.cpu - cpu0
    return {
      ...p,
      eventsSent: inj.sent,
      connections,
      connectSeconds: round(connectSeconds, 1),
      connectCpuSeconds: connectCpu,
      deliveries,
      expectedDeliveries: inj.sent * connections,
      deliveriesPerSec: Math.round(deliveries / Math.max(p.seconds, windowS)),
      latencyMs: { p50: round(hist.percentile(50), 1), p99: round(hist.percentile(99), 1), max: round(hist.max, 1) },
      rssBeforeMB: round(before.rssMB, 1),
      rssIdleMB: round(idle.rssMB, 1),
      rssEndMB: round(end.rssMB, 1),
      rssPerConnectionKB: connections > 0 ? round(((idle.rssMB - before.rssMB) * 1024) / connections, 2) : NaN,
      cpuSeconds: round(cpuSeconds, 2),
      cpuSecondsPerMillionDeliveries: deliveries > 0 ? round(cpuSeconds / (deliveries / 1e6), 2) : NaN,
      errors: reports.reduce((s, r) => s + r.errors, 0) + inj.failed,
      disconnects: reports.reduce((s, r) => s + r.disconnects, 0),
      errorSamples: reports.flatMap((r) => r.errorSamples).slice(0, 5),
    }
  } finally {
    for (const l of loads) l.child.send({ cmd: 'close' })
    await Promise.all(loads.map((l) => new Promise((r) => (l.child.exitCode !== null ? r(null) : l.child.once('exit', r)))))
    await stopServer(child, setup)
  }
}

async function stopServer(child: ChildProcess, setup: Record<string, string>): Promise<void> {
  child.kill('SIGTERM')
  // Past its own shutdown timeout (20 s by default) a server that has not exited is killed: a
  // stalled one (the old-resume phase's before) must not hold the bench.
  const exited = new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))
  if ((await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)])) === false) {
    process.stderr.write(`  server ${child.pid} still running 30 s after SIGTERM: SIGKILL\n`)
    child.kill('SIGKILL')
    await exited
  }
  await removeSetup(setup)
}

async function runStorm(p: Phase): Promise<StormResult & { name: string }> {
  const { child, port, setup } = startServer(p, null)
  try {
    await waitHealthy(port, child)
    const r = await storm(port, p.sse + p.ws, p.storm?.events ?? 10_000, p.storm?.window ?? 1000)
    process.stderr.write(`  ${p.name}: all ${r.clients} live in ${r.allLiveMs} ms, ${r.exact} exact\n`)
    return { name: p.name, ...r }
  } finally {
    await stopServer(child, setup)
  }
}

/** The machine's 1-minute load average (other work on the two cores shows in every figure). */
const load1 = (): number => round(os.loadavg()[0], 2)

async function runOldResume(p: Phase): Promise<OldResumeResult & { name: string; loadavg: { before: number; after: number } }> {
  const { child, port, setup } = startServer(p, null)
  try {
    await waitHealthy(port, child)
    const before = load1()
    const { events, history } = p.oldResume ?? { events: OLD_RESUME.events, history: OLD_RESUME.history }
    const r = await oldResume(port, { clients: p.sse + p.ws, events, history })
    const loadavg = { before, after: load1() }
    const live = r.resumes.allLiveMs === null ? `${r.resumes.live}/${r.clients} live within ${r.boundSeconds} s` : `all ${r.clients} live in ${r.resumes.allLiveMs} ms`
    process.stderr.write(`  ${p.name}: ${live}, ${r.resumes.exact} exact; POSTs to the other room during it: ${r.storm.answered}/${r.storm.sent} answered, ${r.storm.delivered} delivered; after it: ${r.left.answered}/${r.left.sent} answered, ${r.left.delivered} delivered; load avg ${loadavg.before} -> ${loadavg.after}\n`)
    return { name: p.name, ...r, loadavg }
  } finally {
    await stopServer(child, setup)
  }
}

function oldResumeTable(results: Awaited<ReturnType<typeof runOldResume>>[]): string {
  const ms = (t: Timed): string => [t.p50, t.p99, t.max].map((v) => (v === null ? 'never' : String(Math.round(v)))).join(' / ')
  const windows = ['quiet', 'storm', 'left'] as const
  const head = ['old-resume', 'clients', 'events', 'history', ...windows.flatMap((w) => [`${w}: POST ms p50 / p99 / max`, `${w}: delivery ms p50 / p99 / max`, `${w}: 2xx / delivered / sent`]), 'live', 'all live ms', 'exact', 'events replayed', 'from store', 'store finds', 'load avg']
  const rows = results.map((r) => [
    r.name,
    String(r.clients),
    String(r.events),
    String(r.history),
    ...windows.flatMap((w) => [ms(r[w].postMs), ms(r[w].deliveryMs), `${r[w].answered} / ${r[w].delivered} / ${r[w].sent}`]),
    `${r.resumes.live}/${r.clients}`,
    r.resumes.allLiveMs === null ? `not all in ${r.boundSeconds} s` : String(r.resumes.allLiveMs),
    `${r.resumes.exact}/${r.clients}`,
    String(r.resumes.replayed),
    String(r.replaysFromStore ?? 'n/a'),
    String(r.storeFinds ?? 'n/a'),
    `${r.loadavg.before} -> ${r.loadavg.after}`,
  ])
  return markdownTable(head, rows)
}

function stormTable(results: (StormResult & { name: string })[]): string {
  const head = ['storm', 'clients', 'events', 'window', 'tail behind at start', 'all live ms', 'p50 ms', 'p99 ms', 'max ms', 'exact', 'resets', 'errors', 'from memory', 'from store', 'store finds', 'live ms quiet p50/p99', 'live ms after a POST p50/p99', 'POSTed event after live']
  const rows = results.map((r) => [
    r.name,
    String(r.clients),
    String(r.events),
    String(r.window),
    String(r.behindAtStart),
    String(r.allLiveMs),
    String(round(r.perClientMs.p50, 1)),
    String(round(r.perClientMs.p99, 1)),
    String(round(r.perClientMs.max, 1)),
    `${r.exact}/${r.clients}`,
    String(r.resets),
    String(r.errors),
    String(r.replaysFromMemory ?? 'n/a'),
    String(r.replaysFromStore ?? 'n/a'),
    String(r.storeFinds ?? 'n/a'),
    `${r.seam.quiet.p50}/${r.seam.quiet.p99}`,
    `${r.seam.afterPost.p50}/${r.seam.afterPost.p99}`,
    `${r.seam.late}/${SEAM_TRIES}`,
  ])
  return markdownTable(head, rows)
}

/** Drop what a phase made on a MongoDB or NATS server that outlives the bench (one given by URL). */
async function removeSetup(setup: Record<string, string>): Promise<void> {
  const collection = setup.TAILCAST_MONGODB_COLLECTION
  if (collection !== undefined && process.env.MONGODB_URL) {
    const client = new MongoClient(process.env.MONGODB_URL, { serverSelectionTimeoutMS: 5000 })
    try {
      await client.db(setup.TAILCAST_MONGODB_DATABASE).collection(collection).drop()
    } catch (err) {
      process.stderr.write(`  could not drop the bench collection ${collection}: ${(err as Error).message}\n`)
    } finally {
      await client.close()
    }
  }
  const stream = setup.TAILCAST_NATS_STREAM
  if (stream !== undefined && process.env.NATS_URL) {
    const nc = await natsConnect({ servers: process.env.NATS_URL, timeout: 5000 })
    try {
      const jsm = await nc.jetstreamManager()
      // The event stream, its dead letters and the writer lease's KV bucket (see src/ingest/nats-ingest.ts).
      for (const name of [stream, `${stream}_DEADLETTER`, `KV_${stream}_LEASE`]) await jsm.streams.delete(name).catch(() => false)
    } finally {
      await nc.close()
    }
  }
}

function round(n: number, d: number): number {
  const f = 10 ** d
  return Math.round(n * f) / f
}

function plan(o: ReturnType<typeof args>): Phase[] {
  const phases: Phase[] = []
  const t = o.setup
  const label = setupLabel(t)
  const base: Setup = { store: 'memory', nats: false, workers: 1 }
  if (o.phases.includes('idle')) {
    for (const n of o.idle) {
      phases.push({ name: `idle ${n} tailcast${label}`, target: 'tailcast', ...t, sse: Math.ceil(n / 2), ws: Math.floor(n / 2), rate: 1, seconds: 5 })
    }
  }
  // 500,000 deliveries/s is the target: the rate that asks for it at this many clients.
  const rateFor = (n: number): number => o.rate ?? Math.round(500_000 / n)
  const seconds = o.seconds ?? (o.quick ? 6 : 12)
  if (o.phases.includes('load')) {
    for (const n of o.clients) {
      const rate = rateFor(n)
      phases.push({ name: `load ${n} tailcast sse+ws${label}`, target: 'tailcast', ...t, sse: n / 2, ws: n / 2, rate, seconds })
      phases.push({ name: `load ${n} tailcast sse${label}`, target: 'tailcast', ...t, sse: n, ws: 0, rate, seconds })
      phases.push({ name: `load ${n} baseline sse`, target: 'baseline', ...base, sse: n, ws: 0, rate, seconds })
      phases.push({ name: `load ${n} fastify-sse-v2 sse`, target: 'fastify-sse-v2', ...base, sse: n, ws: 0, rate, seconds })
      if (o.peak > 1) {
        // Asking for more than either server can deliver: what each achieves is its capacity.
        const peak = Math.round(rate * o.peak)
        phases.push({ name: `peak ${n} tailcast sse${label}`, target: 'tailcast', ...t, sse: n, ws: 0, rate: peak, seconds })
        phases.push({ name: `peak ${n} baseline sse`, target: 'baseline', ...base, sse: n, ws: 0, rate: peak, seconds })
        phases.push({ name: `peak ${n} fastify-sse-v2 sse`, target: 'fastify-sse-v2', ...base, sse: n, ws: 0, rate: peak, seconds })
      }
    }
  }
  if (o.phases.includes('h2')) {
    // SSE over HTTP/2 against SSE over HTTP/1.1, both over TLS on the same server, same clients and rate.
    for (const n of o.clients) {
      const rate = rateFor(n)
      phases.push({ name: `h2 ${n} tailcast sse https/1.1`, target: 'tailcast', ...base, sse: n, ws: 0, rate, seconds, tls: 'https1' })
      phases.push({ name: `h2 ${n} tailcast sse h2 (10 streams/conn)`, target: 'tailcast', ...base, sse: n, ws: 0, rate, seconds, tls: 'h2' })
    }
  }
  if (o.phases.includes('multi')) {
    // One server process, then one per core, behind the same MongoDB store, events coming in
    // through NATS (one writer holds the lease; every process tails the store): the same load.
    const procs = Math.max(2, os.cpus().length)
    for (const n of o.clients) {
      for (const workers of [1, procs]) {
        const s: Setup = { store: 'mongodb', nats: true, workers }
        phases.push({ name: `multi ${n} tailcast sse+ws${setupLabel(s)}`, target: 'tailcast', ...s, sse: n / 2, ws: n / 2, rate: rateFor(n), seconds })
      }
    }
  }
  if (o.phases.includes('storm')) {
    for (const n of o.storm.clients) {
      for (const store of ['memory', 'mongodb'] as const) {
        const s: Setup = { store, nats: false, workers: 1 }
        phases.push({ name: `storm ${n} tailcast${setupLabel(s)}`, target: 'tailcast', ...s, sse: Math.ceil(n / 2), ws: Math.floor(n / 2), rate: 0, seconds: 0, storm: { events: o.storm.events, window: o.storm.window } })
      }
    }
  }
  if (o.phases.includes('old-resume')) {
    for (const n of o.oldResume.clients) {
      for (const store of ['memory', 'mongodb'] as const) {
        const s: Setup = { store, nats: false, workers: 1 }
        phases.push({ name: `old-resume ${n} tailcast${setupLabel(s)}`, target: 'tailcast', ...s, sse: Math.ceil(n / 2), ws: Math.floor(n / 2), rate: OLD_RESUME.rate, seconds: 0, oldResume: { events: o.oldResume.events, history: o.oldResume.history } })
      }
    }
  }
  return o.filter === undefined ? phases : phases.filter((p) => p.name.includes(o.filter as string))
}

function table(results: PhaseResult[]): string {
  const head = ['phase', 'conns', 'ev/s asked', 'ev sent', 'deliv/s', 'deliv/expected', 'p50 ms', 'p99 ms', 'max ms', 'RSS idle MB', 'KB/conn', 'RSS end MB', 'CPU s/M deliv', 'errors', 'disconn']
  const rows = results.map((r) => [
    r.name,
    String(r.connections),
    String(r.rate),
    String(r.eventsSent),
    r.deliveriesPerSec.toLocaleString('en-US'),
    r.expectedDeliveries > 0 ? `${((100 * r.deliveries) / r.expectedDeliveries).toFixed(1)}%` : '-',
    String(r.latencyMs.p50),
    String(r.latencyMs.p99),
    String(r.latencyMs.max),
    String(r.rssIdleMB),
    String(r.rssPerConnectionKB),
    String(r.rssEndMB),
    String(r.cpuSecondsPerMillionDeliveries),
    String(r.errors),
    String(r.disconnects),
  ])
  return markdownTable(head, rows)
}

function markdownTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |'
  return [line(head), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)].join('\n')
}

async function main(): Promise<void> {
  const o = args()
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    loadavg: os.loadavg().map((n) => round(n, 2)),
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const profDir = o.cpuProf ? join(repo, 'bench', 'profiles') : null
  if (profDir) mkdirSync(profDir, { recursive: true })
  process.stderr.write(`tailcast bench (${o.quick ? 'quick' : 'full'}): ${machine.cpus} cores, ${machine.memoryGB} GB, node ${machine.node}, load avg ${machine.loadavg.join(' ')}\n`)
  const phases = plan(o)
  const bad = phases.find((p) => p.workers > 1 && p.store === 'memory')
  if (bad) throw new Error(`${bad.name}: --workers needs --store mongodb (the embedded store lives inside one process)`)
  const needs = { MONGODB_URL: phases.some((p) => p.store === 'mongodb'), NATS_URL: phases.some((p) => p.nats) }
  if ((needs.MONGODB_URL && !process.env.MONGODB_URL) || (needs.NATS_URL && !process.env.NATS_URL)) {
    // No server given: run the whole bench again under the test services (FerretDB and NATS on free ports).
    process.stderr.write('no MONGODB_URL / NATS_URL: starting FerretDB and NATS with scripts/test-services.sh\n')
    const again = spawn('bash', [join(repo, 'scripts', 'test-services.sh'), 'run', '--', process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' })
    const code = await new Promise<number>((r) => again.on('exit', (c) => r(c ?? 1)))
    process.exit(code)
  }
  const results: PhaseResult[] = []
  const storms: (StormResult & { name: string })[] = []
  const oldResumes: Awaited<ReturnType<typeof runOldResume>>[] = []
  const profiles: string[] = []
  for (const p of phases) {
    if (p.storm !== undefined) {
      process.stderr.write(`phase ${p.name}: ${p.storm.events} events, ${p.sse} SSE + ${p.ws} WS resume at once among the newest ${p.storm.window}\n`)
      storms.push(await runStorm(p))
      continue
    }
    if (p.oldResume !== undefined) {
      process.stderr.write(`phase ${p.name}: ${p.oldResume.events} events behind a history of ${p.oldResume.history}, ${p.sse} SSE + ${p.ws} WS resume at once from the oldest; ${OLD_RESUME.rate} POSTs/s to another room\n`)
      oldResumes.push(await runOldResume(p))
      continue
    }
    process.stderr.write(`phase ${p.name}: ${p.sse} SSE + ${p.ws} WS, ${p.rate} events/s for ${p.seconds} s\n`)
    const phaseProfDir = profDir === null || p.target !== 'tailcast' ? null : join(profDir, `${stamp}-${p.name.replace(/[^a-z0-9]+/gi, '-')}`)
    if (phaseProfDir !== null) mkdirSync(phaseProfDir, { recursive: true })
    results.push(await runPhase(p, phaseProfDir))
    if (phaseProfDir !== null) {
      for (const f of readdirSync(phaseProfDir).filter((f) => f.endsWith('.cpuprofile'))) profiles.push(formatSelfTimes(join(phaseProfDir, f), 15))
    }
  }
  const ratios: { phase: string; clients: number; against: string; deliveriesPerSec: number; p99: number }[] = []
  for (const n of o.clients) {
    for (const kind of ['load', 'peak']) {
      const t = results.find((r) => r.name === `${kind} ${n} tailcast sse${setupLabel(o.setup)}`)
      for (const against of ['baseline', 'fastify-sse-v2']) {
        const b = results.find((r) => r.name === `${kind} ${n} ${against} sse`)
        if (t && b) ratios.push({ phase: kind, clients: n, against, deliveriesPerSec: round(t.deliveriesPerSec / b.deliveriesPerSec, 3), p99: round(t.latencyMs.p99 / b.latencyMs.p99, 2) })
      }
    }
  }
  if (results.length > 0) console.log(table(results))
  if (storms.length > 0) console.log(stormTable(storms))
  if (oldResumes.length > 0) console.log(oldResumeTable(oldResumes))
  for (const p of profiles) console.log(p)
  for (const r of ratios) {
    console.log(`ratio tailcast/${r.against}, ${r.phase} at ${r.clients} SSE clients: deliveries/s ${r.deliveriesPerSec}, p99 ${r.p99}`)
  }
  const dir = join(repo, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = join(dir, `${stamp}-${o.quick ? 'quick' : 'full'}.json`)
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(), machine, server: SERVER_DIST, loadavgAfter: os.loadavg().map((n) => round(n, 2)), results, storms, oldResumes, ratios }, null, 2) + '\n')
  console.log(`results: ${file}`)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
