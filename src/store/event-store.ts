import type { NewEvent, StoredEvent } from '../event.js'
import type { StreamFilter } from '../stream.js'

/** How far a replay read may go, and what it may cost. */
export interface ReadOptions {
  /** Only events with id <= upTo (the history's floor, or the position the replay set out to reach). */
  upTo?: number
  /**
   * Stop adding events once the page's serialised size passes this (always at least one event): a
   * page is bounded in bytes as well as in count. A page cut by this, by the server's batch limit or
   * by a cursor is shorter than `limit`; only an empty page says nothing more lies in (afterId, upTo].
   */
  maxBytes?: number
  /** The reader left: drop the read if it is still queued, and stop waiting for it. */
  signal?: AbortSignal
}

export interface StoreBounds {
  /** Smallest id still stored, or null when the store is empty. */
  oldest: number | null
  /** Largest id stored, or null when the store is empty. */
  newest: number | null
}

/**
 * The store refused `events[index]` of an append for its content (MongoDB and the decoder disagree
 * on a rule, a document written by hand...). `stored` are the events of the same call stored before it.
 */
export class StoreRejectedError extends Error {
  override name = 'StoreRejectedError'
  constructor(readonly index: number, readonly stored: StoredEvent[], reason: string) {
    super(`the store refused the event: ${reason}`)
  }
}

/**
 * The store could not be reached or did not answer. `stored` are the events of the call known to be
 * stored; `certain` says whether the others are known not to be (false: the write may have landed,
 * a retry with the same idempotency key is safe). `component` names the part that failed, for the
 * answer and the log: the store, or the broker the write goes through ("NATS").
 */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError'
  constructor(readonly stored: StoredEvent[], readonly certain: boolean, cause: unknown, readonly component = 'the store') {
    super(`${component} is unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause })
  }
}

/** The single follower of new events in a process (the hub owns it). */
export interface Tail {
  close(): Promise<void>
}

export interface TailHandlers {
  /**
   * New events, in id order, each id greater than the last one handed over. `acceptedAt`: when the
   * store accepted the last of them (ms since the epoch), for the tail lag; absent for a backlog.
   */
  onEvents(events: StoredEvent[], acceptedAt?: number): void
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
   * An event with an `idempotencyKey` the store already holds is not stored again: the stored one
   * takes its place in the result (so without `ids` the result has one event per event given).
   * Fails with StoreRejectedError or StoreUnavailableError, which say what was stored.
   */
  append(events: NewEvent[], ids?: number[]): Promise<StoredEvent[]>
  /** The stored event posted with this idempotency key, if the store still holds it. */
  findByKey(key: string): Promise<StoredEvent | null>
  /** Stored events of a stream with id > afterId (and <= opts.upTo, when given), oldest first, at most `limit`. */
  read(filter: StreamFilter, afterId: number, limit: number, opts?: ReadOptions): Promise<StoredEvent[]>
  /** The oldest and newest ids stored, read from what is stored: where the tail, the NATS writer and a relay start. */
  bounds(): Promise<StoreBounds>
  /** The newest id stored (null: none), at or past every id an append has answered: the position query of read-your-writes. */
  newest(): Promise<number | null>
  /**
   * The newest `limit` events of all streams, oldest first, and at most about `maxBytes` of them
   * serialised when given (one read: the hub warms its history with it).
   */
  newestEvents(limit: number, maxBytes?: number): Promise<StoredEvent[]>
  /**
   * The newest id the store has dropped to make room (0: none known). Every event with a larger id
   * is still stored, so a resume or replay position at or after it is exact. Never above
   * `oldest - 1`, which is always a safe answer.
   */
  evictedThrough(): Promise<number>
  /** Follow events with id > afterId as they are stored. One per process: the hub's. */
  tail(afterId: number, handlers: TailHandlers): Tail
  /** Is the backing service reachable (for /ready)? */
  ping(): Promise<void>
  close(): Promise<void>
}
