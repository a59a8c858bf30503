import type { WebSocket } from 'ws'
import type { Frame } from '../event.js'
import type { Batch } from './frames.js'
import type { CloseReason, Transport } from './transport.js'

/** Close codes a client sees; after any of them it reconnects with `?lastEventId=`. */
export const WS_CLOSE = {
  shutdown: { code: 1012, reason: 'server restarting: reconnect with lastEventId' },
  slow: { code: 1013, reason: 'client too slow: reconnect with lastEventId' },
  error: { code: 1011, reason: 'server error: reconnect with lastEventId' },
} as const

/** A client that does not finish the closing handshake in this time is cut off. */
const CLOSE_GRACE_MS = 5000

export class WsTransport implements Transport {
  readonly kind = 'ws'
  private alive = true

  constructor(private readonly ws: WebSocket) {
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

  send(batch: Batch): void {
    if (!this.open) return
    for (const f of batch.frames) this.ws.send(f.json, { binary: false })
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

  heartbeat(): void {
    if (!this.open) return
    if (!this.alive) {
      this.ws.terminate()
      return
    }
    this.alive = false
    this.ws.ping()
  }

  close(reason: CloseReason): void {
    if (!this.open) return
    const { code, reason: text } = WS_CLOSE[reason]
    this.ws.close(code, text)
    // No more frames are queued once closing, so a client that never reads holds at most its
    // buffer limit until the grace period ends.
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref()
  }

  onClose(listener: () => void): void {
    if (this.ws.readyState === this.ws.CLOSED) queueMicrotask(listener)
    else this.ws.on('close', listener)
  }
}
