import type { Frame } from '../event.js'
import type { Batch } from './frames.js'

export type TransportKind = 'sse' | 'ws'
/** Why the server ends a connection; each transport maps it to its own signal. */
/** `expired`: the client's token expired; it reconnects with a fresh one. */
export type CloseReason = 'shutdown' | 'slow' | 'error' | 'expired'

/** How a subscriber's frames reach its client. One implementation per wire protocol. */
export interface Transport {
  readonly kind: TransportKind
  send(batch: Batch): void
  sendControl(frame: Frame): void
  /** Bytes accepted for this client that the kernel has not taken yet. */
  buffered(): number
  /** Resolves when the socket has room again (or is closed). */
  drained(): Promise<void>
  /**
   * Called by the hub's one timer: SSE comment `: ping <position>`, or a WebSocket ping carrying the
   * position, and the liveness check. `position` is null while the client is still replaying.
   */
  heartbeat(position: number | null): void
  /** Did the client answer the last heartbeat (WebSocket pong)? Always true where there is no answer (SSE). */
  responsive(): boolean
  close(reason: CloseReason): void
  onClose(listener: () => void): void
}
