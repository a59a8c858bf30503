/**
 * The resume storm: a stream holding E events, then N clients (half SSE with `Last-Event-ID`, half
 * WebSocket with `?lastEventId=`) reconnecting at once, each at a random point among the newest K
 * events. Measures the time until every client is live, each client's time to `live`, the store
 * work done meanwhile (from /metrics), and checks that every client received exactly the events
 * after its id, no `reset`.
 */
import http from 'node:http'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { Histogram } from './histogram.js'
import { walkFrames } from './ws-frames.js'

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
const HEAD_END = Buffer.from('\r\n\r\n')
const ID = Buffer.from('{"id":"')
const LIVE = Buffer.from('","type":"live"')
const RESET = Buffer.from('","type":"reset"')

/** POST `n` events to the storm room, 64 at a time; their ids, ascending. */
async function fill(port: number, n: number): Promise<number[]> {
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
      req.end(JSON.stringify({ type: 'Tick', room: ROOM, data: { i, pad: 'x'.repeat(100) } }))
    })
  for (let i = 0; i < n; i += 64) await Promise.all(Array.from({ length: Math.min(64, n - i) }, (_, j) => post(i + j)))
  agent.destroy()
  return ids.sort((a, b) => a - b)
}

/** Counters of the server's /metrics, summed over their labels. */
async function metrics(port: number): Promise<Map<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve(body))
    }).on('error', reject)
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

/** One client: the request by hand, the body scanned for `"id":"…","type":"…"` until `live`. */
function resume(port: number, transport: 'sse' | 'ws', resumeId: number, timeoutMs: number): Promise<Outcome> {
  const request =
    transport === 'sse'
      ? // HTTP/1.0: no chunked framing to strip from the body.
        `GET /messages?room=${ROOM} HTTP/1.0\r\nhost: x\r\naccept: text/event-stream\r\nlast-event-id: ${resumeId}\r\n\r\n`
      : `GET /messages?room=${ROOM}&lastEventId=${resumeId} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
        `sec-websocket-key: ${randomBytes(16).toString('base64')}\r\nsec-websocket-version: 13\r\n\r\n`
  return new Promise((resolve) => {
    const t0 = performance.now()
    const ids: number[] = []
    let reset = false
    let carry: Buffer = Buffer.alloc(0)
    let opened = false
    let done = false
    const socket = net.connect({ host: '127.0.0.1', port })
    const finish = (error: string | null): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ ms: performance.now() - t0, ids, reset, error })
    }
    const timer = setTimeout(() => finish(`no live within ${timeoutMs} ms (${ids.length} events)`), timeoutMs)
    // Bytes scanned for `{"id":"<digits>","type":"…"`, no string made per event: the clients share
    // the two cores with the server, and what they spend is not the server's time to live.
    const scan = (buf: Buffer, end: number): void => {
      let at = buf.indexOf(ID)
      while (at !== -1 && at < end) {
        let i = at + ID.length
        let id = 0
        while (buf[i] >= 48 && buf[i] <= 57) id = id * 10 + buf[i++] - 48
        if (buf.compare(LIVE, 0, LIVE.length, i, i + LIVE.length) === 0) return finish(null)
        if (buf.compare(RESET, 0, RESET.length, i, i + RESET.length) === 0) reset = true
        else ids.push(id)
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
        if (status !== (transport === 'sse' ? '200' : '101')) return finish(`${transport} status ${status}`)
        opened = true
        buf = buf.subarray(head + HEAD_END.length)
      }
      if (transport === 'sse') {
        // Whole records only: an id split across chunks waits for the rest.
        const end = buf.lastIndexOf('\n\n')
        if (end !== -1) scan(buf, end)
        carry = end === -1 ? buf : buf.subarray(end + 2)
      } else {
        const used = walkFrames(buf, (opcode, payload) => opcode === 1 && scan(payload, payload.length))
        carry = buf.subarray(used)
      }
    })
    socket.on('error', (err) => finish(`${transport}: ${err.message}`))
    socket.on('close', () => finish(`${transport}: closed before live`))
  })
}

/** Fill the stream, then N clients resume at once; the server runs on `port`. */
export async function storm(port: number, clients: number, events: number, window: number): Promise<StormResult> {
  const ids = await fill(port, events)
  let seed = 7
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
  const plan = Array.from({ length: clients }, (_, i) => ({ transport: (i % 2 === 0 ? 'sse' : 'ws') as 'sse' | 'ws', at: ids.length - 1 - Math.floor(rand() * Math.min(window, ids.length)) }))
  // No settling: the storm begins at once, the tail maybe still behind the store; a client is
  // exact only with every event posted before it asked (read-your-writes).
  const before = await metrics(port)
  const behindAtStart = events - (before.get('tailcast_events_ingested_total') ?? 0)
  const t0 = performance.now()
  const outcomes = await Promise.all(plan.map((p) => resume(port, p.transport, ids[p.at], 60_000)))
  const allLiveMs = performance.now() - t0
  const after = await metrics(port)
  const delta = (name: string): number | null => (after.has(name) ? (after.get(name) ?? 0) - (before.get(name) ?? 0) : null)
  const hist = new Histogram()
  let exact = 0
  let resets = 0
  const errorSamples: string[] = []
  outcomes.forEach((o, i) => {
    hist.record(o.ms)
    if (o.reset) resets++
    const expected = ids.slice(plan[i].at + 1)
    if (o.error === null && !o.reset && o.ids.length === expected.length && o.ids.every((id, k) => id === expected[k])) exact++
    else if (errorSamples.length < 5) errorSamples.push(o.error ?? `client ${i}: ${o.ids.length} events, expected ${expected.length}${o.reset ? ', reset' : ''}`)
  })
  return {
    clients,
    events,
    window,
    behindAtStart,
    allLiveMs: Math.round(allLiveMs),
    perClientMs: { p50: hist.percentile(50), p99: hist.percentile(99), max: hist.max },
    exact,
    inexact: clients - exact,
    resets,
    errors: outcomes.filter((o) => o.error !== null).length,
    errorSamples,
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
