/**
 * Resume storms: N clients (half SSE with `Last-Event-ID`, half WebSocket with `?lastEventId=`)
 * reconnecting at once to a room holding E events.
 *
 * - `storm`: each client at a random point among the newest K events. Measures the time until
 *   every client is live, each client's time to `live`, the store work done meanwhile (from
 *   /metrics), and checks that every client received exactly the events after its id, no `reset`.
 * - `oldResume`: every client from the oldest event, behind a small hot history, so that every
 *   resume reads the store; meanwhile POSTs to another room at a fixed rate, each timed to its 2xx
 *   and to its delivery to a follower of that room, against the same measured without the storm
 *   just before, and just after the storm's clients have left.
 */
import { fork } from 'node:child_process'
import http from 'node:http'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Histogram } from './histogram.js'
import { pong, walkFrames } from './ws-frames.js'

export interface StormResult {
  clients: number
  events: number
  window: number
  /** Events the server's hub had not dispatched yet when the storm began (its tail behind the store): no settling first. */
  behindAtStart: number
  /** From the first connect to the last client's `live`. */
  allLiveMs: number
  perClientMs: { p50: number; p99: number; max: number }
  exact: number
  inexact: number
  resets: number
  errors: number
  errorSamples: string[]
  /** Deltas of the server's counters over the storm (null: the server does not report it). */
  replaysFromMemory: number | null
  replaysFromStore: number | null
  storeFinds: number | null
  /** Time to `live` of one stream resuming at the newest event (SEAM_TRIES each, alternating SSE and WebSocket). */
  seam: {
    /** Nothing posted meanwhile. */
    quiet: { p50: number; p99: number; max: number }
    /** A POST answered just before the stream was opened: that event must come before `live`. */
    afterPost: { p50: number; p99: number; max: number }
    /** Streams that got the event posted just before them only after `live`, or not at all. */
    late: number
  }
}

export const SEAM_TRIES = 40

const ROOM = 'storm'
/** The old-resume phase's other room: its follower and the timed POSTs. */
const OTHER_ROOM = 'fresh'
const HEAD_END = Buffer.from('\r\n\r\n')
const ID = Buffer.from('{"id":"')
const LIVE = Buffer.from('","type":"live"')
const RESET = Buffer.from('","type":"reset"')

/** POST `n` events to `room`, 64 at a time; their ids, ascending. */
async function fill(port: number, n: number, room = ROOM): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 })
  const ids: number[] = []
  const post = (i: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/messages', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
        let body = ''
        res.on('data', (d: Buffer) => (body += d.toString()))
        res.on('end', () => {
          if (res.statusCode !== 202) return reject(new Error(`fill: POST ${res.statusCode} ${body}`))
          ids.push(Number((JSON.parse(body) as { id: string }).id))
          resolve()
        })
      })
      req.on('error', reject)
      req.end(JSON.stringify({ type: 'Tick', room, data: { i, pad: 'x'.repeat(100) } }))
    })
  for (let i = 0; i < n; i += 64) await Promise.all(Array.from({ length: Math.min(64, n - i) }, (_, j) => post(i + j)))
  agent.destroy()
  return ids.sort((a, b) => a - b)
}

/**
 * Counters of the server's /metrics, summed over their labels. Fails after 30 s without an answer
 * (the presence gauge reads the MongoDB store: after an old-resume storm FerretDB took over 10 s).
 */
async function metrics(port: number): Promise<Map<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false, timeout: 30_000 }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve(body))
    })
    req.on('timeout', () => req.destroy(new Error('/metrics: no answer in 30 s')))
    req.on('error', reject)
  })
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line)
    if (m === null) continue
    const key = m[1] === 'tailcast_store_commands_total' ? `${m[1]}${m[2] ?? ''}` : m[1]
    out.set(key, (out.get(key) ?? 0) + Number(m[3]))
  }
  return out
}

interface Outcome {
  ms: number
  ids: number[]
  reset: boolean
  error: string | null
}

type Transport = 'sse' | 'ws'
type FrameKind = 'event' | 'live' | 'reset'

/**
 * One stream of `room` on a raw socket (from `resumeId` when given): the request by hand, each
 * `{"id":"<digits>","type":"…"` of the body handed to `onFrame`, WebSocket pings answered (the
 * server cuts off a client that does not answer them). `onEnd` is called once if the stream fails
 * or the server closes it, never after `close()`.
 */
function openStream(port: number, transport: Transport, room: string, resumeId: number | null, onFrame: (id: number, kind: FrameKind) => void, onEnd: (error: string) => void): { close(): void } {
  const request =
    transport === 'sse'
      ? // HTTP/1.0: no chunked framing to strip from the body.
        `GET /messages?room=${room} HTTP/1.0\r\nhost: x\r\naccept: text/event-stream\r\n${resumeId === null ? '' : `last-event-id: ${resumeId}\r\n`}\r\n`
      : `GET /messages?room=${room}${resumeId === null ? '' : `&lastEventId=${resumeId}`} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
        `sec-websocket-key: ${randomBytes(16).toString('base64')}\r\nsec-websocket-version: 13\r\n\r\n`
  let carry: Buffer = Buffer.alloc(0)
  let opened = false
  let closed = false
  const socket = net.connect({ host: '127.0.0.1', port })
  const close = (): void => {
    closed = true
    socket.destroy()
  }
  const end = (error: string): void => {
    if (closed) return
    close()
    onEnd(error)
  }
  // Bytes scanned for `{"id":"<digits>","type":"…"`, no string made per event: the clients share
  // the two cores with the server, and what they spend is not the server's time.
  const scan = (buf: Buffer, until: number): void => {
    let at = buf.indexOf(ID)
    while (at !== -1 && at < until && !closed) {
      let i = at + ID.length
      let id = 0
      while (buf[i] >= 48 && buf[i] <= 57) id = id * 10 + buf[i++] - 48
      if (buf.compare(LIVE, 0, LIVE.length, i, i + LIVE.length) === 0) onFrame(id, 'live')
      else if (buf.compare(RESET, 0, RESET.length, i, i + RESET.length) === 0) onFrame(id, 'reset')
      else onFrame(id, 'event')
      at = buf.indexOf(ID, i)
    }
  }
  socket.on('connect', () => socket.write(request))
  socket.on('data', (chunk: Buffer) => {
    let buf: Buffer = carry.length === 0 ? chunk : Buffer.concat([carry, chunk])
    if (!opened) {
      const head = buf.indexOf(HEAD_END)
      if (head === -1) return void (carry = buf)
      const status = buf.toString('latin1', 9, 12)
      if (status !== (transport === 'sse' ? '200' : '101')) return end(`${transport} status ${status}`)
      opened = true
      buf = buf.subarray(head + HEAD_END.length)
    }
    if (transport === 'sse') {
      // Whole records only: an id split across chunks waits for the rest.
      const last = buf.lastIndexOf('\n\n')
      if (last !== -1) scan(buf, last)
      carry = last === -1 ? buf : buf.subarray(last + 2)
    } else {
      const used = walkFrames(buf, (opcode, payload) => {
        if (opcode === 1) scan(payload, payload.length)
        else if (opcode === 9 && !closed) socket.write(pong(payload))
      })
      carry = buf.subarray(used)
    }
  })
  socket.on('error', (err) => end(`${transport}: ${err.message}`))
  socket.on('close', () => end(`${transport}: closed by the server`))
  return { close }
}

/** One client resuming after `resumeId`: the events it got until `live` (at most `timeoutMs`). */
function resume(port: number, transport: Transport, resumeId: number, timeoutMs: number, room = ROOM): Promise<Outcome> {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const ids: number[] = []
    let reset = false
    let done = false
    const finish = (error: string | null): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      stream.close()
      resolve({ ms: performance.now() - t0, ids, reset, error })
    }
    const timer = setTimeout(() => finish(`no live within ${timeoutMs} ms (${ids.length} events)`), timeoutMs)
    const stream = openStream(port, transport, room, resumeId, (id, kind) => {
      if (kind === 'live') finish(null)
      else if (kind === 'reset') reset = true
      else ids.push(id)
    }, finish)
  })
}

/** Clients resuming at once, client i after `ids[plan[i].at]`; each must get exactly the ids after its own, then `live`. */
export interface ResumePlan {
  port: number
  room: string
  ids: number[]
  plan: { transport: Transport; at: number }[]
  timeoutMs: number
}

export interface ResumeOutcome {
  /** From the first connect to the last client's `live`; null: not every client went live within the bound. */
  allLiveMs: number | null
  /** From the first connect until every client was live or had given up. */
  ms: number
  live: number
  /** Events the clients received before `live` (or before giving up), all together. */
  replayed: number
  perClientMs: { p50: number; p99: number; max: number }
  exact: number
  resets: number
  errors: number
  errorSamples: string[]
}

/** Run the plan's clients at once and judge each against the ids after its resume id. */
export async function resumeAll(r: ResumePlan): Promise<ResumeOutcome> {
  const t0 = performance.now()
  const outcomes = await Promise.all(r.plan.map((p) => resume(r.port, p.transport, r.ids[p.at], r.timeoutMs, r.room)))
  const ms = Math.round(performance.now() - t0)
  const hist = new Histogram()
  let exact = 0
  let resets = 0
  const errorSamples: string[] = []
  outcomes.forEach((o, i) => {
    hist.record(o.ms)
    if (o.reset) resets++
    const expected = r.ids.slice(r.plan[i].at + 1)
    if (o.error === null && !o.reset && o.ids.length === expected.length && o.ids.every((id, k) => id === expected[k])) exact++
    else if (errorSamples.length < 5) errorSamples.push(o.error ?? `client ${i}: ${o.ids.length} events, expected ${expected.length}${o.reset ? ', reset' : ''}`)
  })
  const errors = outcomes.filter((o) => o.error !== null).length
  return {
    allLiveMs: errors === 0 ? ms : null,
    ms,
    live: outcomes.length - errors,
    replayed: outcomes.reduce((n, o) => n + o.ids.length, 0),
    perClientMs: { p50: hist.percentile(50), p99: hist.percentile(99), max: hist.max },
    exact,
    resets,
    errors,
    errorSamples,
  }
}

/** Fill the stream, then N clients resume at once; the server runs on `port`. */
export async function storm(port: number, clients: number, events: number, window: number): Promise<StormResult> {
  const ids = await fill(port, events)
  let seed = 7
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const plan = Array.from({ length: clients }, (_, i) => ({ transport: (i % 2 === 0 ? 'sse' : 'ws') as Transport, at: ids.length - 1 - Math.floor(rand() * Math.min(window, ids.length)) }))
  // No settling: the storm begins at once, the tail maybe still behind the store; a client is
  // exact only with every event posted before it asked (read-your-writes).
  const before = await metrics(port)
  const behindAtStart = events - (before.get('tailcast_events_ingested_total') ?? 0)
  const r = await resumeAll({ port, room: ROOM, ids, plan, timeoutMs: 60_000 })
  const after = await metrics(port)
  const delta = (name: string): number | null => (after.has(name) ? (after.get(name) ?? 0) - (before.get(name) ?? 0) : null)
  return {
    clients,
    events,
    window,
    behindAtStart,
    allLiveMs: r.ms,
    perClientMs: r.perClientMs,
    exact: r.exact,
    inexact: clients - r.exact,
    resets: r.resets,
    errors: r.errors,
    errorSamples: r.errorSamples,
    replaysFromMemory: delta('tailcast_replays_from_memory_total'),
    replaysFromStore: delta('tailcast_replays_from_store_total'),
    storeFinds: delta('tailcast_store_commands_total{command="find"}'),
    seam: await seamTimes(port, ids[ids.length - 1]),
  }
}

/** Time to `live` at the head of the stream, without and with a write acknowledged just before. */
async function seamTimes(port: number, newest: number): Promise<StormResult['seam']> {
  const quiet = new Histogram()
  const afterPost = new Histogram()
  let late = 0
  for (let i = 0; i < SEAM_TRIES; i++) {
    const transport = i % 2 === 0 ? 'sse' : 'ws'
    const q = await resume(port, transport, newest, 30_000)
    quiet.record(q.ms)
    const [id] = await fill(port, 1)
    const w = await resume(port, transport, newest, 30_000)
    afterPost.record(w.ms)
    // No live within the bound counts as late too (its time is the bound).
    if (w.error !== null || !w.ids.includes(id)) late++
    newest = id
  }
  const summary = (h: Histogram) => ({ p50: round1(h.percentile(50)), p99: round1(h.percentile(99)), max: round1(h.max) })
  return { quiet: summary(quiet), afterPost: summary(afterPost), late }
}

const round1 = (n: number): number => Math.round(n * 10) / 10
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const here = dirname(fileURLToPath(import.meta.url))

/** The old-resume phase's defaults (run.ts gives the server the history) and timings. */
export const OLD_RESUME = {
  clients: 500,
  events: 5000,
  /**
   * The hot history (TAILCAST_HISTORY_MAX_EVENTS): a resume from the oldest event is far behind it
   * and reads the store. It holds more than the POSTs of the whole phase: a replay reads the store
   * up to the history's floor, and events to other rooms move the floor on while its reads wait in
   * the queue; a history the POSTs pass within one turn of the queue is never reached (see
   * BENCHMARKS.md, the old-resume section).
   */
  history: 1000,
  /** POSTs per second to the other room, in the quiet window and during the storm. */
  rate: 10,
  /** The window without the storm, just before it. */
  quietSeconds: 5,
  /** The window after the storm's clients have left (all live, or cut off at the bound): their leaving is part of the storm. */
  leftSeconds: 10,
  /** The storm ends when every client is live, or after this: a client not live by then counts as not live. */
  boundSeconds: 60,
  /** After the POSTs stop, how long their answers and deliveries are waited for; one still missing then counts as never. */
  graceSeconds: 10,
}

/** Milliseconds; null: some did not complete within the phase's bounds and this percentile is one of them. */
export interface Timed {
  p50: number | null
  p99: number | null
  max: number | null
}

export interface PostFigures {
  sent: number
  /** Answered with a 2xx. */
  answered: number
  /** Of those, delivered to the follower. */
  delivered: number
  /** Send to 2xx. */
  postMs: Timed
  /** Send to the follower's receipt. */
  deliveryMs: Timed
  errorSamples: string[]
}

export interface OldResumeResult {
  clients: number
  events: number
  history: number
  rate: number
  boundSeconds: number
  /** POSTs to the other room in the quiet window before the storm. */
  quiet: PostFigures
  /** POSTs to the other room while the storm lasted (until every client was live, or the bound). */
  storm: PostFigures
  /** POSTs to the other room in the window right after the storm's clients left. */
  left: PostFigures
  resumes: ResumeOutcome
  /** Deltas of the server's counters over the storm (null: not reported, or /metrics did not answer). */
  replaysFromStore: number | null
  storeFinds: number | null
  /** How the follower's stream ended, if it did before the phase ended. */
  followerError: string | null
}

/**
 * Fill one room with `events`, follow another room, time POSTs to it for a quiet window; then
 * `clients` resume from the oldest event at once (in a process of their own) while the POSTs go on
 * at the same rate until every client is live or the bound passes; then for a window after they left.
 */
export async function oldResume(port: number, { clients, events, history }: { clients: number; events: number; history: number }): Promise<OldResumeResult> {
  const ids = await fill(port, events)
  // The tail past the seeded events before anything is timed (no longer than the bound).
  for (const end = performance.now() + OLD_RESUME.boundSeconds * 1000; performance.now() < end; await sleep(200)) {
    if (((await metrics(port)).get('tailcast_events_ingested_total') ?? Infinity) >= events) break
  }
  const arrivals = new Map<number, number>()
  const follower = await follow(port, OTHER_ROOM, ids[ids.length - 1], arrivals)
  try {
    const quiet = await timedPosts(port, sleep(OLD_RESUME.quietSeconds * 1000), arrivals)
    // A server that does not answer /metrics (the stalled before) leaves the deltas unknown, said on stderr.
    const counters = (when: string): Promise<Map<string, number> | null> => metrics(port).catch((err: Error) => (process.stderr.write(`  old-resume, ${when} the storm: ${err.message}\n`), null))
    const before = await counters('before')
    const plan = Array.from({ length: clients }, (_, i) => ({ transport: (i % 2 === 0 ? 'sse' : 'ws') as Transport, at: 0 }))
    const { outcome } = await resumeApart({ port, room: ROOM, ids, plan, timeoutMs: OLD_RESUME.boundSeconds * 1000 })
    // The next window's POSTs start as the clients leave, while the storm's last answers are still awaited.
    const [resumes, storm, left] = await Promise.all([outcome, timedPosts(port, outcome, arrivals), outcome.then(() => timedPosts(port, sleep(OLD_RESUME.leftSeconds * 1000), arrivals))])
    const after = await counters('after')
    const delta = (name: string): number | null => (before?.has(name) === true && after?.has(name) === true ? (after.get(name) ?? 0) - (before.get(name) ?? 0) : null)
    return {
      clients,
      events,
      history,
      rate: OLD_RESUME.rate,
      boundSeconds: OLD_RESUME.boundSeconds,
      quiet,
      storm,
      left,
      resumes,
      replaysFromStore: delta('tailcast_replays_from_store_total'),
      storeFinds: delta('tailcast_store_commands_total{command="find"}'),
      followerError: follower.error(),
    }
  } finally {
    follower.close()
  }
}

/**
 * A follower of `room` that records each event's receive time in `arrivals`; resolves once it is
 * live. It resumes after `newest`, an event the hot history holds, so that its opening reads
 * nothing from the store (opened without an id, it read the whole collection, which on FerretDB at
 * a load average of 10 missed the 5 s store deadline two times in three); should it fail anyway,
 * it reconnects, as a client does, up to 3 times, 30 s each.
 */
async function follow(port: number, room: string, newest: number, arrivals: Map<number, number>): Promise<{ close(): void; error(): string | null }> {
  let error: string | null = null
  for (let attempt = 1; ; attempt++) {
    let stream!: { close(): void }
    const live = await new Promise<boolean>((resolve) => {
      stream = openStream(port, 'sse', room, newest, (id, kind) => {
        if (kind === 'live') resolve(true)
        else if (kind === 'event') arrivals.set(id, performance.now())
      }, (e) => {
        error = e
        resolve(false)
      })
      setTimeout(() => resolve(false), 30_000).unref()
    })
    if (live) {
      error = null // from here on: how this stream ended, if it did
      return { close: () => stream.close(), error: () => error }
    }
    stream.close()
    process.stderr.write(`  old-resume: the follower of ${room} not live (${error ?? 'no live in 30 s'}), try ${attempt} of 3\n`)
    if (attempt === 3) throw new Error(`old-resume: the follower of ${room} not live in 3 tries`)
  }
}

/**
 * A plan's clients run by bench/storm-clients.ts in a child process, so that this process, which
 * times the POSTs and the follower meanwhile, is not the one busy scanning their replays. Resolves
 * once the clients are connecting; `outcome` fails if the child does not answer within the plan's
 * bound and 30 s.
 */
async function resumeApart(r: ResumePlan): Promise<{ outcome: Promise<ResumeOutcome> }> {
  const child = fork(join(here, 'storm-clients.js'), [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const answer = (ms: number, what: string): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill()
        reject(new Error(`the storm's clients: no ${what} within ${ms} ms`))
      }, ms)
      child.once('message', (m) => {
        clearTimeout(timer)
        resolve(m)
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`the storm's clients exited (code ${code}) before their ${what}`))
      })
    })
  await answer(10_000, 'ready')
  child.send(r)
  return { outcome: answer(r.timeoutMs + 30_000, 'outcome') as Promise<ResumeOutcome> }
}

/**
 * POST to the other room at OLD_RESUME.rate until `stop` settles, each timed from its send to its
 * 2xx and to its receipt by the follower (`arrivals`: id to receive time, same clock); then wait for
 * those outstanding, at most graceSeconds.
 */
async function timedPosts(port: number, stop: Promise<unknown>, arrivals: Map<number, number>): Promise<PostFigures> {
  const agent = new http.Agent({ keepAlive: true })
  const posts: { sentAt: number; answeredAt?: number; id?: number; failed?: boolean }[] = []
  const errorSamples: string[] = []
  let over = false
  const fail = (p: { failed?: boolean }, what: string): void => {
    if (over) return
    p.failed = true
    if (errorSamples.length < 5) errorSamples.push(what)
  }
  const post = (k: number): void => {
    const p: (typeof posts)[number] = { sentAt: performance.now() }
    posts.push(p)
    const req = http.request({ host: '127.0.0.1', port, path: '/messages', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => {
        if (res.statusCode !== 202 && res.statusCode !== 201) return fail(p, `POST ${res.statusCode} ${body.slice(0, 120)}`)
        p.answeredAt = performance.now()
        p.id = Number((JSON.parse(body) as { id: string }).id)
      })
    })
    req.on('error', (err) => fail(p, `POST: ${err.message}`))
    req.end(JSON.stringify({ type: 'Tick', room: OTHER_ROOM, data: { k } }))
  }
  let stopped = false
  const stopping = stop.then(
    () => (stopped = true),
    () => (stopped = true),
  )
  const t0 = performance.now()
  for (let k = 0; !stopped; k++) {
    const wait = t0 + (k * 1000) / OLD_RESUME.rate - performance.now()
    if (wait > 0) await Promise.race([stopping, sleep(wait)])
    if (!stopped) post(k)
  }
  const settled = (): boolean => posts.every((p) => p.failed === true || (p.id !== undefined && arrivals.has(p.id)))
  for (const end = performance.now() + OLD_RESUME.graceSeconds * 1000; !settled() && performance.now() < end; ) await sleep(50)
  over = true
  agent.destroy()
  const deliveredAt = (p: (typeof posts)[number]): number | undefined => (p.id === undefined ? undefined : arrivals.get(p.id))
  return {
    sent: posts.length,
    answered: posts.filter((p) => p.answeredAt !== undefined).length,
    delivered: posts.filter((p) => deliveredAt(p) !== undefined).length,
    postMs: timed(posts.map((p) => (p.answeredAt ?? Infinity) - p.sentAt)),
    deliveryMs: timed(posts.map((p) => (deliveredAt(p) ?? Infinity) - p.sentAt)),
    errorSamples,
  }
}

/** Percentiles of a few hundred times, Infinity for one that never completed. */
function timed(ms: number[]): Timed {
  const sorted = [...ms].sort((a, b) => a - b)
  const at = (p: number): number | null => {
    const v = sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]
    return v === undefined || !Number.isFinite(v) ? null : round1(v)
  }
  return { p50: at(50), p99: at(99), max: at(100) }
}
