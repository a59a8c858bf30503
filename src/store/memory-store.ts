import { jsonOf, knownJson, metaOf, type EventMeta, type NewEvent, type StoredEvent } from '../event.js'
import { matches, type StreamFilter } from '../stream.js'
import { isConflict, keyConflict } from '../idempotency.js'
import { StoreRejectedError, type EventStore, type ReadOptions, type StoreBounds, type Tail, type TailHandlers } from './event-store.js'

/**
 * An event as the ring holds it: its metadata (what reads filter on) and its JSON envelope, never the
 * parsed `data` (a 62 KB body of `[{},{},…]` is 1.3 MB as objects). Reads parse the JSON; they are
 * rare, since the hub's history serves replays of what is recent.
 */
interface Entry {
  meta: EventMeta
  json: Buffer
  bytes: number
}

/** What one entry costs beyond its JSON (objects, metadata strings, the key map's slot): an estimate. */
const ENTRY_OVERHEAD = 320

export interface MemoryStoreOptions {
  /** Bytes of events held (their JSON and metadata); the oldest go first past it, as past `capacity`. */
  maxBytes?: number
  /** The clock seed for ids (tests). */
  now?: number
}

/**
 * The embedded default: an in-process ring buffer of the last `capacity` events, at most `maxBytes` of them.
 * Nothing survives a restart. Ids are seeded from the clock (microseconds since the epoch), so ids
 * issued after a restart are larger than any issued before it, and a resume id from before a
 * restart is older than the oldest event: the client gets `reset`, never silence.
 */
export class MemoryEventStore implements EventStore {
  readonly kind = 'memory'
  private readonly ring: (Entry | undefined)[]
  private start = 0
  private count = 0
  private size = 0
  readonly maxBytes: number
  private lastId: number
  private readonly tails = new Set<TailHandlers>()
  private pending: StoredEvent[] = []
  /** When the newest pending event was accepted: the tail lag is measured from it. */
  private pendingAt = 0
  /** See EventStore.evictedThrough. */
  private evicted = 0
  private readonly byKey = new Map<string, Entry>()

  constructor(readonly capacity: number, opts: MemoryStoreOptions = {}) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`memory store capacity must be a positive integer, got ${capacity}`)
    this.maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY
    this.ring = new Array(capacity)
    this.lastId = (opts.now ?? Date.now()) * 1000
    // What came before this store (an earlier run) is unknown: count it as dropped.
    this.evicted = this.lastId
  }

  /** Bytes held (see Entry). */
  get bytes(): number {
    return this.size
  }

  /** Events held. */
  get events(): number {
    return this.count
  }

  async open(): Promise<void> {}

  async append(events: NewEvent[], ids?: number[]): Promise<StoredEvent[]> {
    if (ids !== undefined && ids.length !== events.length) throw new Error('append: one id per event')
    const stored: StoredEvent[] = []
    const result: StoredEvent[] = []
    let refused: StoreRejectedError | undefined
    for (let i = 0; i < events.length && refused === undefined; i++) {
      const e = events[i]
      const held = e.idempotencyKey === undefined ? undefined : this.byKey.get(e.idempotencyKey)
      if (held !== undefined) {
        const known = this.eventOf(held)
        // Given ids (the NATS writer): a reuse with another body is refused (dead-lettered), like
        // any event the store cannot take; without, the caller compares (see idempotency.ts).
        if (ids !== undefined && isConflict(e, known)) refused = new StoreRejectedError(i, [...stored], keyConflict(known))
        else result.push(known)
        continue
      }
      let id: number
      if (ids === undefined) {
        id = Math.max(this.lastId + 1, Date.now() * 1000)
      } else {
        id = ids[i]
        const newest = this.count === 0 ? 0 : this.at(this.count - 1).meta.id
        if (id <= newest) continue
      }
      const s: StoredEvent = { id, ...e }
      // Serialised once: the hub's frame of this event reuses these bytes (jsonOf).
      let json: Buffer
      try {
        json = jsonOf(s)
      } catch (err) {
        // The ring holds bytes: what does not serialise cannot be stored (the decoder admits no such event).
        refused = new StoreRejectedError(i, [...stored], `it cannot be serialised: ${(err as Error).message}`)
        break
      }
      this.lastId = Math.max(this.lastId, id)
      const entry = { meta: metaOf(s), json, bytes: json.length + 2 * (e.idempotencyKey?.length ?? 0) + ENTRY_OVERHEAD }
      this.push(entry)
      if (e.idempotencyKey !== undefined) this.byKey.set(e.idempotencyKey, entry)
      stored.push(s)
      result.push(s)
    }
    if (stored.length > 0 && this.tails.size > 0) {
      // One hand-over per event-loop turn: every append whose request completed in the same I/O
      // poll goes out as one batch, so under load each client gets one write for many events, and
      // when idle an event still leaves in the same turn (no timer).
      if (this.pending.length === 0) setImmediate(() => this.notify())
      this.pending.push(...stored)
      this.pendingAt = Date.now()
    }
    if (refused !== undefined) throw refused
    return result
  }

  async findByKey(key: string): Promise<StoredEvent | null> {
    const known = this.byKey.get(key)
    return known === undefined ? null : this.eventOf(known)
  }

  async read(filter: StreamFilter, afterId: number, limit: number, opts: ReadOptions = {}): Promise<StoredEvent[]> {
    const upTo = opts.upTo ?? Infinity
    const maxBytes = opts.maxBytes ?? Infinity
    const out: StoredEvent[] = []
    let bytes = 0
    const now = Date.now()
    for (let i = this.firstAfter(afterId); i < this.count && out.length < limit && bytes < maxBytes; i++) {
      const e = this.at(i)
      if (e.meta.id > upTo) break
      if (!matches(filter, e.meta, now)) continue
      // At least one event, then none that would take the page past maxBytes.
      if (out.length > 0 && bytes + e.json.length > maxBytes) break
      bytes += e.json.length
      out.push(this.eventOf(e))
    }
    return out
  }

  async bounds(): Promise<StoreBounds> {
    if (this.count === 0) return { oldest: null, newest: null }
    return { oldest: this.at(0).meta.id, newest: this.at(this.count - 1).meta.id }
  }

  async newest(): Promise<number | null> {
    return this.count === 0 ? null : this.at(this.count - 1).meta.id
  }

  async newestEvents(limit: number, maxBytes = Infinity): Promise<StoredEvent[]> {
    let first = this.count
    let bytes = 0
    // At least one event (an empty answer means an empty store), then none past maxBytes.
    while (first > 0 && this.count - first < limit && (first === this.count || bytes + this.at(first - 1).json.length <= maxBytes)) bytes += this.at(--first).json.length
    const out: StoredEvent[] = []
    for (let i = first; i < this.count; i++) out.push(this.eventOf(this.at(i)))
    return out
  }

  async evictedThrough(): Promise<number> {
    return this.evicted
  }

  tail(afterId: number, handlers: TailHandlers): Tail {
    const backlog: StoredEvent[] = []
    for (let i = this.firstAfter(afterId); i < this.count; i++) backlog.push(this.eventOf(this.at(i)))
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

  private push(e: Entry): void {
    // Given ids (a relay's, a recording's) may lie below the seed: then what came before the first is unknown.
    if (this.count === 0 && e.meta.id <= this.evicted) this.evicted = e.meta.id - 1
    while (this.count > 0 && (this.count >= this.capacity || this.size + e.bytes > this.maxBytes)) this.dropOldest()
    this.ring[(this.start + this.count) % this.capacity] = e
    this.count++
    this.size += e.bytes
  }

  private dropOldest(): void {
    const dropped = this.ring[this.start] as Entry
    this.ring[this.start] = undefined
    this.start = (this.start + 1) % this.capacity
    this.count--
    this.size -= dropped.bytes
    this.evicted = dropped.meta.id
    const key = dropped.meta.idempotencyKey
    if (key !== undefined && this.byKey.get(key) === dropped) this.byKey.delete(key)
  }

  private at(i: number): Entry {
    return this.ring[(this.start + i) % this.capacity] as Entry
  }

  /** The stored event, parsed from its JSON (which frameOf then reuses instead of serialising again). */
  private eventOf(e: Entry): StoredEvent {
    const { data } = JSON.parse(e.json.toString()) as { data: Record<string, unknown> }
    return knownJson({ ...e.meta, data }, e.json)
  }

  /** Logical index of the first stored event with id > afterId (binary search; ids increase). */
  private firstAfter(afterId: number): number {
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.at(mid).meta.id <= afterId) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}
