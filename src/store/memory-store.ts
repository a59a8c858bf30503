import type { NewEvent, StoredEvent } from '../event.js'
import { matches, type StreamFilter } from '../stream.js'
import type { EventStore, ReadOptions, StoreBounds, Tail, TailHandlers } from './event-store.js'

/**
 * The embedded default: an in-process ring buffer of the last `capacity` events.
 * Nothing survives a restart. Ids are seeded from the clock (microseconds since the epoch), so ids
 * issued after a restart are larger than any issued before it, and a resume id from before a
 * restart is older than the oldest event: the client gets `reset`, never silence.
 */
export class MemoryEventStore implements EventStore {
  readonly kind = 'memory'
  private readonly ring: (StoredEvent | undefined)[]
  private start = 0
  private count = 0
  private lastId: number
  private readonly tails = new Set<TailHandlers>()
  private pending: StoredEvent[] = []
  /** When the newest pending event was accepted: the tail lag is measured from it. */
  private pendingAt = 0
  /** See EventStore.evictedThrough. */
  private evicted = 0
  private readonly byKey = new Map<string, StoredEvent>()

  constructor(readonly capacity: number, now = Date.now()) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`memory store capacity must be a positive integer, got ${capacity}`)
    this.ring = new Array(capacity)
    this.lastId = now * 1000
    // What came before this store (an earlier run) is unknown: count it as dropped.
    this.evicted = this.lastId
  }

  async open(): Promise<void> {}

  async append(events: NewEvent[], ids?: number[]): Promise<StoredEvent[]> {
    if (ids !== undefined && ids.length !== events.length) throw new Error('append: one id per event')
    const stored: StoredEvent[] = []
    const result: StoredEvent[] = []
    events.forEach((e, i) => {
      const known = e.idempotencyKey === undefined ? undefined : this.byKey.get(e.idempotencyKey)
      if (known !== undefined) {
        result.push(known)
        return
      }
      let id: number
      if (ids === undefined) {
        id = Math.max(this.lastId + 1, Date.now() * 1000)
      } else {
        id = ids[i]
        const newest = this.count === 0 ? 0 : this.at(this.count - 1).id
        if (id <= newest) return
      }
      this.lastId = Math.max(this.lastId, id)
      const s: StoredEvent = { id, ...e }
      this.push(s)
      if (e.idempotencyKey !== undefined) this.byKey.set(e.idempotencyKey, s)
      stored.push(s)
      result.push(s)
    })
    if (stored.length > 0 && this.tails.size > 0) {
      // One hand-over per event-loop turn: every append whose request completed in the same I/O
      // poll goes out as one batch, so under load each client gets one write for many events, and
      // when idle an event still leaves in the same turn (no timer).
      if (this.pending.length === 0) setImmediate(() => this.notify())
      this.pending.push(...stored)
      this.pendingAt = Date.now()
    }
    return result
  }

  async findByKey(key: string): Promise<StoredEvent | null> {
    return this.byKey.get(key) ?? null
  }

  async read(filter: StreamFilter, afterId: number, limit: number, opts: ReadOptions = {}): Promise<StoredEvent[]> {
    const upTo = opts.upTo ?? Infinity
    const out: StoredEvent[] = []
    const now = Date.now()
    for (let i = this.firstAfter(afterId); i < this.count && out.length < limit; i++) {
      const e = this.at(i)
      if (e.id > upTo) break
      if (matches(filter, e, now)) out.push(e)
    }
    return out
  }

  async bounds(): Promise<StoreBounds> {
    if (this.count === 0) return { oldest: null, newest: null }
    return { oldest: this.at(0).id, newest: this.at(this.count - 1).id }
  }

  async newestEvents(limit: number): Promise<StoredEvent[]> {
    const out: StoredEvent[] = []
    for (let i = Math.max(0, this.count - limit); i < this.count; i++) out.push(this.at(i))
    return out
  }

  async evictedThrough(): Promise<number> {
    return this.evicted
  }

  tail(afterId: number, handlers: TailHandlers): Tail {
    const backlog: StoredEvent[] = []
    for (let i = this.firstAfter(afterId); i < this.count; i++) backlog.push(this.at(i))
    if (backlog.length > 0) handlers.onEvents(backlog)
    this.tails.add(handlers)
    return { close: async () => void this.tails.delete(handlers) }
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.tails.clear()
  }

  private notify(): void {
    const batch = this.pending
    this.pending = []
    for (const t of this.tails) t.onEvents(batch, this.pendingAt)
  }

  private push(e: StoredEvent): void {
    // Given ids (a relay's, a recording's) may lie below the seed: then what came before the first is unknown.
    if (this.count === 0 && e.id <= this.evicted) this.evicted = e.id - 1
    if (this.count < this.capacity) {
      this.ring[(this.start + this.count) % this.capacity] = e
      this.count++
    } else {
      const dropped = this.ring[this.start] as StoredEvent
      this.evicted = dropped.id
      if (dropped.idempotencyKey !== undefined && this.byKey.get(dropped.idempotencyKey) === dropped) this.byKey.delete(dropped.idempotencyKey)
      this.ring[this.start] = e
      this.start = (this.start + 1) % this.capacity
    }
  }

  private at(i: number): StoredEvent {
    return this.ring[(this.start + i) % this.capacity] as StoredEvent
  }

  /** Logical index of the first stored event with id > afterId (binary search; ids increase). */
  private firstAfter(afterId: number): number {
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.at(mid).id <= afterId) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}
