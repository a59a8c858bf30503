import { totalmem } from 'node:os'
import { getHeapStatistics } from 'node:v8'

/** What holds memory in proportion to traffic; each is bounded in serialised bytes. */
export type MemoryPart = BoundedPart | 'ingest' | 'presence'

/** The parts that take a share of the budget (see BUDGET_SHARES). */
export type BoundedPart = 'store' | 'history' | 'frames' | 'clients'

/**
 * The share of the budget each part may hold. `store`: the embedded ring's events (none on MongoDB);
 * `history`: the hot history's frames; `frames`: frames of replays read from the store, shared by the
 * clients replaying the same events; `clients`: bytes written to clients' sockets and not yet taken
 * by the kernel (each client at most `streams.maxBufferedBytes`; a measure, not a reservation).
 * Measured but bounded by their own limits, not by a share: `ingest` (NATS messages on their way to
 * the store: at most twice `nats.batchSize` of them, each within the server's max_payload) and
 * `presence` (the instances' presence documents: one entry per stream key with clients).
 */
export const BUDGET_SHARES: Record<BoundedPart, number> = { store: 0.5, history: 0.25, frames: 1 / 16, clients: 3 / 16 }

/** A budget below this cannot hold one event of the decoder's largest size in every part. */
export const MIN_BUDGET_BYTES = 16 * 1024 * 1024

/**
 * The default when `memory.budgetBytes` is 0: a quarter of the machine's memory (or the cgroup's limit)
 * and at most half of V8's heap limit: the events themselves are held as buffers outside the heap,
 * but their bookkeeping and every request's parsing are on it, and the heap limit is how an operator
 * tells Node how much it may take (`--max-old-space-size`).
 */
export function defaultBudgetBytes(): number {
  const constrained = process.constrainedMemory()
  const machine = constrained > 0 && constrained < totalmem() ? constrained : totalmem()
  return Math.max(MIN_BUDGET_BYTES, Math.floor(Math.min(machine / 4, getHeapStatistics().heap_size_limit / 2)))
}

/**
 * The process's one memory budget, in bytes, that the parts share (see BUDGET_SHARES). Each part
 * bounds itself by `limit(part)` and reports what it holds through `track`, for /metrics.
 */
export class MemoryBudget {
  readonly totalBytes: number
  private readonly readers = new Map<MemoryPart, () => number>()

  /** `bytes` 0: defaultBudgetBytes(). */
  constructor(bytes = 0) {
    if (!Number.isInteger(bytes) || bytes < 0) throw new Error(`memory budget must be a non-negative integer number of bytes, got ${bytes}`)
    this.totalBytes = bytes === 0 ? defaultBudgetBytes() : Math.max(MIN_BUDGET_BYTES, bytes)
  }

  /** The most `part` may hold. */
  limit(part: BoundedPart): number {
    return Math.floor(this.totalBytes * BUDGET_SHARES[part])
  }

  /** `read` says what `part` holds now (called when metrics are scraped). */
  track(part: MemoryPart, read: () => number): void {
    this.readers.set(part, read)
  }

  /** Bytes each tracked part holds now. */
  parts(): Map<MemoryPart, number> {
    const out = new Map<MemoryPart, number>()
    for (const [part, read] of this.readers) out.set(part, read())
    return out
  }

  /** Bytes all parts hold now. */
  used(): number {
    let n = 0
    for (const bytes of this.parts().values()) n += bytes
    return n
  }
}
