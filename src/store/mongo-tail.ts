import type { Collection, Db } from 'mongodb'
import type { StoredEvent } from '../event.js'
import { withDeadline } from './deadline.js'
import type { TailHandlers } from './event-store.js'
import { eventBytes, isZero, toEvent, type EventDoc } from './mongo-doc.js'

/** Counters of the tailing cursor, for logs and /metrics. */
export interface MongoTailStats {
  /** Milliseconds between the store accepting the last handed-over event and the tail handing it over. */
  lagMs: number
  /** Times the cursor was (re-)opened (the polling tail: polls). */
  opens: number
  /** Errors after which the cursor was re-opened. */
  errors: number
  /** Empty waits while newer ids were stored, after which the cursor was re-opened. */
  stalls: number
}

/** What a tail needs of its store. */
export interface TailHost {
  readonly tailStats: MongoTailStats
  /** The newest stored id (for the check that a cursor has not silently lost its place). */
  newest(): Promise<number | null>
  /** What appends announce (FerretDB; see MongoHead): the newest id stored, and the recent documents after an id. */
  readonly announced?: { newest(): Promise<number | null>; after(last: number): Promise<EventDoc[]> }
}

export interface MongoTailOptions {
  /** How long one awaitData getMore waits for new documents. */
  awaitMs?: number
  /** First and largest pause before the tail re-opens after an error. */
  backoffMs?: { min: number; max: number }
  /** Re-open the tailing cursor after it has handed over this many documents (see MongoStoreOptions). */
  reanchorAfter?: number
  /** The polling tail (FerretDB): pause between polls that found nothing new. */
  pollMs?: number
  /** Every command's deadline (`store.timeoutMs`): a frozen server makes the tail re-open, never hang. */
  timeoutMs: number
}

/**
 * One awaitData getMore waits up to AWAIT_MS for new documents and returns up to TAIL_BATCH.
 * FerretDB re-runs the cursor's query on each poll and gives up the whole poll when maxTimeMS runs
 * out mid-query, so a short wait starves the tail once the collection is large; a large batch
 * makes one such query hand over everything new.
 */
const AWAIT_MS = 5000
const TAIL_BATCH = 10_000
/** At most this many bytes of documents are handed over from one read (a catch-up goes on with the next). */
const TAIL_MAX_BYTES = 16 * 1024 * 1024
/** The polling tail's pause between polls of the head, and its read of the events regardless of the head (see HeadPollTail). */
const POLL_MS = 20
/** After a second without anything new the polling tail slows to this: an idle instance costs FerretDB less. */
const IDLE_POLL_MS = 100
const FULL_READ_MS = 300_000

/**
 * The loop shared by both tails: follow, hand over new events in id order exactly once, and after
 * an error pause (with a growing backoff) and start again from the last id handed over.
 */
abstract class TailLoop {
  protected closed = false
  protected last: number
  private wake: (() => void) | undefined

  constructor(
    protected readonly host: TailHost,
    protected readonly db: Db,
    protected readonly coll: Collection<EventDoc>,
    afterId: number,
    private readonly handlers: TailHandlers,
    protected readonly opts: MongoTailOptions,
  ) {
    this.last = afterId
  }

  /** One round: returns false when nothing came and the loop should pause before the next. */
  protected abstract follow(): Promise<boolean>

  protected abstract idlePauseMs(): number

  async run(): Promise<void> {
    const min = this.opts.backoffMs?.min ?? 50
    const max = this.opts.backoffMs?.max ?? 2000
    let backoff = min
    while (!this.closed) {
      try {
        const more = await this.follow()
        backoff = min
        if (!more) await this.pause(this.idlePauseMs())
      } catch (err) {
        if (this.closed) break
        this.host.tailStats.errors++
        this.handlers.onError?.(err as Error)
        await this.pause(backoff)
        backoff = Math.min(max, backoff * 2)
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true
    this.wake?.()
  }

  protected pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined
        resolve()
      }, ms)
      this.wake = () => {
        clearTimeout(timer)
        this.wake = undefined
        resolve()
      }
    })
  }

  /** Hands over the documents (in id order) with ids above the last one handed over; returns how many. */
  protected hand(docs: EventDoc[]): number {
    if (this.closed || docs.length === 0) return 0
    const events: StoredEvent[] = []
    for (const d of docs) {
      const e = toEvent(d)
      if (e.id <= this.last) continue
      this.last = e.id
      events.push(e)
    }
    if (events.length === 0) return 0
    const lastDoc = docs[docs.length - 1]
    const acceptedAt = lastDoc.at instanceof Date ? lastDoc.at.getTime() : undefined
    if (acceptedAt !== undefined) this.host.tailStats.lagMs = Math.max(0, Date.now() - acceptedAt)
    this.handlers.onEvents(events, acceptedAt)
    return events.length
  }
}

/**
 * The tail on MongoDB: one tailable awaitData cursor. Each (re-)open anchors on the last seen id:
 * `find {_id >= last}` with a first batch of one document, so the cursor starts positioned on a
 * document (FerretDB, like MongoDB, cannot keep a tailable cursor open on nothing). The anchor
 * itself is not handed over again; ids not above the last one handed over are dropped.
 */
export class AwaitDataTail extends TailLoop {
  private cursorId: unknown = null

  protected idlePauseMs(): number {
    // The collection is empty or the cursor closed on its own: poll again shortly.
    return this.opts.awaitMs !== undefined ? Math.min(this.opts.awaitMs, 100) : 100
  }

  override async close(): Promise<void> {
    await super.close()
    const id = this.cursorId
    this.cursorId = null
    if (id !== null) await this.kill(id)
  }

  private kill(id: unknown): Promise<void> {
    const cmd = this.db.command({ killCursors: this.coll.collectionName, cursors: [id] }, { promoteLongs: false })
    return withDeadline(cmd, this.opts.timeoutMs, 'killCursors').then(
      () => {},
      () => {},
    )
  }

  /** One cursor's life: open it, then getMore until it ends. Returns false when it never opened. */
  protected async follow(): Promise<boolean> {
    const db = this.db
    const name = this.coll.collectionName
    const awaitMs = this.opts.awaitMs ?? AWAIT_MS
    // A frozen server answers nothing, and an open socket never errors: each command has a deadline.
    const command = <T>(cmd: Record<string, unknown>, ms: number): Promise<T> => withDeadline(db.command(cmd, { promoteLongs: false }) as Promise<T>, ms, 'tail')
    const filter = this.last > 0 ? { _id: { $gte: this.last } } : {}
    const first = await command<{ cursor: { id: unknown; firstBatch: EventDoc[] } }>(
      { find: name, filter, projection: {}, tailable: true, awaitData: true, batchSize: 1 },
      this.opts.timeoutMs,
    )
    this.host.tailStats.opens++
    this.hand(first.cursor.firstBatch)
    if (isZero(first.cursor.id)) return false
    this.cursorId = first.cursor.id
    const reanchorAfter = this.opts.reanchorAfter ?? 10_000
    let seen = 0
    try {
      while (!this.closed) {
        const more = await command<{ cursor: { id: unknown; nextBatch: EventDoc[] } }>(
          { getMore: this.cursorId, collection: name, batchSize: TAIL_BATCH, maxTimeMS: awaitMs },
          awaitMs + this.opts.timeoutMs,
        )
        seen += this.hand(more.cursor.nextBatch)
        if (isZero(more.cursor.id)) {
          this.cursorId = null
          return true
        }
        if (seen >= reanchorAfter) break
        // An empty wait while the collection holds newer ids means the cursor lost its place
        // without saying so (seen on FerretDB with several writers over time): re-anchor.
        if (more.cursor.nextBatch.length === 0 && ((await this.host.newest()) ?? 0) > this.last) {
          this.host.tailStats.stalls++
          break
        }
      }
    } finally {
      if (this.cursorId !== null && !this.closed) {
        const id = this.cursorId
        this.cursorId = null
        await this.kill(id)
      }
    }
    return true
  }
}

/**
 * The tail on FerretDB, whose tailable cursor re-runs its query, a read of the whole collection, on
 * every poll (see MongoHead): an idle instance kept FerretDB busy and delivery slowed as the
 * collection grew. This tail polls the head (one small document) every POLL_MS (IDLE_POLL_MS after a
 * second without anything new); when it has moved,
 * it takes the new events from the recent collection as far as they chain on from the last one
 * handed over (each one's `prev` is the one before), and reads the events collection (a scan) only
 * when they do not reach the head: more new events than the recent collection keeps, or one it
 * missed. It also reads the events collection every FULL_READ_MS, in case an append stored events
 * and its process died before announcing them while nothing was appended after them (any later
 * append's events would not chain on, and the tail would read them then). Rarely: a read is a scan.
 */
export class HeadPollTail extends TailLoop {
  private fullReadAt = Date.now()

  private emptyPolls = 0

  protected idlePauseMs(): number {
    const active = this.opts.pollMs ?? POLL_MS
    return ++this.emptyPolls * active >= 1000 ? Math.max(active, IDLE_POLL_MS) : active
  }

  protected async follow(): Promise<boolean> {
    const more = await this.poll()
    if (more) this.emptyPolls = 0
    return more
  }

  private async poll(): Promise<boolean> {
    const announced = this.host.announced
    if (announced === undefined) throw new Error('the polling tail needs a store that announces its appends')
    this.host.tailStats.opens++
    const timeoutMS = this.opts.timeoutMs
    const head = (await withDeadline(announced.newest(), timeoutMS, 'tail')) ?? 0
    const due = Date.now() - this.fullReadAt >= FULL_READ_MS
    if (head <= this.last && !due) return false
    if (!due) {
      const recent = await withDeadline(announced.after(this.last), timeoutMS, 'tail')
      const chained: EventDoc[] = []
      let expect = this.last
      for (const d of recent) {
        if (Number(d.prev) !== expect) break
        chained.push(d)
        expect = Number(d._id)
      }
      if (expect >= head) return this.hand(chained) > 0
    }
    this.fullReadAt = Date.now()
    const catchUp = 6 * timeoutMS
    // No sort: FerretDB reads a capped collection in natural order (id order) and would read and sort all of it for any sort.
    const forward = this.coll.find({ _id: { $gt: this.last } }, { limit: TAIL_BATCH, batchSize: 1000, timeoutMS: catchUp })
    const docs: EventDoc[] = []
    let bytes = 0
    try {
      await withDeadline(
        (async () => {
          for await (const d of forward) {
            docs.push(d)
            bytes += eventBytes(toEvent(d))
            if (bytes >= TAIL_MAX_BYTES) break
          }
        })(),
        catchUp,
        'tail read',
      )
    } finally {
      void forward.close().catch(() => {})
    }
    // Sorted anyway: hand() drops an id not above the last one handed over.
    return this.hand(docs.sort((a, b) => Number(a._id) - Number(b._id))) > 0
  }
}
