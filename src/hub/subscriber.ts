import { controlFrame } from '../event.js'
import type { EventStore } from '../store/event-store.js'
import { streamKey, type StreamFilter } from '../stream.js'
import { Batch, type FrameCache } from './frames.js'
import type { Transport } from './transport.js'

export interface SubscriberOptions {
  replayPageSize: number
  /** Live events held while the replay runs; past this the replay simply reads further. */
  maxPendingEvents: number
  maxBufferedBytes: number
}

/** What the subscriber needs of the hub (kept narrow so the two stay decoupled). */
export interface SubscriberHost {
  readonly position: number
  readonly frames: FrameCache
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
 */
export class Subscriber {
  readonly key: string
  private live = false
  private closed = false
  private pending: Batch[] = []
  private pendingCount = 0
  private overflowed = false
  /** Id of the last event sent to this client (0: none yet). */
  private lastId = 0

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
   * `reset` is sent first when the resume id cannot be honoured exactly.
   */
  async start(resumeId: number | null): Promise<void> {
    let cursor = 0
    if (resumeId !== null) {
      const { oldest, newest } = await this.store.bounds()
      if (oldest === null || newest === null || resumeId < oldest || resumeId > newest) {
        const why = oldest === null || newest === null || resumeId > newest ? 'newer than the newest stored event' : 'older than the oldest stored event'
        this.transport.sendControl(controlFrame('reset', 0, { lastEventId: String(resumeId), reason: `lastEventId ${why}` }))
      } else {
        cursor = resumeId
      }
    }
    if (this.closed) return
    this.host.add(this)
    for (;;) {
      const page = await this.store.read(this.filter, cursor, this.opts.replayPageSize)
      if (this.closed) return
      if (page.length > 0) {
        this.write(new Batch(page.map((e) => this.host.frames.get(e))))
        cursor = this.lastId
        if (this.transport.buffered() > this.opts.maxBufferedBytes / 2) await this.transport.drained()
        if (this.closed) return
      }
      if (page.length < this.opts.replayPageSize) {
        if (!this.overflowed) break
        // Live events were dropped from the hold while replaying: they are in the store, read on.
        this.overflowed = false
      }
    }
    for (const b of this.pending) {
      const rest = b.after(this.lastId)
      if (rest !== null) this.write(rest)
    }
    this.pending = []
    this.live = true
    this.transport.sendControl(controlFrame('live', Math.max(this.lastId, this.host.position)))
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

  heartbeat(): void {
    if (this.closed) return
    if (this.transport.buffered() > this.opts.maxBufferedBytes) this.disconnectSlow()
    else this.transport.heartbeat()
  }

  close(reason: 'shutdown' | 'error'): void {
    if (this.closed) return
    this.transport.close(reason)
    this.detach()
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
    this.host.remove(this)
  }
}
