import type { ServerResponse } from 'node:http'
import { constants as h2, Http2ServerResponse, type ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { unnamedSse, type Frame } from '../event.js'
import { endEvent } from './end-reason.js'
import type { Batch } from './frames.js'
import type { CloseReason, Transport } from './transport.js'

const PING = Buffer.from(': ping\n\n')

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
  // No Connection header: Node's, `close` for a stream (src/shutdown.ts: its connection is never reused).
}

/** Headers HTTP/2 forbids (connection-specific): node drops them with a warning. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'])

/**
 * A client that is cut off for being slow still gets the `end` event, after what is queued for it:
 * if that is not out in this time, the connection (HTTP/1.1) or the stream (HTTP/2) is dropped and
 * its memory freed. The same grace a WebSocket gets to read up to its 1013.
 */
const SLOW_GRACE_MS = 5000

type Headers = Record<string, string | number | string[] | undefined>

/**
 * An SSE stream: a response to GET on a stream path, on HTTP/1.1 (its socket) or HTTP/2 (its own
 * stream of a shared connection).
 */
export function sseTransport(res: ServerResponse | Http2ServerResponse, opts: SseOptions): Transport & SseStream {
  return res instanceof Http2ServerResponse ? new Http2SseTransport(res, opts) : new SseTransport(res, opts)
}

/**
 * What SSE is whatever carries it: `retry:`, heartbeats as comments, control events made per
 * client and the `end` event before the server ends a stream. `unnamed`: records without `event:`
 * lines (control events too), so that `EventSource.onmessage` sees every event; the type is in the JSON.
 */
export interface SseOptions {
  unnamed: boolean
  retryMs: number
  /** Where the client resumes from (its Last-Event-ID; 0: the start): its position until something is sent. */
  position?: number
}

abstract class SseStream implements Transport {
  readonly kind = 'sse'
  protected closed = false
  /**
   * The stream position the client has reached, for the `end` event. A stream that ends before it
   * sent anything says the position the client came with, never 0: a client resuming from the
   * `end` event's id would otherwise get the whole replay again.
   */
  protected lastId: number
  protected readonly unnamed: boolean
  private readonly retryMs: number

  constructor(opts: SseOptions) {
    this.unnamed = opts.unnamed
    this.retryMs = opts.retryMs
    this.lastId = opts.position ?? 0
  }

  /** The status and headers (those already set on the reply, e.g. CORS, plus SSE's), and for a GET `retry:`. */
  open(headers: Headers, method = 'GET'): void {
    this.writeHead(headers)
    if (method !== 'HEAD') this.write(`retry: ${this.retryMs}\n\n`)
  }

  abstract send(batch: Batch): void
  abstract buffered(): number
  abstract drained(): Promise<void>
  abstract onClose(listener: () => void): void
  protected abstract writeHead(headers: Headers): void
  protected abstract write(chunk: Buffer | string): void
  /** Ends the response; `slow`: drop it if it is not out within the grace period. */
  protected abstract end(slow: boolean): void

  /** Control events are made per client, so their unnamed record is too. */
  sendControl(frame: Frame): void {
    if (this.closed) return
    this.lastId = frame.id
    this.write(this.unnamed ? Buffer.concat(unnamedSse(frame.sse)) : frame.sse)
  }

  responsive(): boolean {
    return true
  }

  heartbeat(position: number | null): void {
    if (!this.closed) this.write(position === null ? PING : `: ping ${position}\n\n`)
  }

  /**
   * SSE has no close code: the `end` event says why, then the response ends and EventSource
   * reconnects (after `retry:`) with Last-Event-ID.
   */
  close(reason: CloseReason): void {
    if (this.closed) return
    this.sendControl(endEvent(reason, this.lastId, this.retryMs))
    this.closed = true
    this.end(reason === 'slow')
  }
}

/**
 * SSE on HTTP/1.1, written straight to the response: each client gets the shared bytes of a batch
 * in one write, and the socket's queue is what backpressure measures.
 */
export class SseTransport extends SseStream {
  constructor(
    private readonly res: ServerResponse,
    opts: SseOptions,
  ) {
    super(opts)
    res.on('close', () => {
      this.closed = true
    })
  }

  protected writeHead(headers: Headers): void {
    this.res.writeHead(200, { ...headers, ...SSE_HEADERS })
  }

  protected write(chunk: Buffer | string): void {
    this.res.write(chunk)
  }

  /**
   * The hot path. Once the headers are out and nothing else is queued on the response, the batch's
   * prebuilt bytes (already framed as one HTTP chunk when the body is chunked, built once per batch)
   * go straight to the socket: one write, no per-client chunk framing, cork or nextTick. Otherwise
   * through the response. Order is kept either way: both end in the same socket queue, and the
   * response is only bypassed while it holds nothing of its own. `buffered()` sees these bytes
   * (`res.writableLength` = the response's own queue + the socket's).
   */
  send(batch: Batch): void {
    if (this.closed) return
    this.lastId = batch.lastId
    const res = this.res as ServerResponse & { outputSize: number; chunkedEncoding: boolean }
    const socket = res.socket as (Socket & { _httpMessage?: unknown }) | null
    if (socket !== null && res.headersSent && res.outputSize === 0 && socket._httpMessage === res && socket.writable) {
      socket.write(res.chunkedEncoding ? batch.sseChunk(this.unnamed) : batch.sse(this.unnamed))
    } else {
      res.write(batch.sse(this.unnamed))
    }
  }

  buffered(): number {
    return this.res.writableLength
  }

  /**
   * Waits on the socket: bytes written straight to it never set the response's `writableNeedDrain`
   * nor make the response emit `drain` (http only forwards a drain it asked for).
   */
  drained(): Promise<void> {
    const socket = this.res.socket
    if (this.closed || socket === null || socket.destroyed || !(socket.writableNeedDrain || this.res.writableNeedDrain)) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => {
        socket.off('drain', done)
        this.res.off('close', done)
        resolve()
      }
      socket.on('drain', done)
      this.res.on('close', done)
    })
  }

  protected end(slow: boolean): void {
    const socket = this.res.socket
    this.res.end()
    // A slow client would never read what is queued: once the grace is over, drop the connection
    // so that its memory is freed.
    if (slow && socket !== null) {
      setTimeout(() => {
        if (!socket.destroyed && socket.writableLength > 0) socket.destroy()
      }, SLOW_GRACE_MS).unref()
    }
  }

  onClose(listener: () => void): void {
    if (this.res.destroyed) queueMicrotask(listener)
    else this.res.on('close', listener)
  }
}

/**
 * SSE on HTTP/2: written to the request's own stream, never to the connection's socket (the other
 * streams' frames share it). The batch's shared bytes go in one write per client as on HTTP/1.1;
 * the stream's queue, which holds what HTTP/2 flow control has not let out yet, is what
 * backpressure and the slow-client rule measure, per stream: a slow tab is cut, not its connection.
 */
export class Http2SseTransport extends SseStream {
  private readonly stream: ServerHttp2Stream

  constructor(
    private readonly res: Http2ServerResponse,
    opts: SseOptions,
  ) {
    super(opts)
    this.stream = res.stream
    this.stream.on('close', () => {
      this.closed = true
    })
  }

  protected writeHead(headers: Headers): void {
    const out: Headers = {}
    for (const [name, value] of Object.entries({ ...headers, ...SSE_HEADERS })) if (!HOP_BY_HOP.has(name)) out[name] = value
    this.res.writeHead(200, out)
  }

  protected write(chunk: Buffer | string): void {
    if (this.stream.writable) this.stream.write(chunk)
  }

  send(batch: Batch): void {
    if (this.closed) return
    this.lastId = batch.lastId
    this.write(batch.sse(this.unnamed))
  }

  buffered(): number {
    return this.stream.writableLength
  }

  drained(): Promise<void> {
    const stream = this.stream
    if (this.closed || stream.destroyed || !stream.writableNeedDrain) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => {
        stream.off('drain', done)
        stream.off('close', done)
        resolve()
      }
      stream.on('drain', done)
      stream.on('close', done)
    })
  }

  protected end(slow: boolean): void {
    const stream = this.stream
    if (!stream.writableEnded) stream.end()
    // RST_STREAM: the other streams of the connection go on.
    if (slow) {
      setTimeout(() => {
        if (!stream.destroyed && stream.writableLength > 0) stream.close(h2.NGHTTP2_CANCEL)
      }, SLOW_GRACE_MS).unref()
    }
  }

  onClose(listener: () => void): void {
    if (this.stream.destroyed || this.stream.closed) queueMicrotask(listener)
    else this.stream.on('close', listener)
  }
}
