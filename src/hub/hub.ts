import type { Frame, StoredEvent } from '../event.js'
import type { EventStore, StoreBounds, Tail } from '../store/event-store.js'
import { eventKeys, matches, type StreamFilter } from '../stream.js'
import { Batch, FrameCache } from './frames.js'
import { History, type HistoryOptions } from './history.js'
import { Subscriber, type SubscriberHost, type SubscriberOptions } from './subscriber.js'
import type { Transport } from './transport.js'

export interface HubOptions extends SubscriberOptions {
  heartbeatMs: number
  frameCacheSize: number
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
}

/**
 * The process's one follower of the store. Every new event is serialised once, grouped by the
 * streams it belongs to, and handed to each subscriber of those streams.
 */
export class Hub implements SubscriberHost {
  readonly frames: FrameCache
  readonly stats: HubStats = { ingested: 0, delivered: 0, slowDisconnects: 0, eventErrors: 0, tailLagMs: 0, replaysFromMemory: 0, replaysFromStore: 0, warmMs: 0 }
  readonly history: History
  private readonly topics = new Map<string, Topic>()
  private readonly all = new Set<Subscriber>()
  private tail: Tail | undefined
  private timer: NodeJS.Timeout | undefined
  private pos = 0
  /** On a relay: the upstream's stream position, which may be past the newest event stored here. */
  private upstreamPos = 0
  private upstreamWaiting: { position: number; storedThrough: number } | undefined
  private newestQuery: Promise<StoreBounds> | undefined
  private closing = false
  /** Resolves once the history is warm (/ready reads `history.isWarm`; tests await this). */
  warmed: Promise<void> = Promise.resolve()

  constructor(private readonly store: EventStore, private readonly opts: HubOptions) {
    this.frames = new FrameCache(opts.frameCacheSize)
    this.history = new History(opts.history)
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
      const read = await this.store.newestEvents(this.opts.history.maxEvents)
      const complete = read.length < this.opts.history.maxEvents
      const events = read.filter((e) => e.id <= through)
      const floor = complete ? await this.store.evictedThrough() : (events[0]?.id ?? through + 1) - 1
      this.history.warm(events.map((event) => ({ event, frame: this.frame(event) })), floor, complete)
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
   * seen (its tail lags the store). Concurrent askers share one store query. A "yes" from a query
   * that was already running when asked is checked again, since it may have started before the
   * event was stored: with the next shared query, which starts after this one ended. A storm of
   * such resumes (a store replaced, every id past its newest) costs two queries, not one each.
   */
  async isPastNewest(id: number): Promise<boolean> {
    const joined = this.newestQuery !== undefined
    if (id <= (await this.sharedNewest())) return false
    return !joined || id > (await this.sharedNewest())
  }

  private sharedNewest(): Promise<number> {
    if (this.newestQuery === undefined) {
      this.newestQuery = this.store.bounds().finally(() => (this.newestQuery = undefined))
    }
    return this.newestQuery.then((b) => b.newest ?? 0)
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
    try {
      return this.frames.get(e)
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
      const frame = this.frame(e)
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
  }

  /** Tell every client to reconnect (WS 1012, SSE end) and stop following the store. */
  async close(): Promise<void> {
    this.closing = true
    if (this.timer !== undefined) clearInterval(this.timer)
    for (const s of [...this.all]) s.close('shutdown')
    await this.tail?.close()
  }
}
