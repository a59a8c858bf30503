import { isUtf8 } from 'node:buffer'
import http from 'node:http'
import https from 'node:https'
import WebSocket from 'ws'
import { redactUrl } from '../config.js'
import { parseNewEvent, type StoredEvent } from '../event.js'

/**
 * The one client of a tailcast stream (used by `tailcast record` and by the relay): follows a
 * stream URL over WebSocket (`ws://`, `wss://`) or SSE (`http://`, `https://`), resumes with the
 * id of the last event it handed over, and reconnects with exponential backoff.
 */

export interface ControlInfo {
  type: 'live' | 'reset' | 'end'
  /** The stream position the control event carries. */
  id: number
  data: Record<string, unknown>
}

export type StreamStatus =
  | { state: 'connecting'; attempt: number }
  | { state: 'open' }
  | { state: 'down'; error: string; retryInMs: number }
  | { state: 'closed' }

export interface StreamClientOptions {
  url: string
  /** A JWT for a private stream, sent as `Authorization: Bearer` (never in the URL, so never in a log). */
  token?: string
  /** Resume after this id; null or 0: from the start (the stream's whole live state). */
  lastEventId?: number | null
  /** Each event above the resume position, in id order; the next one waits for the returned promise. */
  onEvent(e: StoredEvent): void | Promise<void>
  /** The server switched to real time; `position` is the stream position it reported. */
  onLive?(position: number): void
  /** A heartbeat of a live stream reported the server's position (every event up to it was sent). */
  onPosition?(position: number): void
  /** The server could not honour the resume id and restarts from its whole live state. */
  onReset?(info: ControlInfo): void
  /** The server is ending the stream (`data.reason`: shutdown, slow, expired, error); a reconnect follows. */
  onEnd?(info: ControlInfo): void
  /**
   * After a `reset`, an event whose id is not above the last one handed over: the upstream's
   * history was replaced by another one. Never passed to onEvent.
   */
  onBehind?(e: StoredEvent): void
  onStatus?(s: StreamStatus): void
  /**
   * A refusal that retrying cannot fix: HTTP 4xx other than 408/429, a redirect, or an answer that
   * is not a stream (e.g. the JSON of `/health`): the URL is wrong. The client stops.
   */
  onFatal?(err: Error): void
  /** A handler failed; the client reconnects from the last event handled. */
  onError?(err: Error): void
  /**
   * The server sent an event that tailcast's decoder refuses (a hostile or older upstream): it is
   * skipped, and the stream goes on after it. Without this handler it is skipped silently.
   */
  onInvalid?(id: number, reason: string): void
  minBackoffMs?: number
  maxBackoffMs?: number
  /** No byte, frame or ping for this long: the connection is presumed dead and re-opened. */
  idleTimeoutMs?: number
}

export class StreamProtocolError extends Error {
  override name = 'StreamProtocolError'
  /** Set when the envelope was sound but the event breaks a rule of the decoder: it can be skipped. */
  constructor(message: string, readonly eventId?: number) {
    super(message)
  }
}

/**
 * One message of a stream (the JSON envelope of the wire format) to a stored event or a control
 * event. The event body goes through parseNewEvent, the one validation of events.
 */
export function parseWireMessage(value: unknown): { event: StoredEvent } | { control: ControlInfo } {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new StreamProtocolError('a stream message must be a JSON object')
  const { id, ...rest } = value as Record<string, unknown>
  if (typeof id !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(id) || !Number.isSafeInteger(Number(id))) {
    throw new StreamProtocolError(`id must be a positive integer as decimal text, got ${JSON.stringify(id)?.slice(0, 40)}`)
  }
  if (rest.type === 'live' || rest.type === 'reset' || rest.type === 'end') {
    const data = rest.data !== null && typeof rest.data === 'object' ? (rest.data as Record<string, unknown>) : {}
    return { control: { type: rest.type, id: Number(id), data } }
  }
  if (id === '0') throw new StreamProtocolError('an event id must be positive')
  try {
    const e = parseNewEvent(rest)
    return { event: { id: Number(id), ...e } }
  } catch (err) {
    throw new StreamProtocolError((err as Error).message, Number(id))
  }
}

interface Connection {
  close(): void
}

/** Every answer but a stream or a server's passing trouble (5xx, 408, 429) means the URL is wrong: retrying cannot help. */
const FATAL = (status: number): boolean => status < 500 && status !== 408 && status !== 429

const NOT_A_STREAM = 'not a stream (a tailcast stream URL is /messages, /v1/competitions or /v1/competitions/ID)'

/** Why an HTTP answer other than a stream ended the connection (its body's message, or its status). */
function refusal(res: http.IncomingMessage, body: string): string {
  const status = res.statusCode ?? 0
  if (status >= 300 && status < 400) return `a redirect${res.headers.location ? ` to ${redactUrl(res.headers.location)}` : ''}: give that URL`
  if (status < 300) return `${res.headers['content-type'] ?? 'no content type'}, ${NOT_A_STREAM}`
  return body
}

export class StreamClient {
  private pos: number
  private gen = 0
  /** Events still queued from this connection are dropped (its handler failed). */
  private failedGen = -1
  private conn: Connection | undefined
  private chain: Promise<void> = Promise.resolve()
  private attempt = 0
  private stopped = false
  private retryTimer: NodeJS.Timeout | undefined
  private idleTimer: NodeJS.Timeout | undefined
  private resetSeen = false
  private readonly transport: 'ws' | 'sse'

  constructor(private readonly opts: StreamClientOptions) {
    this.pos = opts.lastEventId ?? 0
    let u: URL
    try {
      u = new URL(opts.url)
    } catch {
      throw new Error(`not a URL: ${redactUrl(opts.url)}`)
    }
    if (u.protocol === 'ws:' || u.protocol === 'wss:') this.transport = 'ws'
    else if (u.protocol === 'http:' || u.protocol === 'https:') this.transport = 'sse'
    else throw new Error(`unsupported URL scheme ${u.protocol} (use ws://, wss://, http:// or https://)`)
  }

  /** Id of the last event handed over (or the last `live` position): the resume id. */
  get position(): number {
    return this.pos
  }

  start(): void {
    this.connect()
  }

  /** Stop following; resolves once the handler of every event already received has finished. */
  async close(): Promise<void> {
    this.stopped = true
    this.gen++
    clearTimeout(this.retryTimer)
    clearTimeout(this.idleTimer)
    this.conn?.close()
    this.conn = undefined
    await this.chain
    this.opts.onStatus?.({ state: 'closed' })
  }

  private connect(): void {
    if (this.stopped) return
    const gen = ++this.gen
    this.resetSeen = false
    this.opts.onStatus?.({ state: 'connecting', attempt: this.attempt })
    const handlers = {
      open: () => {
        if (gen === this.gen) {
          this.touch(gen)
          this.opts.onStatus?.({ state: 'open' })
        }
      },
      activity: () => gen === this.gen && this.touch(gen),
      message: (bytes: Buffer, sseId?: string) => gen === this.gen && this.receive(gen, bytes, sseId),
      position: (raw: string) => {
        const position = positiveId(raw)
        if (gen !== this.gen || position === null) return
        // In order with the events before it: the position holds once they are handled.
        this.chain = this.chain.then(() => {
          if (gen !== this.gen || position <= this.pos) return
          this.pos = position
          this.opts.onPosition?.(position)
        })
      },
      end: (error: string, status?: number) => gen === this.gen && this.ended(gen, error, status),
    }
    this.conn = this.transport === 'ws' ? this.openWs(handlers) : this.openSse(handlers)
  }

  private touch(gen: number): void {
    clearTimeout(this.idleTimer)
    const ms = this.opts.idleTimeoutMs ?? 45_000
    this.idleTimer = setTimeout(() => this.ended(gen, `no data or ping for ${ms} ms`), ms)
    this.idleTimer.unref()
  }

  private ended(gen: number, error: string, status?: number): void {
    if (gen !== this.gen || this.stopped) return
    this.gen++
    clearTimeout(this.idleTimer)
    this.conn?.close()
    this.conn = undefined
    if (status !== undefined && FATAL(status)) {
      this.stopped = true
      this.opts.onStatus?.({ state: 'closed' })
      this.opts.onFatal?.(new Error(`${redactUrl(this.opts.url)} answered ${status}: ${error}`))
      return
    }
    const min = this.opts.minBackoffMs ?? 200
    const max = this.opts.maxBackoffMs ?? 10_000
    const base = Math.min(max, min * 2 ** Math.min(this.attempt, 20))
    const retryInMs = Math.round(base * (0.8 + Math.random() * 0.4))
    this.attempt++
    this.opts.onStatus?.({ state: 'down', error, retryInMs })
    // Reconnect only after every event received so far is handled, so the resume id is exact.
    void this.chain.then(() => {
      if (this.stopped) return
      this.retryTimer = setTimeout(() => this.connect(), retryInMs)
    })
  }

  /** One message's bytes (and, over SSE, its `id:` field). */
  private receive(gen: number, bytes: Buffer, sseId?: string): void {
    this.touch(gen)
    if (!isUtf8(bytes)) {
      // Read as UTF-8 it would become U+FFFD: a different event than the one sent. Skip it by its id.
      const id = positiveId(sseId ?? idOf(bytes.toString('latin1')))
      if (id !== null) this.skip(gen, id, 'the message is not valid UTF-8')
      else this.ended(gen, 'bad message from the server: not valid UTF-8')
      return
    }
    let msg: ReturnType<typeof parseWireMessage>
    try {
      msg = parseWireMessage(JSON.parse(bytes.toString('utf8')))
    } catch (err) {
      const id = err instanceof StreamProtocolError ? err.eventId : undefined
      if (id === undefined) this.ended(gen, `bad message from the server: ${(err as Error).message}`)
      else this.skip(gen, id, (err as Error).message)
      return
    }
    // Events received before a connection ends are still handed over, in order; only a failed
    // handler drops the rest of its connection (they come again after the reconnect).
    this.chain = this.chain.then(async () => {
      if (gen === this.failedGen) return
      try {
        await this.handle(msg)
      } catch (err) {
        this.failedGen = gen
        this.opts.onError?.(err as Error)
        this.ended(gen, `handler failed: ${(err as Error).message}`)
      }
    })
  }

  /** One bad event must not stop the stream: reconnecting would only fetch it again. */
  private skip(gen: number, id: number, reason: string): void {
    this.chain = this.chain.then(() => {
      if (gen === this.failedGen || id <= this.pos) return
      this.opts.onInvalid?.(id, reason)
      this.pos = id
    })
  }

  private async handle(msg: ReturnType<typeof parseWireMessage>): Promise<void> {
    if ('control' in msg) {
      const c = msg.control
      if (c.type === 'reset') {
        this.resetSeen = true
        this.opts.onReset?.(c)
      } else if (c.type === 'end') {
        // The server is ending the stream and says why; the reconnect that follows resumes from pos.
        this.opts.onEnd?.(c)
      } else {
        this.attempt = 0
        // `live` carries the stream position: every event of the stream up to it was delivered.
        if (c.id > this.pos) this.pos = c.id
        this.opts.onLive?.(c.id)
      }
      return
    }
    const e = msg.event
    if (e.id <= this.pos) {
      if (this.resetSeen) this.opts.onBehind?.(e)
      return
    }
    await this.opts.onEvent(e)
    this.pos = e.id
  }

  private authorization(): Record<string, string> {
    return this.opts.token === undefined || this.opts.token === '' ? {} : { authorization: `Bearer ${this.opts.token}` }
  }

  private openWs(h: Handlers): Connection {
    const u = new URL(this.opts.url)
    if (this.pos > 0) u.searchParams.set('lastEventId', String(this.pos))
    else u.searchParams.delete('lastEventId')
    // UTF-8 is checked per message (receive), so one bad event is skipped rather than closing with 1007.
    const ws = new WebSocket(u, { perMessageDeflate: false, skipUTF8Validation: true, headers: this.authorization() })
    let heard = false
    ws.on('open', h.open)
    ws.on('ping', (data) => {
      heard = true
      h.activity()
      if (data.length > 0) h.position(data.toString())
    })
    ws.on('message', (data, isBinary) => {
      heard = true
      if (isBinary) return h.end('the server sent a binary frame')
      // The default binaryType: one Buffer per message.
      h.message(data as Buffer)
    })
    ws.on('unexpected-response', (_req, res) => {
      readBody(res, (body) => h.end(refusal(res, body), res.statusCode))
    })
    ws.on('close', (code, reason) => {
      // A tailcast stream speaks at once (replay, then `live`) and closes with a code (1012, 1013,
      // ...); a server without a WebSocket at this path (Fastify's /health) accepts and closes bare.
      if (!heard && code === 1005) return h.end(`switched to WebSocket, then closed it (1005) before any message: ${NOT_A_STREAM}`, 101)
      h.end(`connection closed (${code}${reason.length > 0 ? ' ' + reason.toString() : ''})`)
    })
    ws.on('error', (err) => h.end(err.message))
    return { close: () => ws.terminate() }
  }

  private openSse(h: Handlers): Connection {
    const u = new URL(this.opts.url)
    const headers: Record<string, string> = { accept: 'text/event-stream', 'cache-control': 'no-cache', ...this.authorization() }
    if (this.pos > 0) headers['last-event-id'] = String(this.pos)
    const get = u.protocol === 'https:' ? https.get : http.get
    // A dedicated connection (no keep-alive pool): a pooled socket may be one the server just closed.
    const req = get(u, { headers, agent: false }, (res) => {
      const type = res.headers['content-type']
      if (res.statusCode !== 200 || (type !== undefined && !/^text\/event-stream\b/i.test(type))) {
        readBody(res, (body) => h.end(refusal(res, body), res.statusCode))
        return
      }
      h.open()
      // Bytes, not text: a message that is not valid UTF-8 must be seen as such, not as U+FFFD.
      let buf: Buffer = Buffer.alloc(0)
      let data: Buffer[] = []
      let sseId: string | undefined
      res.on('data', (chunk: Buffer) => {
        h.activity()
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
        let start = 0
        let nl: number
        while ((nl = buf.indexOf(0x0a, start)) >= 0) {
          let line = buf.subarray(start, nl)
          start = nl + 1
          if (line.at(-1) === 0x0d) line = line.subarray(0, -1)
          if (line.length === 0) {
            if (data.length > 0) h.message(data.length === 1 ? data[0] : Buffer.concat(data.flatMap((d, i) => (i === 0 ? [d] : [NL, d]))), sseId)
            data = []
            sseId = undefined
          } else if (startsWith(line, 'data:')) {
            data.push(line.subarray(line[5] === 0x20 ? 6 : 5))
          } else if (startsWith(line, 'id:')) {
            sseId = line.subarray(3).toString('latin1').trim()
          } else if (startsWith(line, ': ping ')) {
            h.position(line.subarray(7).toString('latin1'))
          }
          // event:, retry: and other comments: the JSON carries the type; backoff is ours.
        }
        buf = buf.subarray(start)
      })
      res.on('close', () => h.end('the server ended the stream'))
      res.on('error', (err) => h.end(err.message))
    })
    req.on('error', (err) => h.end(err.message))
    return { close: () => req.destroy() }
  }
}

const NL = Buffer.from('\n')

function startsWith(line: Buffer, prefix: string): boolean {
  return line.length >= prefix.length && line.toString('latin1', 0, prefix.length) === prefix
}

/** A positive id as the wire carries it (decimal text, at most 16 digits), or null. */
function positiveId(raw: string | undefined): number | null {
  return raw !== undefined && /^[1-9][0-9]{0,15}$/.test(raw) && Number.isSafeInteger(Number(raw)) ? Number(raw) : null
}

/** The `id` of a wire message whose text cannot be trusted (found without parsing it as UTF-8). */
function idOf(text: string): string | undefined {
  try {
    const v = JSON.parse(text) as { id?: unknown }
    return typeof v.id === 'string' ? v.id : undefined
  } catch {
    return undefined
  }
}

interface Handlers {
  open(): void
  activity(): void
  message(bytes: Buffer, sseId?: string): void
  position(raw: string): void
  end(error: string, status?: number): void
}

function readBody(res: http.IncomingMessage, done: (text: string) => void): void {
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (d: string) => {
    if (body.length < 2000) body += d
  })
  res.on('end', () => {
    let text = body.trim()
    try {
      const parsed = JSON.parse(body) as { message?: unknown }
      if (typeof parsed.message === 'string') text = parsed.message
    } catch {}
    done(text === '' ? `HTTP ${res.statusCode}` : text.slice(0, 300))
  })
  res.on('error', () => done(`HTTP ${res.statusCode}`))
}
