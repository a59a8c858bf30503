import { controlFrame, type Frame, type StoredEvent } from '../event.js'
import type { EventStore } from '../store/event-store.js'
import { streamKey, type StreamFilter } from '../stream.js'
import { Batch } from './frames.js'
import type { History } from './history.js'
import type { Transport } from './transport.js'

export interface SubscriberOptions {
  replayPageSize: number
  /** A replay page read from the store stops growing past this many serialised bytes (at least one event). */
  replayPageBytes: number
  /** How long `live` waits for the hub's dispatch to pass the stream's target before reading the gap from the store. */
  liveWaitMs: number
  /** Live events held while the replay runs; past this the replay simply reads further. */
  maxPendingEvents: number
  maxBufferedBytes: number
  /** How long a replay waits for the client's socket to take a chunk before it counts as slow. */
  drainTimeoutMs: number
}

/** What the subscriber needs of the hub (kept narrow so the two stay decoupled). */
export interface SubscriberHost {
  readonly position: number
  /** The event's shared frame, or null when it cannot be serialised (logged and skipped). */
  frame(e: StoredEvent): Frame | null
  readonly history: History
  isPastNewest(id: number): Promise<boolean>
  /** The position every event acknowledged before this call lies at or under. */
  target(): Promise<number>
  /** True once the dispatch has passed `position`; false after `ms` or on abort. */
  reached(position: number, ms: number, signal?: AbortSignal): Promise<boolean>
  countLiveWaitExpired(): void
  countReplay(fromStore: boolean): void
  add(s: Subscriber): void
  remove(s: Subscriber): void
  countDelivered(n: number): void
  countSlow(s: Subscriber): void
}

/**
 * One client following one stream: the replay of the stored events after its resume point, then
 * one `live` control event, then the hub's events. The seam has no gap and no duplicate because the
 * subscriber is registered with the hub before the replay reads the store, holds what the hub hands
 * it meanwhile, and after the replay passes on only ids above the last one it sent.
 *
 * Read-your-writes: the request takes a target, the newest position acknowledged before it arrived
 * (`host.target()`), and `live` comes only once the hub's dispatch has passed it (every event up to
 * it is then in the replay or held here), or, after `liveWaitMs`, once the gap up to it was read
 * from the store.
 */
export class Subscriber {
  readonly key: string
  private live = false
  private closed = false
  private pending: Batch[] = []
  private pendingCount = 0
  private overflowed = false
  /** Id of the last event this client has (its resume id, then the last one sent; 0: none yet). */
  private lastId = 0
  /** Aborted when the client leaves: its store reads still queued are dropped (see ReadQueue). */
  private readonly gone = new AbortController()

  constructor(
    readonly filter: StreamFilter,
    readonly transport: Transport,
    private readonly host: SubscriberHost,
    private readonly store: EventStore,
    private readonly opts: SubscriberOptions,
  ) {
    this.key = streamKey(filter)
    transport.onClose(() => this.detach())
  }

  get isLive(): boolean {
    return this.live
  }

  /**
   * Replay from `resumeId` (null: the whole live state) and switch to live.
   * `reset` is sent first when the resume id cannot be honoured exactly, and whenever the store
   * drops events this client has not read yet while it pages through its replay.
   */
  async start(resumeId: number | null): Promise<void> {
    // Asked before anything else: every event acknowledged before the request is at or under it.
    const target = this.host.target()
    // Awaited below; a failure then fails the stream like a failed read.
    target.catch(() => {})
    try {
      await this.run(resumeId, target)
    } catch (err) {
      // A read dropped because the client left is no failure.
      if (!this.closed) throw err
    }
  }

  private async run(resumeId: number | null, target: Promise<number>): Promise<void> {
    let cursor = 0
    if (resumeId !== null) {
      // Only an id past what this process has seen needs the store (its tail may lag the store);
      // on a relay the position is the upstream's, which may be past the newest event stored here.
      const newer = resumeId > this.host.position && (await this.host.isPastNewest(resumeId))
      if (newer) this.reset(resumeId, `lastEventId ${resumeId} is newer than the newest stored event`)
      else {
        cursor = resumeId
        // The client has everything up to it: the hub may still hand over such events (its tail can lag the store).
        this.lastId = resumeId
      }
    }
    if (this.closed) return
    this.host.add(this)
    const history = this.host.history
    let full = cursor === 0
    let fromStore = false
    let wraps = 0
    let waited = false
    /** Where a replay read from the store (no history to take over) sets out to reach. */
    let reach: number | undefined
    for (;;) {
      let frames: Frame[]
      let done = false
      if (history.covers(full ? null : cursor)) {
        // Served from memory, in the same tick as the check: nothing can fall out in between. The
        // history holds all that was dispatched: a short page is the end, what follows is held here.
        frames = history.read(this.filter, cursor, this.opts.replayPageSize)
        done = frames.length < this.opts.replayPageSize
        if (frames.length > 0) cursor = frames[frames.length - 1].id
      } else {
        fromStore = true
        // Up to the history's floor (from there on it is served from memory); without a history,
        // up to the target and to what the hub had dispatched (what it dispatches later is held here).
        const floor = history.servesAfter
        const upTo = floor ?? (reach ??= Math.max(await target, this.host.position))
        if (this.closed) return
        const page = await this.readPage(cursor, upTo)
        // Gone: the empty page says nothing, and 500 clients leaving at once must not each ask the store more.
        if (this.closed) return
        // Events after the cursor dropped before that read would be skipped without a word: check.
        if (!full && (await this.store.evictedThrough()) > cursor) {
          if (this.closed) return
          // A client the store outruns twice in one replay cannot catch up: let it reconnect.
          if (++wraps > 1) return this.disconnectSlow()
          this.reset(cursor, resumeId === cursor ? `lastEventId ${cursor} is older than the oldest stored event` : `the store dropped events after ${cursor} while they were being replayed`)
          cursor = 0
          full = true
          continue
        }
        if (this.closed) return
        frames = page.map((e) => this.host.frame(e)).filter((f) => f !== null)
        // A page shorter than asked (a byte bound, the server's batch limit, a cut cursor) is not
        // the end: only an empty read says nothing of the stream is left in (cursor, upTo].
        if (page.length > 0) cursor = page[page.length - 1].id
        else {
          cursor = Math.max(cursor, upTo)
          done = floor === undefined
        }
      }
      // From here on the replay continues after an id the history may cover.
      full = false
      if (frames.length > 0) {
        await this.sendReplay(frames)
        if (this.closed) return
      }
      if (!done) continue
      if (!waited) {
        waited = true
        await this.reachTarget(await target, cursor)
        if (this.closed) return
      }
      if (!this.overflowed) break
      // Live events were dropped from the hold while replaying: they are in the store, read on.
      this.overflowed = false
      reach = undefined
    }
    this.host.countReplay(fromStore)
    for (const b of this.pending) {
      const rest = b.after(this.lastId)
      if (rest !== null) this.write(rest)
    }
    this.pending = []
    this.live = true
    this.transport.sendControl(controlFrame('live', Math.max(this.lastId, this.host.position)))
  }

  /**
   * Wait until the hub's dispatch passes `target`: every event up to it is then in the replay or
   * held here. Past the deadline (a tail far behind, a NATS message dead-lettered and never
   * stored), read what the store has of (cursor, target] while the wait goes on, whichever ends
   * first (what the dispatch passed is held here); what the store lacks yet comes after `live`.
   */
  private async reachTarget(target: number, cursor: number): Promise<void> {
    if (await this.host.reached(target, this.opts.liveWaitMs, this.gone.signal)) return
    if (this.closed) return
    this.host.countLiveWaitExpired()
    const stop = new AbortController()
    const leave = (): void => stop.abort()
    this.gone.signal.addEventListener('abort', leave, { once: true })
    const caughtUp = new Promise<null>((resolve) => stop.signal.addEventListener('abort', () => resolve(null), { once: true }))
    void this.host.reached(target, 2 ** 31 - 1, stop.signal).then((yes) => yes && stop.abort())
    try {
      for (;;) {
        const read = this.store.read(this.filter, cursor, this.opts.replayPageSize, { upTo: target, maxBytes: this.opts.replayPageBytes, signal: stop.signal })
        read.catch(() => {})
        const page = await Promise.race([read, caughtUp])
        if (page === null || this.closed || page.length === 0) return
        cursor = page[page.length - 1].id
        const frames = page.map((e) => this.host.frame(e)).filter((f): f is Frame => f !== null && f.id > this.lastId)
        if (frames.length > 0) await this.sendReplay(frames)
      }
    } finally {
      stop.abort()
      this.gone.signal.removeEventListener('abort', leave)
    }
  }

  /** A page of the store; empty once the client has left (a read failing because its queued read was dropped ends nothing more). */
  private async readPage(cursor: number, upTo: number): Promise<StoredEvent[]> {
    try {
      return await this.store.read(this.filter, cursor, this.opts.replayPageSize, { upTo, maxBytes: this.opts.replayPageBytes, signal: this.gone.signal })
    } catch (err) {
      if (this.closed) return []
      throw err
    }
  }

  /** The client's events after `position` cannot all be sent: it starts again from the whole live state. */
  private reset(position: number, reason: string): void {
    this.transport.sendControl(controlFrame('reset', 0, { lastEventId: String(position), reason }))
  }

  /** Called by the hub with the events of this subscriber's stream, in id order. */
  deliver(batch: Batch): void {
    if (this.closed) return
    if (!this.live) {
      if (this.overflowed) return
      this.pendingCount += batch.frames.length
      if (this.pendingCount > this.opts.maxPendingEvents) {
        this.pending = []
        this.pendingCount = 0
        this.overflowed = true
      } else {
        this.pending.push(batch)
      }
      return
    }
    // The replay may have read past the hub (a store whose tail lags, e.g. MongoDB): what the hub
    // hands over later that this client already got from the replay is dropped here.
    const rest = batch.after(this.lastId)
    if (rest === null) return
    // Slow is what a client left unread of earlier batches, not the size of this one: a burst (a busy
    // turn, a tail catching up) can be bigger than the limit and than what the kernel takes at once.
    // The batch's bytes are shared by every client, so queueing them costs a client no copy.
    if (this.transport.buffered() > this.opts.maxBufferedBytes) {
      this.disconnectSlow()
      return
    }
    this.write(rest)
  }

  /**
   * `position`: every event of this stream up to it has been handed to the transport (true once
   * live: the hub dispatches in order). A relay downstream learns its upstream's position from it
   * between events of its own stream.
   */
  heartbeat(position: number): void {
    if (this.closed) return
    // A client that left the last ping unanswered is not reading either (the ping waits behind the
    // data in its receive buffer): slow, like one whose unread bytes pass the limit.
    if (this.transport.buffered() > this.opts.maxBufferedBytes || !this.transport.responsive()) this.disconnectSlow()
    else this.transport.heartbeat(this.live ? position : null)
  }

  close(reason: 'shutdown' | 'error'): void {
    if (this.closed) return
    this.transport.close(reason)
    this.detach()
  }

  /**
   * A page of the replay, to this client alone, through the same bound as live batches: in chunks
   * of at most half the client's buffer limit (or one event, if larger), each written once the
   * socket has taken the one before. Never the whole page at once: a page of large events is tens
   * of MB, per client. A client whose socket takes nothing within the drain deadline is slow.
   */
  private async sendReplay(frames: Frame[]): Promise<void> {
    const chunkBytes = this.opts.maxBufferedBytes / 2
    let start = 0
    while (start < frames.length) {
      let end = start + 1
      let bytes = frames[start].sse.length
      while (end < frames.length && bytes + frames[end].sse.length <= chunkBytes) bytes += frames[end++].sse.length
      if (this.transport.buffered() > 0 && !(await this.drainedWithin(this.opts.drainTimeoutMs))) return this.disconnectSlow()
      if (this.closed) return
      this.write(new Batch(start === 0 && end === frames.length ? frames : frames.slice(start, end)))
      start = end
    }
    if (this.transport.buffered() > chunkBytes && !(await this.drainedWithin(this.opts.drainTimeoutMs))) this.disconnectSlow()
  }

  /** Did the socket take what is queued (or close) within `ms`? */
  private async drainedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))
    try {
      return await Promise.race([this.transport.drained().then(() => true as const), late])
    } finally {
      clearTimeout(timer)
    }
  }

  private write(batch: Batch): void {
    this.transport.send(batch)
    this.lastId = batch.lastId
    this.host.countDelivered(batch.frames.length)
  }

  private disconnectSlow(): void {
    this.host.countSlow(this)
    this.transport.close('slow')
    this.detach()
  }

  private detach(): void {
    if (this.closed) return
    this.closed = true
    this.pending = []
    this.gone.abort()
    this.host.remove(this)
  }
}
