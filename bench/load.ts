/**
 * One load process: opens SSE and WebSocket clients to one stream URL, from several loopback source
 * addresses, and counts what they receive. Each event carries `"sentAt":<ms>` (performance clock of
 * the injector, comparable across processes on one machine); the latency is receive time minus that.
 * Clients are lean on purpose (raw sockets, no HTTP or WebSocket library, no JSON parse per event,
 * just a scan for the marker): the load processes share the two cores with the server.
 * Driven by its parent over IPC: {cmd:'open'|'reset'|'report'|'close'}.
 */
import http2 from 'node:http2'
import net from 'node:net'
import tls from 'node:tls'
import { randomBytes } from 'node:crypto'
import { Histogram } from './histogram.js'
import { pong, walkFrames } from './ws-frames.js'

interface OpenCmd {
  cmd: 'open'
  url: string
  sse: number
  ws: number
  localAddresses: string[]
  concurrency: number
  /**
   * How SSE clients connect: plain HTTP/1.1 (default), HTTP/1.1 over TLS (one connection per
   * stream, as a browser's) or HTTP/2 over TLS with `streamsPerConnection` streams on each
   * connection (a browser's tabs on one origin). The server's certificate is not checked.
   */
  protocol?: 'http' | 'https1' | 'h2'
  streamsPerConnection?: number
}

const MARK = Buffer.from('"sentAt":')
const SEP = Buffer.from('\n\n')
const HEAD_END = Buffer.from('\r\n\r\n')
const OK = Buffer.from('HTTP/1.1 200')
const SWITCHING = Buffer.from('HTTP/1.1 101')
const hist = new Histogram()
let deliveries = 0
/** When the last event arrived (same clock as `sentAt`). */
let lastAt = 0
let open = 0
let errors = 0
let disconnects = 0
let closing = false
const errorSamples: string[] = []
const sockets: { close(): void }[] = []

function now(): number {
  return performance.timeOrigin + performance.now()
}

function noteError(what: string): void {
  errors++
  if (errorSamples.length < 5) errorSamples.push(what)
}

/** Count the events in `buf` (complete records only) and record their latencies. */
function scan(buf: Buffer, end: number, at: number): void {
  let pos = buf.indexOf(MARK, 0)
  while (pos !== -1 && pos < end) {
    let i = pos + MARK.length
    const start = i
    while (i < end) {
      const c = buf[i]
      if ((c >= 48 && c <= 57) || c === 46) i++
      else break
    }
    const sent = Number(buf.toString('latin1', start, i))
    if (sent > 0) {
      hist.record(at - sent)
      deliveries++
      lastAt = at
    }
    pos = buf.indexOf(MARK, i)
  }
}

/**
 * A raw-socket client: the request written by hand, the status line checked, then each chunk of the
 * body handed to `body`, which returns how far it consumed (the rest waits for the next chunk). No
 * HTTP or WebSocket library and no stream machinery per event, so the load processes, which share
 * the cores with the server, spend as little as they can per delivery.
 */
function openRaw(url: URL, localAddress: string, name: string, request: string, status: Buffer, body: (buf: Buffer, socket: net.Socket) => number): Promise<void> {
  return new Promise((resolve) => {
    let carry: Buffer | null = null
    let opened = false
    const socket =
      url.protocol === 'https:'
        ? tls.connect({ host: url.hostname, port: Number(url.port), localAddress, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] } as tls.ConnectionOptions)
        : net.connect({ host: url.hostname, port: Number(url.port), localAddress })
    socket.setNoDelay(true)
    socket.on(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => socket.write(request))
    socket.on('data', (chunk: Buffer) => {
      let buf: Buffer = carry === null ? chunk : Buffer.concat([carry, chunk])
      carry = null
      if (!opened) {
        const head = buf.indexOf(HEAD_END)
        if (head === -1) {
          carry = buf
          return
        }
        if (!buf.subarray(0, status.length).equals(status)) {
          noteError(`${name} status ${buf.toString('latin1', 9, 12)}`)
          socket.destroy()
          resolve()
          return
        }
        opened = true
        open++
        resolve()
        buf = buf.subarray(head + HEAD_END.length)
      }
      const used = body(buf, socket)
      if (used < buf.length) carry = used === 0 ? buf : Buffer.from(buf.subarray(used))
    })
    socket.on('error', (err) => {
      if (!opened) {
        noteError(`${name} connect: ${err.message}`)
        resolve()
      } else if (!closing) noteError(`${name}: ${err.message}`)
    })
    socket.on('close', () => {
      if (!opened) return resolve()
      open--
      if (!closing) disconnects++
    })
    sockets.push({ close: () => socket.destroy() })
  })
}

/** SSE: complete records scanned for the marker (chunk-size lines never contain it). */
function openSse(url: URL, localAddress: string): Promise<void> {
  const request = `GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\naccept: text/event-stream\r\n\r\n`
  return openRaw(url, localAddress, 'SSE', request, OK, (buf) => {
    const last = buf.lastIndexOf(SEP)
    if (last === -1) return 0
    scan(buf, last, now())
    return last + SEP.length
  })
}

/** `streams` SSE streams on one HTTP/2 connection; each stream's records scanned as openSse's. */
function openH2(url: URL, localAddress: string, streams: number): Promise<void> {
  return new Promise((resolve) => {
    const session = http2.connect(url.origin, { localAddress, rejectUnauthorized: false } as http2.SecureClientSessionOptions)
    let pending = streams
    const settled = (): void => {
      if (--pending === 0) resolve()
    }
    session.on('error', (err) => {
      if (!closing) noteError(`h2: ${err.message}`)
    })
    sockets.push({ close: () => session.destroy() })
    for (let i = 0; i < streams; i++) {
      let carry: Buffer | null = null
      let opened = false
      const req = session.request({ ':path': `${url.pathname}${url.search}`, accept: 'text/event-stream' })
      req.on('response', (h) => {
        if (h[':status'] !== 200) {
          noteError(`h2 status ${h[':status']}`)
          req.close()
        } else {
          opened = true
          open++
        }
        settled()
      })
      req.on('data', (chunk: Buffer) => {
        const buf: Buffer = carry === null ? chunk : Buffer.concat([carry, chunk])
        carry = null
        const last = buf.lastIndexOf(SEP)
        if (last === -1) {
          carry = buf
          return
        }
        scan(buf, last, now())
        if (last + SEP.length < buf.length) carry = Buffer.from(buf.subarray(last + SEP.length))
      })
      req.on('error', (err) => {
        if (!opened) settled()
        if (!closing) noteError(`h2 stream: ${err.message}`)
      })
      req.on('close', () => {
        if (!opened) return
        open--
        if (!closing) disconnects++
      })
    }
  })
}

/**
 * WebSocket: the server's frames (never masked) walked header by header; text payloads are scanned
 * for the marker, pings answered with a masked pong (the server cuts off a client that does not
 * answer), a close frame ends the connection.
 */
function openWs(url: URL, localAddress: string): Promise<void> {
  const request =
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
    `sec-websocket-key: ${randomBytes(16).toString('base64')}\r\nsec-websocket-version: 13\r\n\r\n`
  return openRaw(url, localAddress, 'WS', request, SWITCHING, (buf, socket) => {
    const at = now()
    return walkFrames(buf, (opcode, payload) => {
      if (opcode === 1) scan(payload, payload.length, at)
      else if (opcode === 9) socket.write(pong(payload))
      else if (opcode === 8) socket.end()
    })
  })
}

async function openAll(c: OpenCmd): Promise<void> {
  const url = new URL(c.url)
  const jobs: (() => Promise<void>)[] = []
  if (c.protocol === 'h2') {
    const per = c.streamsPerConnection ?? 10
    for (let left = c.sse; left > 0; left -= per) {
      const from = c.localAddresses[jobs.length % c.localAddresses.length]
      const n = Math.min(per, left)
      jobs.push(() => openH2(url, from, n))
    }
  }
  // Interleave the two transports so that both are spread over all source addresses.
  for (let i = 0; i < Math.max(c.protocol === 'h2' ? 0 : c.sse, c.ws); i++) {
    if (i < c.sse && c.protocol !== 'h2') {
      const from = c.localAddresses[jobs.length % c.localAddresses.length]
      jobs.push(() => openSse(url, from))
    }
    if (i < c.ws) {
      const from = c.localAddresses[jobs.length % c.localAddresses.length]
      jobs.push(() => openWs(url, from))
    }
  }
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < jobs.length) await jobs[next++]()
  }
  await Promise.all(Array.from({ length: Math.min(c.concurrency, jobs.length) }, worker))
}

function send(msg: unknown): void {
  process.send?.(msg)
}

process.on('message', (m: { cmd: string }) => {
  switch (m.cmd) {
    case 'open':
      void openAll(m as unknown as OpenCmd).then(() => send({ type: 'opened', open, errors, errorSamples }))
      break
    case 'reset':
      hist.reset()
      deliveries = 0
      send({ type: 'reset' })
      break
    case 'report':
      send({ type: 'report', open, errors, disconnects, deliveries, lastAt, errorSamples, total: hist.total, max: hist.max, hist: hist.sparse() })
      break
    case 'close':
      closing = true
      for (const s of sockets) s.close()
      setTimeout(() => process.exit(0), 200)
      break
  }
})
process.on('disconnect', () => process.exit(0))
send({ type: 'ready' })
