import t from 'tap'
import fc from 'fast-check'
import type { Frame } from '../../src/event.js'
import type { Batch } from '../../src/hub/frames.js'
import { Hub } from '../../src/hub/hub.js'
import type { Transport } from '../../src/hub/transport.js'
import type { StoreBounds, Tail, TailHandlers } from '../../src/store/event-store.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'

/**
 * A store shared with "other processes": its tail hands events over only when the test says so (a
 * tail that lags), and its newest-id query resolves after a few turns (a query that overlaps
 * requests and acknowledgements).
 */
class ControlledStore extends MemoryEventStore {
  // Not 'memory': the hub must ask the store for what other processes acknowledged.
  override readonly kind = 'controlled' as 'memory'
  private handlers: TailHandlers | undefined
  private handed = 0
  override newest(): Promise<number | null> {
    const answer = super.newest()
    return new Promise((resolve) => setTimeout(() => resolve(answer), Math.random() * 3))
  }
  override tail(afterId: number, handlers: TailHandlers): Tail {
    this.handlers = handlers
    this.handed = afterId
    return { close: async () => void (this.handlers = undefined) }
  }
  /** Hand the tail the next `n` stored events (all when n is Infinity). */
  async deliver(n: number): Promise<void> {
    const events = (await this.read({ kind: 'room', room: null }, this.handed, n === Infinity ? 1_000_000 : n)).filter((e) => e.id > this.handed)
    if (events.length === 0) return
    this.handed = events[events.length - 1].id
    this.handlers?.onEvents(events)
  }
}

/** What a client would see: data frames and control frames, in order. */
class RecordingTransport implements Transport {
  readonly kind = 'sse' as const
  readonly seen: { type: 'event' | 'live' | 'reset'; id: number }[] = []
  private closeListeners: (() => void)[] = []
  send(batch: Batch): void {
    for (const f of batch.frames) this.seen.push({ type: 'event', id: f.id })
  }
  sendControl(frame: Frame): void {
    this.seen.push({ type: JSON.parse(frame.json.toString()).type, id: frame.id })
  }
  buffered(): number {
    return 0
  }
  async drained(): Promise<void> {}
  heartbeat(): void {}
  responsive(): boolean {
    return true
  }
  close(): void {
    for (const l of this.closeListeners) l()
  }
  onClose(listener: () => void): void {
    this.closeListeners.push(listener)
  }
}

type Command =
  | { kind: 'post'; room: number; here: boolean }
  | { kind: 'tail'; n: number }
  | { kind: 'subscribe'; room: number; resume: 'none' | 'newest-seen' }
  | { kind: 'turn' }

const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ kind: fc.constant('post' as const), room: fc.integer({ min: 0, max: 2 }), here: fc.boolean() }),
  fc.record({ kind: fc.constant('tail' as const), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('subscribe' as const), room: fc.integer({ min: 0, max: 2 }), resume: fc.constantFrom('none' as const, 'newest-seen' as const) }),
  fc.constant({ kind: 'turn' as const }),
)

/**
 * Random interleavings of acknowledgements (by this process, or by another one sharing the store),
 * tail hand-overs and stream requests. Every stream must get every event of its room acknowledged
 * before its request before `live`, `live` at or past them, and the room's stored sequence after its
 * resume point exactly: no gap, no duplicate. With a long live wait the hub's dispatch must catch up;
 * with none, the gap is read from the store.
 */
t.test('read-your-writes at the seam: random interleavings of acknowledgements, tail hand-overs and subscriptions', async (t) => {
  let runs = 0
  await fc.assert(
    fc.asyncProperty(
      fc.array(command, { minLength: 1, maxLength: 60 }),
      fc.constantFrom(0, 60_000),
      fc.constantFrom(2, 50),
      fc.constantFrom(0, 1000),
      async (commands, liveWaitMs, replayPageSize, historyMaxEvents) => {
        runs++
        const store = new ControlledStore(10_000)
        const hub = new Hub(store, {
          heartbeatMs: 60_000,
          frameCacheBytes: 1 << 20,
          history: { maxBytes: 1 << 20, maxEvents: historyMaxEvents },
          replayPageSize,
          replayPageBytes: 1 << 20,
          liveWaitMs,
          maxPendingEvents: 10_000,
          maxBufferedBytes: 1 << 20,
          drainTimeoutMs: 60_000,
        })
        await hub.start()
        await hub.warmed
        const subs: { room: number; resume: number | null; mustHave: number[]; transport: RecordingTransport; done: Promise<void> }[] = []
        const acked: { id: number; room: number }[] = []
        for (const c of commands) {
          if (c.kind === 'post') {
            const [e] = await store.append([{ type: 'message', room: `r${c.room}`, time: new Date().toISOString(), data: {} }])
            if (c.here) hub.acknowledge(e.id)
            acked.push({ id: e.id, room: c.room })
          } else if (c.kind === 'tail') {
            await store.deliver(c.n)
          } else if (c.kind === 'subscribe') {
            const mine = acked.filter((a) => a.room === c.room)
            const resume = c.resume === 'newest-seen' && hub.position > 0 ? hub.position : null
            const transport = new RecordingTransport()
            const mustHave = mine.map((a) => a.id).filter((id) => resume === null || id > resume)
            subs.push({ room: c.room, resume, mustHave, transport, done: hub.subscribe({ kind: 'room', room: `r${c.room}` }, transport, resume) })
          } else {
            await new Promise((r) => setImmediate(r))
          }
        }
        // The tail catches up in the end, as a real one does.
        const catchUp = setInterval(() => void store.deliver(Infinity), 5)
        try {
          await Promise.all(subs.map((s) => s.done))
        } finally {
          clearInterval(catchUp)
        }
        await store.deliver(Infinity)
        for (const s of subs) {
          const seen = s.transport.seen
          const live = seen.findIndex((f) => f.type === 'live')
          if (live < 0) throw new Error('no live')
          if (seen.some((f) => f.type === 'reset')) throw new Error('unexpected reset')
          const before = new Set(seen.slice(0, live).map((f) => f.id))
          const missing = s.mustHave.filter((id) => !before.has(id))
          if (missing.length > 0) throw new Error(`acknowledged before the request but not before live: ${missing.join(',')}`)
          if (seen[live].id < Math.max(0, ...s.mustHave)) throw new Error(`live at ${seen[live].id}, before ${Math.max(...s.mustHave)}`)
          const got = seen.filter((f) => f.type === 'event').map((f) => f.id)
          const stored = (await store.read({ kind: 'room', room: `r${s.room}` }, s.resume ?? 0, 10_000)).map((e) => e.id)
          if (got.join(',') !== stored.join(',')) throw new Error(`got ${got.join(',')}, stored ${stored.join(',')}`)
        }
        await hub.close()
      },
    ),
    { numRuns: 150 },
  )
  t.ok(runs >= 150, `${runs} interleavings, every stream exact with every acknowledged event before live`)
})
