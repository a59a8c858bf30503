import type { NewEvent, StoredEvent } from '../event.js'
import type { StreamFilter } from '../stream.js'

export interface StoreBounds {
  /** Smallest id still stored, or null when the store is empty. */
  oldest: number | null
  /** Largest id stored, or null when the store is empty. */
  newest: number | null
}

/** The single follower of new events in a process (the hub owns it). */
export interface Tail {
  close(): Promise<void>
}

export interface TailHandlers {
  /** New events, in id order, each id greater than the last one handed over. */
  onEvents(events: StoredEvent[]): void
  /** The tail lost its place and re-opened (e.g. after a store restart); for logs and metrics. */
  onError?(err: Error): void
}

/**
 * Where events live. Every implementation passes test/store/contract.ts.
 * Ids are assigned by the store, positive, unique and strictly increasing in store order.
 */
export interface EventStore {
  readonly kind: string
  /** Connect, create what is missing, fail clearly on what cannot be used. */
  open(): Promise<void>
  /**
   * Store events in the given order; returns those stored, with their ids.
   * Without `ids` the store assigns them. With `ids` (one per event, increasing: a JetStream
   * sequence, an upstream's ids) it keeps them, and skips any id not above the newest stored one,
   * so a redelivered event is never stored twice.
   */
  append(events: NewEvent[], ids?: number[]): Promise<StoredEvent[]>
  /** Stored events of a stream with id > afterId, oldest first, at most `limit`. */
  read(filter: StreamFilter, afterId: number, limit: number): Promise<StoredEvent[]>
  bounds(): Promise<StoreBounds>
  /** Follow events with id > afterId as they are stored. One per process: the hub's. */
  tail(afterId: number, handlers: TailHandlers): Tail
  /** Is the backing service reachable (for /ready)? */
  ping(): Promise<void>
  close(): Promise<void>
}
