import type { ChildProcess } from 'node:child_process'
import http from 'node:http'
import WebSocket from 'ws'

/** One event as a client saw it: the parsed JSON envelope plus what the transport carried. */
export interface Received {
  id: string
  type: string
  competitionId?: string
  room?: string
  time: string
  data: Record<string, unknown>
  /** SSE only: the `id:` field of the record (undefined when it had none). */
  sseId?: string
  /** SSE only: the `event:` field. */
  sseEvent?: string
  /** performance.now() when the client parsed it (for timing checks, e.g. replay speed). */
  receivedAt?: number
  /** The JSON text exactly as it came (SSE: the data lines joined; WebSocket: the frame). */
  raw?: string
}

export interface StreamClient {
  readonly events: Received[]
  /** HTTP status of the response or of a refused WebSocket upgrade. */
  status: Promise<number>
  /** Body of a non-200 answer, parsed as JSON. */
  errorBody: Promise<unknown>
  /** Resolves when the connection ends: the WebSocket close code, or null for SSE. */
  ended: Promise<number | null>
  /** Waits until `pred` holds for the events received so far. */
  waitFor(pred: (events: Received[]) => boolean, timeoutMs?: number, what?: string): Promise<void>
  /** Stop reading from the socket (a client that cannot keep up), and start again. */
  pause(): void
  resume(): void
  close(): void
}

/** Events that are not control events (`live`, `reset`, `end`). */
export function dataEvents(events: Received[]): Received[] {
  return events.filter((e) => e.type !== 'live' && e.type !== 'reset' && e.type !== 'end')
}

export function waiter(events: Received[], ended: Promise<unknown>) {
  const listeners = new Set<() => void>()
  let done = false
  void ended.then(() => {
    done = true
    for (const l of listeners) l()
  })
  return {
    notify(): void {
      for (const l of listeners) l()
    },
    waitFor(pred: (events: Received[]) => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (pred(events)) {
            cleanup()
            resolve()
          } else if (done) {
            cleanup()
            reject(new Error(`stream ended before ${what} (${events.length} events)`))
          }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${events.length} events)`))
        }, timeoutMs)
        const cleanup = (): void => {
          clearTimeout(timer)
          listeners.delete(check)
        }
        listeners.add(check)
        check()
      })
    },
  }
}

/** A promise and its resolve function. */
export function deferred<T>(): [Promise<T>, (v: T) => void] {
  let resolve!: (v: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return [promise, resolve]
}

/** The body of a refused request, as JSON when it parses. */
function readBody(res: http.IncomingMessage, done: (body: unknown) => void): void {
  let body = ''
  res.setEncoding('utf8')
  res.on('data', (d: string) => (body += d))
  res.on('end', () => {
    try {
      done(JSON.parse(body))
    } catch {
      done(body)
    }
  })
}

/** The EventSource spec's parsing of an SSE body, chunk by chunk: each complete record with data is pushed to `events`. */
export function sseParser(events: Received[]): (chunk: string) => void {
  let buf = ''
  let id: string | undefined
  let type: string | undefined
  let data: string[] = []
  return (chunk) => {
    buf += chunk
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '')
      buf = buf.slice(nl + 1)
      if (line === '') {
        if (data.length > 0) {
          const raw = data.join('\n')
          const parsed = JSON.parse(raw) as Received
          parsed.raw = raw
          parsed.sseId = id
          parsed.sseEvent = type
          parsed.receivedAt = performance.now()
          events.push(parsed)
        }
        id = undefined
        type = undefined
        data = []
        continue
      }
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'id') id = value
      else if (field === 'event') type = value
      else if (field === 'data') data.push(value)
    }
  }
}

/** A minimal SSE client over node:http that parses the stream as the EventSource spec does. */
export function openSse(url: string, headers: Record<string, string> = {}): StreamClient {
  const events: Received[] = []
  const [status, resolveStatus] = deferred<number>()
  const [errorBody, resolveBody] = deferred<unknown>()
  const [ended, resolveEnded] = deferred<number | null>()
  const w = waiter(events, ended)
  let response: http.IncomingMessage | undefined
  const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
    resolveStatus(res.statusCode ?? 0)
    response = res
    if (res.statusCode !== 200) {
      readBody(res, (body) => {
        resolveBody(body)
        resolveEnded(null)
      })
      return
    }
    res.setEncoding('utf8')
    resolveBody(undefined)
    const parse = sseParser(events)
    res.on('data', (chunk: string) => {
      parse(chunk)
      w.notify()
    })
    res.on('close', () => resolveEnded(null))
  })
  req.on('error', () => {
    resolveStatus(0)
    resolveBody(undefined)
    resolveEnded(null)
  })
  return {
    events,
    status,
    errorBody,
    ended,
    waitFor: w.waitFor,
    pause: () => response?.pause(),
    resume: () => response?.resume(),
    close: () => req.destroy(),
  }
}

/** A WebSocket client (the `ws` package) collecting one JSON event per text frame. */
export function openWs(url: string, headers: Record<string, string> = {}): StreamClient & { socket: WebSocket } {
  const events: Received[] = []
  const [status, resolveStatus] = deferred<number>()
  const [errorBody, resolveBody] = deferred<unknown>()
  const [ended, resolveEnded] = deferred<number | null>()
  const w = waiter(events, ended)
  const socket = new WebSocket(url, { headers })
  socket.on('upgrade', (res) => resolveStatus(res.statusCode ?? 101))
  socket.on('open', () => resolveBody(undefined))
  socket.on('unexpected-response', (_req, res) => {
    resolveStatus(res.statusCode ?? 0)
    readBody(res, (body) => {
      resolveBody(body)
      resolveEnded(null)
    })
  })
  socket.on('message', (m) => {
    const raw = m.toString()
    const parsed = JSON.parse(raw) as Received
    parsed.raw = raw
    parsed.receivedAt = performance.now()
    events.push(parsed)
    w.notify()
  })
  socket.on('error', () => {
    resolveStatus(0)
    resolveEnded(null)
  })
  socket.on('close', (code) => resolveEnded(code))
  return {
    events,
    status,
    errorBody,
    ended,
    waitFor: w.waitFor,
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    close: () => socket.terminate(),
    socket,
  }
}

/** Open a stream over either transport; `path` includes the query. */
export function openStream(transport: 'sse' | 'ws', base: { url: string; wsUrl: string }, path: string, resumeId?: string): StreamClient {
  if (transport === 'sse') return openSse(base.url + path, resumeId === undefined ? {} : { 'last-event-id': resumeId })
  const sep = path.includes('?') ? '&' : '?'
  return openWs(base.wsUrl + path + (resumeId === undefined ? '' : `${sep}lastEventId=${resumeId}`))
}

export const isLive = (events: Received[]): boolean => events.some((e) => e.type === 'live')

/** POST /messages to a server's base URL: JSON for values, raw text or bytes as they are. */
export async function postTo(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : body instanceof Uint8Array ? new Blob([new Uint8Array(body)]) : JSON.stringify(body),
  })
  const text = await res.text()
  try {
    return { status: res.status, body: JSON.parse(text) }
  } catch {
    return { status: res.status, body: text }
  }
}

/**
 * A client that follows a stream across instances: when its connection ends it reconnects to the
 * next live instance, resuming from the last id it saw (as EventSource does with Last-Event-ID).
 */
export class Follower {
  readonly events: Received[] = []
  resets = 0
  reconnects = 0
  private lastId: string | undefined
  private stopped = false
  private current: { close(): void } | undefined

  /** `instances` without a `child` (a proxy in front of them) are always tried. */
  constructor(private readonly transport: 'sse' | 'ws', private readonly instances: { url: string; wsUrl: string; child?: ChildProcess }[], private at: number, private readonly path: string) {}

  start(): Promise<void> {
    return new Promise((resolveLive) => {
      const connect = (): void => {
        if (this.stopped) return
        const inst = this.instances[this.at % this.instances.length]
        if (inst.child !== undefined && (inst.child.exitCode !== null || inst.child.signalCode !== null)) {
          this.at++
          setTimeout(connect, 10)
          return
        }
        const c = openStream(this.transport, inst, this.path, this.lastId)
        this.current = c
        let seen = 0
        const take = (): void => {
          for (; seen < c.events.length; seen++) {
            const e = c.events[seen]
            if (e.type === 'reset') this.resets++
            if (e.type === 'live') resolveLive()
            else if (e.type !== 'reset') this.events.push(e)
            if (e.type !== 'reset') this.lastId = e.id
          }
        }
        void c.waitFor(() => (take(), false), 3_600_000).catch(() => {})
        void c.ended.then(() => {
          take()
          if (this.stopped) return
          this.reconnects++
          this.at++
          setTimeout(connect, 100)
        })
      }
      connect()
    })
  }

  stop(): void {
    this.stopped = true
    this.current?.close()
  }
}

