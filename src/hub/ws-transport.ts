import type { WebSocket } from 'ws'
import type { Frame } from '../event.js'
import type { Batch } from './frames.js'
import { END_REASONS } from './end-reason.js'
import type { CloseReason, Transport } from './transport.js'

/** Close codes a client sees; after any of them it reconnects with `?lastEventId=` (after 4401 with a fresh token). */
export const WS_CLOSE = END_REASONS

/**
 * A client that does not finish the closing handshake in this time is cut off. A slow reader gets
 * longer, so that it can read up to the close frame and see 1013; on shutdown the process waits.
 */
const CLOSE_GRACE_MS = { shutdown: 2000, error: 2000, slow: 5000, expired: 2000 } as const

export class WsTransport implements Transport {
  readonly kind = 'ws'
  private alive = true
  /** No permessage-deflate negotiated: frames go out exactly as built. */
  private readonly plain: boolean

  constructor(private readonly ws: WebSocket) {
    this.plain = ws.extensions === ''
    ws.on('pong', () => {
      this.alive = true
    })
    // Clients only listen: frames they send are ignored (documented in the README).
    ws.on('message', () => {})
    ws.on('error', () => ws.terminate())
  }

  private get open(): boolean {
    return this.ws.readyState === this.ws.OPEN
  }

  /**
   * The hot path: the batch's prebuilt frames (unmasked, uncompressed: the same bytes for every
   * client) are written to the socket in one write. That is what ws's sender itself does for such a
   * frame, and it is safe only while the sender has nothing queued of its own (no compression
   * configured, no Blob pending): otherwise, through ws.send.
   */
  send(batch: Batch): void {
    if (!this.open) return
    const inner = this.ws as unknown as { _socket?: { writable: boolean; write(b: Buffer): boolean }; _sender?: { _queue: unknown[]; _bufferedBytes: number } }
    const socket = inner._socket
    const sender = inner._sender
    if (socket !== undefined && socket.writable && sender !== undefined && sender._queue.length === 0 && sender._bufferedBytes === 0 && this.plain) {
      socket.write(batch.ws)
    } else {
      for (const f of batch.frames) this.ws.send(f.json, { binary: false })
    }
  }

  sendControl(frame: Frame): void {
    if (this.open) this.ws.send(frame.json, { binary: false })
  }

  buffered(): number {
    return this.ws.bufferedAmount
  }

  drained(): Promise<void> {
    if (!this.open || this.ws.bufferedAmount === 0) return Promise.resolve()
    // The callback of a send runs once everything queued before it has been written out.
    return new Promise((resolve) => this.ws.ping(undefined, undefined, () => resolve()))
  }

  responsive(): boolean {
    return this.alive
  }

  heartbeat(position: number | null): void {
    if (!this.open) return
    this.alive = false
    this.ws.ping(position === null ? undefined : String(position))
  }

  close(reason: CloseReason): void {
    if (!this.open) return
    const { code, reason: text } = WS_CLOSE[reason]
    this.ws.close(code, text)
    // No more frames are queued once closing, so a client that never reads holds at most its
    // buffer limit until the grace period ends.
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS[reason]).unref()
  }

  onClose(listener: () => void): void {
    if (this.ws.readyState === this.ws.CLOSED) queueMicrotask(listener)
    else this.ws.on('close', listener)
  }
}
