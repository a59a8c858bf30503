import { EVENT_LIMITS, frameOf, jsonOf, type Frame, type StoredEvent } from '../event.js'
import type { EventStore, Tail } from '../store/event-store.js'
import { eventKeys, matches, type StreamFilter } from '../stream.js'
import { Batch, FrameCache } from './frames.js'
import { History, type HistoryOptions } from './history.js'
import { SharedQuery } from './shared-query.js'
import { Subscriber, type SubscriberHost, type SubscriberOptions } from './subscriber.js'
import type { Transport } from './transport.js'

export interface HubOptions extends SubscriberOptions {
  heartbeatMs: number
  /** Bytes of frames kept for replays read from the store (see FrameCache). */
  frameCacheBytes: number
  history: HistoryOptions
  log?: { warn(obj: unknown, msg?: string): void; error(obj: unknown, msg?: string): void }
}

interface Topic {
  filter: StreamFilter
  subscribers: Set<Subscriber>
}

/** Counters read by /metrics. */
export interface HubStats {
  ingested: number
  delivered: number
  slowDisconnects: number
  /** Events that could not be serialised, and clients whose delivery threw: logged, skipped, the rest flows. */
  eventErrors: number
  /** Milliseconds between an event's `time` and its dispatch, for the last dispatched event. */
  tailLagMs: number
  /** Replays served from the hot history alone, and those that read the store. */
  replaysFromMemory: number
  replaysFromStore: number
  /** How long warming the history from the store took at start. */
  warmMs: number
  /** Queries of the newest acknowledged position (shared by the subscribers that arrive together). */
  positionQueries: number
  /** Streams whose `live` waited for the dispatch to pass their target past `streams.liveWaitMs`: their gap was read from the store. */
  liveWaitsExpired: number
}

/**
 * The process's one follower of the store. Every new event is serialised once, grouped by the
 * streams it belongs to, and handed to each subscriber of those streams.
 */
export class Hub implements SubscriberHost {
  readonly frames: FrameCache
  readonly stats: HubStats = { ingested: 0, delivered: 0, slowDisconnects: 0, eventErrors: 0, tailLagMs: 0, replaysFromMemory: 0, replaysFromStore: 0, warmMs: 0, positionQueries: 0, liveWaitsExpired: 0 }
  readonly history: History
  private readonly topics = new Map<string, Topic>()
  private readonly all = new Set<Subscriber>()
  private tail: Tail | undefined
  private timer: NodeJS.Timeout | undefined
  private pos = 0
  /** On a relay: the upstream's stream position, which may be past the newest event stored here. */
  private upstreamPos = 0
  private upstreamWaiting: { position: number; storedThrough: number } | undefined
  private readonly newestStored = new SharedQuery(async () => (await this.store.newest()) ?? 0)
  /** The newest id this process acknowledged (a POST answered, a relayed event stored). */
  private acked = 0
  /** Where the newest acknowledged position of every process sharing the store is read (null: only this process writes). */
  private newestAcked: SharedQuery<number> | null
  private waiters: { position: number; done: (reached: boolean) => void }[] = []
  private closing = false
  /** Resolves once the history is warm (/ready reads `history.isWarm`; tests await this). */
  warmed: Promise<void> = Promise.resolve()

  constructor(private readonly store: EventStore, private readonly opts: HubOptions) {
    this.frames = new FrameCache(opts.frameCacheBytes)
    this.history = new History(opts.history)
    // The embedded store has one writer, this process: what it acknowledged is all there is.
    this.newestAcked = store.kind === 'memory' ? null : this.countedQuery(() => this.newestStored.fresh())
  }

  /** An event this process acknowledged (stored, or accepted by JetStream with this id). */
  acknowledge(id: number): void {
    if (id > this.acked) this.acked = id
  }

  /**
   * Where the newest acknowledged position is read when other processes write too: the store's
   * newest id by default, JetStream's last sequence when NATS feeds the store (the ingest says so).
   */
  readAcknowledgedFrom(query: () => Promise<number>): void {
    this.newestAcked = this.countedQuery(query)
  }

  private countedQuery(query: () => Promise<number>): SharedQuery<number> {
    return new SharedQuery(() => {
      this.stats.positionQueries++
      return query()
    })
  }

  /**
   * The position a stream requested now must reach before `live`: every id acknowledged before
   * this call, by this process (known without a query) or by any other sharing the store (a query
   * that starts after this call, shared with every request that arrives while one runs).
   */
  async target(): Promise<number> {
    const mine = this.acked
    if (this.newestAcked === null) return mine
    return Math.max(mine, await this.newestAcked.fresh())
  }

  /**
   * Resolves true once the dispatch has passed `position` (every event up to it was handed to the
   * subscribers then registered), false after `ms` or when `signal` aborts.
   */
  reached(position: number, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.position >= position) return Promise.resolve(true)
    if (this.closing || signal?.aborted) return Promise.resolve(false)
    return new Promise((resolve) => {
      const waiter = {
        position,
        done: (reached: boolean) => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', abort)
          this.waiters = this.waiters.filter((w) => w !== waiter)
          resolve(reached)
        },
      }
      const abort = (): void => waiter.done(false)
      const timer = setTimeout(abort, ms)
      timer.unref()
      signal?.addEventListener('abort', abort, { once: true })
      this.waiters.push(waiter)
    })
  }

  private wakeWaiters(): void {
    if (this.waiters.length === 0) return
    const position = this.position
    for (const w of this.waiters.filter((w) => w.position <= position)) w.done(true)
  }

  /**
   * The stream position: every event up to it has passed through the hub. On a relay it is the
   * upstream's, so a client can move between members of a chain without a needless `reset`.
   */
  get position(): number {
    return Math.max(this.pos, this.upstreamPos)
  }

  /**
   * A relay's upstream reported `position` (in `live` or a heartbeat) after the relay had stored its
   * events through `storedThrough`. It becomes this hub's position only once those are dispatched
   * here too: a downstream client told the position before an event would skip that event.
   */
  followUpstream(position: number, storedThrough: number): void {
    if (position <= this.upstreamPos) return
    if (this.pos >= storedThrough) this.upstreamPos = position
    else this.upstreamWaiting = { position, storedThrough }
    this.wakeWaiters()
  }

  /**
   * Follow the store from its newest event, and warm the history in the background (`warmed`):
   * reading 100,000 events can take longer than a start-up should (23 s on FerretDB), and until
   * it is warm every replay simply reads the store.
   */
  async start(): Promise<void> {
    const { newest } = await this.store.bounds()
    this.pos = newest ?? 0
    this.tail = this.store.tail(this.pos, {
      onEvents: (events, acceptedAt) => {
        // From the store's acceptance, never the event's own `time` (a client's, an upstream's: any age).
        if (acceptedAt !== undefined) this.stats.tailLagMs = Math.max(0, Date.now() - acceptedAt)
        this.dispatch(events)
      },
      onError: (err) => this.opts.log?.warn({ err }, 'store tail re-opened'),
    })
    this.timer = setInterval(() => {
      const position = this.position
      for (const s of this.all) s.heartbeat(position)
    }, this.opts.heartbeatMs)
    this.timer.unref()
    this.warmed = this.warm(this.pos)
  }

  /** The store's newest events up to `through` (the tail hands over what follows) into the history. */
  private async warm(through: number): Promise<void> {
    const started = Date.now()
    try {
      const { maxEvents, maxBytes } = this.opts.history
      // Bounded in bytes too: the store's newest events can be far more than the history keeps.
      const read = await this.store.newestEvents(maxEvents, maxBytes)
      // All the store holds only if neither bound cut the read: fewer than asked, with room left for the largest event.
      let bytes = 0
      for (const e of read) bytes += jsonOf(e).length
      const complete = read.length < maxEvents && (read.length === 0 || bytes + EVENT_LIMITS.maxBytes <= maxBytes)
      const events = read.filter((e) => e.id <= through)
      const floor = complete ? await this.store.evictedThrough() : (events[0]?.id ?? through + 1) - 1
      this.history.warm(events.map((event) => ({ event, frame: this.serialise(event, false) })), floor, complete)
    } catch (err) {
      // Everything after `through` passes through dispatch: the history is complete from there.
      if (this.closing) return
      this.opts.log?.warn({ err }, 'warming the history from the store failed; it holds new events only')
      this.history.warm([], through, false)
    }
    this.stats.warmMs = Date.now() - started
  }

  /** Attach a client and run its replay; resolves once it is live (or gone). */
  subscribe(filter: StreamFilter, transport: Transport, resumeId: number | null): Promise<void> {
    return new Subscriber(filter, transport, this, this.store, this.opts).start(resumeId)
  }

  add(s: Subscriber): void {
    if (this.closing) {
      s.close('shutdown')
      return
    }
    let topic = this.topics.get(s.key)
    if (topic === undefined) {
      topic = { filter: s.filter, subscribers: new Set() }
      this.topics.set(s.key, topic)
    }
    topic.subscribers.add(s)
    this.all.add(s)
  }

  remove(s: Subscriber): void {
    this.all.delete(s)
    const topic = this.topics.get(s.key)
    if (topic === undefined) return
    topic.subscribers.delete(s)
    if (topic.subscribers.size === 0) this.topics.delete(s.key)
  }

  countDelivered(n: number): void {
    this.stats.delivered += n
  }

  countSlow(): void {
    this.stats.slowDisconnects++
  }

  /**
   * Is `id` past the newest stored event? Asked when a resume id is past what this process has
   * seen (its tail lags the store). The answer comes from a query that started after the question
   * (an earlier one may have run before the event was stored), shared by every concurrent asker:
   * a storm of such resumes (a store replaced, every id past its newest) costs two queries, not one each.
   */
  async isPastNewest(id: number): Promise<boolean> {
    return id > (await this.newestStored.fresh())
  }

  countLiveWaitExpired(): void {
    this.stats.liveWaitsExpired++
  }

  countReplay(fromStore: boolean): void {
    if (fromStore) this.stats.replaysFromStore++
    else this.stats.replaysFromMemory++
  }

  /**
   * The one place an event becomes its wire frame, for live dispatch and replays alike. The decoder
   * admits only events that serialise, but a store can hold what it never checked (a document
   * written by another tool): such an event is logged with its id, counted and skipped, so it can
   * stop neither the process nor any stream.
   */
  frame(e: StoredEvent): Frame | null {
    return this.serialise(e, true)
  }

  /** `cached`: a replay's event read from the store, shared through the frame cache; otherwise the history holds it. */
  private serialise(e: StoredEvent, cached: boolean): Frame | null {
    try {
      return cached ? this.frames.get(e) : frameOf(e)
    } catch (err) {
      this.stats.eventErrors++
      this.opts.log?.error({ err, eventId: e.id, type: e.type }, 'event cannot be serialised; skipped')
      return null
    }
  }

  /** Clients of this process per stream key (see streamKey): what presence sums across instances. */
  presence(): Map<string, number> {
    const counts = new Map<string, number>()
    for (const [key, topic] of this.topics) counts.set(key, topic.subscribers.size)
    return counts
  }

  /** Bytes written to this process's clients that their sockets have not taken yet. */
  bufferedBytes(): number {
    let n = 0
    for (const s of this.all) n += s.transport.buffered()
    return n
  }

  connections(): Map<string, number> {
    const counts = new Map<string, number>()
    for (const s of this.all) {
      const label = `${s.transport.kind}:${s.filter.kind}`
      counts.set(label, (counts.get(label) ?? 0) + 1)
    }
    return counts
  }

  /**
   * Take the events the tail hands over (the memory store groups the appends of one turn), serialise
   * each once, group by the streams it belongs to, and hand each group as one Batch (whose bytes are
   * built once) to every subscriber of that stream, at once.
   */
  dispatch(handed: StoredEvent[]): void {
    if (this.closing) return
    // A re-opened tail may hand over what was already dispatched; ids only ever go up.
    const events = handed.filter((e) => e.id > this.pos)
    if (events.length === 0) return
    const now = Date.now()
    const groups = new Map<Topic, Frame[]>()
    for (const e of events) {
      this.pos = e.id
      this.stats.ingested++
      const frame = this.serialise(e, false)
      this.history.add(e, frame)
      if (frame === null) continue
      for (const key of eventKeys(e)) {
        const topic = this.topics.get(key)
        if (topic === undefined || !matches(topic.filter, e, now)) continue
        const list = groups.get(topic)
        if (list === undefined) groups.set(topic, [frame])
        else list.push(frame)
      }
    }
    const waiting = this.upstreamWaiting
    if (waiting !== undefined && this.pos >= waiting.storedThrough) {
      this.upstreamPos = Math.max(this.upstreamPos, waiting.position)
      this.upstreamWaiting = undefined
    }
    for (const [topic, frames] of groups) {
      const batch = new Batch(frames)
      for (const s of topic.subscribers) {
        try {
          s.deliver(batch)
        } catch (err) {
          // One client's failure is that client's: it reconnects and resumes, the others go on.
          this.stats.eventErrors++
          this.opts.log?.error({ err, lastEventId: batch.lastId }, 'delivery to a client failed; disconnecting it')
          s.close('error')
        }
      }
    }
    // After the hand-over: a subscriber waiting for this position holds these events now.
    this.wakeWaiters()
  }

  /** Tell every client to reconnect (WS 1012, SSE end) and stop following the store. */
  async close(): Promise<void> {
    this.closing = true
    for (const w of [...this.waiters]) w.done(false)
    if (this.timer !== undefined) clearInterval(this.timer)
    for (const s of [...this.all]) s.close('shutdown')
    await this.tail?.close()
  }
}
