import { frameOf, type Frame, type StoredEvent } from '../event.js'

/**
 * Serialise each event once per process: live dispatch and every replay of the same event share
 * one Frame. Bounded; the oldest entries go first (replays mostly read recent events).
 */
export class FrameCache {
  private readonly frames = new Map<number, Frame>()

  constructor(private readonly capacity: number) {}

  get(e: StoredEvent): Frame {
    let f = this.frames.get(e.id)
    if (f === undefined) {
      f = frameOf(e)
      this.frames.set(e.id, f)
      if (this.frames.size > this.capacity) this.frames.delete(this.frames.keys().next().value as number)
    }
    return f
  }
}

/** Frames bound for one stream in one dispatch; the SSE bytes are joined once and shared. */
export class Batch {
  private joined: Buffer | undefined

  constructor(readonly frames: Frame[]) {}

  get lastId(): number {
    return this.frames[this.frames.length - 1].id
  }

  get sse(): Buffer {
    if (this.joined === undefined) {
      this.joined = this.frames.length === 1 ? this.frames[0].sse : Buffer.concat(this.frames.map((f) => f.sse))
    }
    return this.joined
  }

  /** The frames after `id`, as a batch (the whole batch when none is at or before it). */
  after(id: number): Batch | null {
    if (this.frames[0].id > id) return this
    const rest = this.frames.filter((f) => f.id > id)
    return rest.length === 0 ? null : new Batch(rest)
  }
}
