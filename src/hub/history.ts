import { metaOf, type EventMeta, type Frame, type StoredEvent } from '../event.js'
import { eventKeys, streamKey, windowStart, type StreamFilter } from '../stream.js'

export interface HistoryOptions {
  /** Bytes of serialised frames held (each event's SSE record and WebSocket frame, plus bookkeeping). */
  maxBytes: number
  maxEvents: number
}

/** An event's metadata (for filtering) and its frame: never its parsed `data`, which can cost far more than its bytes. */
interface Entry {
  event: EventMeta
  frame: Frame
  bytes: number
}

/** What one entry costs beyond its frame's bytes (objects, metadata strings, queue slots): an estimate. */
const ENTRY_OVERHEAD = 320

/** What holding `frame` costs: its SSE record (the JSON is a view into it), a WebSocket frame of the JSON once one is built, and bookkeeping. */
export function heldBytes(frame: Frame): number {
  return frame.sse.length + frame.json.length + ENTRY_OVERHEAD
}

/** An append-only list read from a moving head: shift is O(1), the array is compacted now and then. */
class Queue {
  private items: Entry[] = []
  private head = 0

  get length(): number {
    return this.items.length - this.head
  }

  push(e: Entry): void {
    this.items.push(e)
  }

  toArray(): Entry[] {
    return this.items.slice(this.head)
  }

  clear(): void {
    this.items = []
    this.head = 0
  }

  shift(): Entry | undefined {
    if (this.head >= this.items.length) return undefined
    const e = this.items[this.head++]
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return e
  }

  /** Entries with id > afterId, oldest first, at most `limit` (binary search, ids increase). */
  after(afterId: number, limit: number, keep: (e: Entry) => boolean): Entry[] {
    let lo = this.head
    let hi = this.items.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.items[mid].event.id <= afterId) lo = mid + 1
      else hi = mid
    }
    const out: Entry[] = []
    for (let i = lo; i < this.items.length && out.length < limit; i++) if (keep(this.items[i])) out.push(this.items[i])
    return out
  }
}

/**
 * The process's hot history: the newest events of every stream, in id order, with their frames
 * (the ones the hub serialised for live delivery), bounded by bytes and count, indexed per stream
 * so that a replay costs the events it returns. Fed by the hub's own dispatch (no extra store reads)
 * and warmed from the store at start. Resumes and live states inside it never touch the store.
 */
export class History {
  private readonly all = new Queue()
  private readonly byStream = new Map<string, Queue>()
  private size = 0
  /** Every event with an id above this that reached this process is held here. */
  private floor = 0
  /** It also holds every event the store still has (warmed whole, nothing dropped here since). */
  private whole = false
  /** Until warmed it serves nothing (new events are held meanwhile). */
  private warmed = false

  constructor(private readonly opts: HistoryOptions) {}

  get bytes(): number {
    return this.size
  }

  get events(): number {
    return this.all.length
  }

  /** The id after which this history is complete (see `floor`). */
  get from(): number {
    return this.floor
  }

  get isWarm(): boolean {
    return this.warmed
  }

  /**
   * Put the store's newest events (ascending, all older than what was added meanwhile) before the
   * ones added since, and start serving: complete after `floor`, and `whole` when they are all
   * the store holds.
   */
  warm(events: { event: StoredEvent; frame: Frame | null }[], floor: number, whole: boolean): void {
    const since = this.all.toArray()
    this.all.clear()
    this.byStream.clear()
    this.size = 0
    this.floor = floor
    this.whole = whole
    for (const { event, frame } of events) this.add(event, frame)
    for (const e of since) this.hold(e)
    this.warmed = true
  }

  /** A new event, in id order (`frame` null: it could not be serialised, and is simply not held). */
  add(event: StoredEvent, frame: Frame | null): void {
    if (frame === null || !this.enabled) return
    this.hold({ event: metaOf(event), frame, bytes: heldBytes(frame) })
  }

  private hold(entry: Entry): void {
    const event = entry.event
    this.all.push(entry)
    for (const key of eventKeys(event)) {
      let q = this.byStream.get(key)
      if (q === undefined) this.byStream.set(key, (q = new Queue()))
      q.push(entry)
    }
    this.size += entry.bytes
    while (this.all.length > 1 && (this.size > this.opts.maxBytes || this.all.length > this.opts.maxEvents)) this.dropOldest()
  }

  /** Can a replay after `afterId` (null: the whole live state) be served from here alone? */
  covers(afterId: number | null): boolean {
    if (!this.enabled || !this.warmed) return false
    return afterId === null ? this.whole : afterId >= this.floor
  }

  /** Where a replay read from the store can stop and go on from here: the floor, once serving. */
  get servesAfter(): number | undefined {
    return this.enabled && this.warmed ? this.floor : undefined
  }

  /** A zero bound turns the history off: every replay reads the store. */
  get enabled(): boolean {
    return this.opts.maxEvents > 0 && this.opts.maxBytes > 0
  }

  /** Frames of the stream's events with id > afterId, oldest first, at most `limit`. */
  read(filter: StreamFilter, afterId: number, limit: number, now = Date.now()): Frame[] {
    const q = this.byStream.get(streamKey(filter))
    if (q === undefined) return []
    // The competitions stream holds CompetitionActivatedEvents only; its window is one time bound.
    const start = filter.kind === 'competitions' ? windowStart(filter.windowMs, now) : ''
    const keep = (e: Entry): boolean => e.event.time >= start
    return q.after(afterId, limit, keep).map((e) => e.frame)
  }

  private dropOldest(): void {
    const entry = this.all.shift()
    if (entry === undefined) return
    // Each stream's queue is in id order too, so the oldest entry is at the front of each of its streams.
    for (const key of eventKeys(entry.event)) {
      const q = this.byStream.get(key)
      q?.shift()
      if (q !== undefined && q.length === 0) this.byStream.delete(key)
    }
    this.size -= entry.bytes
    this.floor = entry.event.id
    this.whole = false
  }
}
