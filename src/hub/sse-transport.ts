import type { ServerResponse } from 'node:http'
import type { Frame } from '../event.js'
import type { Batch } from './frames.js'
import type { CloseReason, Transport } from './transport.js'

const PING = Buffer.from(': ping\n\n')

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no',
  connection: 'keep-alive',
}

/**
 * SSE written straight to the response: each client gets the shared bytes of a batch in one write,
 * and the socket's queue is what backpressure measures.
 */
export class SseTransport implements Transport {
  readonly kind = 'sse'
  private closed = false

  constructor(private readonly res: ServerResponse) {
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
   * The batch's SSE bytes are joined once and shared by every client. They go through the response
   * (which frames them as an HTTP chunk): writing a prebuilt chunk straight to the socket was
   * measured to let a client that stopped reading escape the buffer limit (test/hub/slow-client).
   */
  send(batch: Batch): void {
    if (!this.closed) this.res.write(batch.sse)
  }

  sendControl(frame: Frame): void {
    if (!this.closed) this.res.write(frame.sse)
  }

  buffered(): number {
    return this.res.writableLength
  }

  drained(): Promise<void> {
    if (this.closed || !this.res.writableNeedDrain) return Promise.resolve()
    return new Promise((resolve) => {
      const done = (): void => {
        this.res.off('drain', done)
        this.res.off('close', done)
        resolve()
      }
      this.res.on('drain', done)
      this.res.on('close', done)
    })
  }

  heartbeat(): void {
    if (!this.closed) this.res.write(PING)
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
