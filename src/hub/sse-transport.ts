import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { unnamedSse, type Frame } from '../event.js'
import type { Batch } from './frames.js'
import type { CloseReason, Transport } from './transport.js'

const PING = Buffer.from(': ping\n\n')

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
  // No Connection header: Node's, `close` for a stream (src/shutdown.ts: its connection is never reused).
}

/**
 * SSE written straight to the response: each client gets the shared bytes of a batch in one write,
 * and the socket's queue is what backpressure measures. `unnamed`: records without `event:` lines
 * (control events too), so that `EventSource.onmessage` sees every event; the type is in the JSON.
 */
export class SseTransport implements Transport {
  readonly kind = 'sse'
  private closed = false

  constructor(
    private readonly res: ServerResponse,
    private readonly unnamed = false,
  ) {
    res.on('close', () => {
      this.closed = true
    })
  }

  /** Status line, headers (those already set on the reply, e.g. CORS, plus SSE's) and `retry:`. */
  open(headers: Record<string, string | number | string[] | undefined>, retryMs: number): void {
    this.res.writeHead(200, { ...headers, ...SSE_HEADERS })
    this.res.write(`retry: ${retryMs}\n\n`)
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
    const res = this.res as ServerResponse & { outputSize: number; chunkedEncoding: boolean }
    const socket = res.socket as (Socket & { _httpMessage?: unknown }) | null
    if (socket !== null && res.headersSent && res.outputSize === 0 && socket._httpMessage === res && socket.writable) {
      socket.write(res.chunkedEncoding ? batch.sseChunk(this.unnamed) : batch.sse(this.unnamed))
    } else {
      res.write(batch.sse(this.unnamed))
    }
  }

  /** Control events are made per client, so their unnamed record is too. */
  sendControl(frame: Frame): void {
    if (!this.closed) this.res.write(this.unnamed ? Buffer.concat(unnamedSse(frame.sse)) : frame.sse)
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

  responsive(): boolean {
    return true
  }

  heartbeat(position: number | null): void {
    if (!this.closed) this.res.write(position === null ? PING : `: ping ${position}\n\n`)
  }

  /** SSE has no close code: the stream ends and EventSource reconnects with Last-Event-ID. */
  close(reason: CloseReason): void {
    if (this.closed) return
    this.closed = true
    // A slow client would never read what is queued: drop it now so its memory is freed.
    if (reason === 'slow') this.res.destroy()
    else this.res.end()
  }

  onClose(listener: () => void): void {
    if (this.res.destroyed) queueMicrotask(listener)
    else this.res.on('close', listener)
  }
}
