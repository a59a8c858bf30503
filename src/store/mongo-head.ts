import type { Collection } from 'mongodb'
import { withDeadline } from './deadline.js'
import type { EventDoc } from './mongo-doc.js'

/** The newest id stored, in a collection of its own (`<collection>_head`). */
export interface HeadDoc {
  _id: string
  id: number
}

/** The recent collection keeps about this many of the newest documents (between one and two times it). */
const RECENT_KEEP = 128
/** Pause between tries to raise the head after a failed raise. */
const RETRY_MS = 200

/**
 * FerretDB's answer to "what is new, and how far does the store go?". FerretDB v1.24 hands SQLite
 * no range on `_id`, and only `$natural` as a sort: every query of the events collection reads all
 * of it (0.4-0.5 s at 20,000 small events here, for `{_id: n}`, a `$natural` edge and a count
 * alike), and its tailable cursor runs such a query at every poll. So each append, once its
 * documents are in the events collection, also
 *   1. inserts them into `<collection>_recent`, which keeps only about the newest RECENT_KEEP, and
 *   2. raises the one document of `<collection>_head` to the newest id stored,
 * both before the append is answered. The head is therefore at or past every acknowledged id: the
 * position a stream must reach before `live` (read-your-writes) and the next append's id cost one
 * small document; the tail polls the head and reads what is new from the recent collection (a
 * scan of a hundred-odd documents), and the events collection only when the recent one does not
 * chain on from where it is (see HeadPollTail).
 */
export class MongoHead {
  /** The recent collection was last trimmed to the ids after this one. */
  private trimmedBelow = 0
  /** The newest id this process stored whose head raise has not succeeded yet (0: none). */
  private pending = 0
  private retrying = false
  private closed = false

  constructor(
    private readonly head: Collection<HeadDoc>,
    private readonly recent: Collection<EventDoc>,
    private readonly timeoutMs: number,
  ) {}

  /** `docs` are stored (in id order): tell the tails and the position queries. */
  async announce(docs: EventDoc[]): Promise<void> {
    if (docs.length === 0) return
    const newest = Number(docs[docs.length - 1]._id)
    // Best effort: a document missing here (a failed insert, one already there from a retry) breaks
    // the tail's chain, and the tail reads the events collection instead.
    // Only what it keeps: a tail further behind reads the events collection anyway.
    await this.recent.insertMany(docs.slice(-RECENT_KEEP), { ordered: false, timeoutMS: this.timeoutMs }).catch(() => {})
    await this.raiseOrRetry(newest)
    if (newest - this.trimmedBelow >= 2 * RECENT_KEEP) {
      this.trimmedBelow = newest - RECENT_KEEP
      void this.recent.deleteMany({ _id: { $lte: this.trimmedBelow } }, { timeoutMS: this.timeoutMs }).catch(() => {})
    }
  }

  /** The newest id stored (null: nothing stored yet). */
  async newest(): Promise<number | null> {
    const d = await this.head.findOne({ _id: 'head' }, { timeoutMS: this.timeoutMs })
    const id = Math.max(d?.id ?? 0, this.pending)
    return id === 0 ? null : id
  }

  /** The recent documents after `last`, in id order. */
  async after(last: number): Promise<EventDoc[]> {
    const docs = await this.recent.find({ _id: { $gt: last } }, { timeoutMS: this.timeoutMs }).toArray()
    return docs.sort((a, b) => Number(a._id) - Number(b._id))
  }

  /** The events collection holds ids up to `newest` (some perhaps never announced: their writer died first). */
  async repair(newest: number): Promise<void> {
    await this.raiseOrRetry(newest)
  }

  close(): void {
    this.closed = true
  }

  /**
   * Raise the head; when that fails, the id is stored all the same (the caller is answered): this
   * process's position queries count it at once (see newest), and the raise is retried until it
   * succeeds so that the tails see it.
   */
  private async raiseOrRetry(id: number): Promise<void> {
    try {
      await this.raise(id)
    } catch {
      this.pending = Math.max(this.pending, id)
      void this.retry()
    }
  }

  private async raise(id: number): Promise<void> {
    const update = () => this.head.updateOne({ _id: 'head' }, { $max: { id } }, { upsert: true, timeoutMS: this.timeoutMs })
    try {
      await withDeadline(update(), this.timeoutMs, 'head')
    } catch (err) {
      // Two first upserts at once (instances opening or appending together): one creates the
      // document, the other's insert collides; the document is there now, so once more.
      if ((err as { code?: number }).code !== 11000) throw err
      await withDeadline(update(), this.timeoutMs, 'head')
    }
  }

  private async retry(): Promise<void> {
    if (this.retrying) return
    this.retrying = true
    try {
      while (this.pending > 0 && !this.closed) {
        await new Promise((r) => setTimeout(r, RETRY_MS).unref())
        const id = this.pending
        try {
          await this.raise(id)
          if (this.pending === id) this.pending = 0
        } catch {
          // Still away: try again.
        }
      }
    } finally {
      this.retrying = false
    }
  }
}
