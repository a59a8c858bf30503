import * as wsModule from 'ws'
import { frameOf, unnamedSse, type Frame, type StoredEvent } from '../event.js'
import { heldBytes } from './history.js'

/** ws's own framer (not in its type definitions): a server frame is never masked, so its bytes are the same for every client. */
const wsFrame = (wsModule as unknown as { Sender: { frame(data: Buffer, o: object): Buffer[] } }).Sender.frame

/** One unmasked, uncompressed WebSocket text frame holding `payload`. */
export function wsTextFrame(payload: Buffer): Buffer {
  const parts = wsFrame(payload, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false })
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

const CRLF = Buffer.from('\r\n')

/** Each event's WebSocket frame, built once per process like its SSE record (replays are per client). */
const wsFrames = new WeakMap<Frame, Buffer>()

function wsFrameOf(frame: Frame): Buffer {
  let bytes = wsFrames.get(frame)
  if (bytes === undefined) wsFrames.set(frame, (bytes = wsTextFrame(frame.json)))
  return bytes
}

/**
 * Frames of events read from the store for replays (older than the hot history, or while it warms),
 * so that clients replaying the same events share one serialisation. Bounded in bytes (what the
 * history would count for them); the oldest entries go first. Live events never pass through here:
 * the history holds their frames.
 */
export class FrameCache {
  private readonly frames = new Map<number, Frame>()
  private size = 0

  constructor(private readonly maxBytes: number) {}

  get bytes(): number {
    return this.size
  }

  get(e: StoredEvent): Frame {
    let f = this.frames.get(e.id)
    if (f === undefined) {
      f = frameOf(e)
      const bytes = heldBytes(f)
      if (bytes > this.maxBytes) return f
      this.frames.set(e.id, f)
      this.size += bytes
      while (this.size > this.maxBytes) {
        const oldest = this.frames.entries().next().value as [number, Frame]
        this.frames.delete(oldest[0])
        this.size -= heldBytes(oldest[1])
      }
    }
    return f
  }
}

/**
 * Frames bound for one stream in one dispatch. The bytes each transport writes are built once per
 * batch, lazily, and the same buffer goes to every client: SSE records (named: with `event: <type>`
 * for `addEventListener(type)`; unnamed: without, for `onmessage`) and WebSocket frames.
 */
export class Batch {
  /** Index 0: named SSE records, 1: unnamed. */
  private readonly records: (Buffer | undefined)[] = [undefined, undefined]
  private readonly chunks: (Buffer | undefined)[] = [undefined, undefined]
  private wsBytes: Buffer | undefined

  constructor(readonly frames: Frame[]) {}

  get lastId(): number {
    return this.frames[this.frames.length - 1].id
  }

  /** Each event's SSE record, or the slices of it without its `event:` line (no copy either way). */
  private parts(unnamed: boolean): Buffer[] {
    return unnamed ? this.frames.flatMap((f) => unnamedSse(f.sse)) : this.frames.map((f) => f.sse)
  }

  /** The SSE records, back to back. */
  sse(unnamed = false): Buffer {
    const i = unnamed ? 1 : 0
    let bytes = this.records[i]
    if (bytes === undefined) {
      const parts = this.parts(unnamed)
      this.records[i] = bytes = parts.length === 1 ? parts[0] : Buffer.concat(parts)
    }
    return bytes
  }

  /** The SSE records framed as one chunk of a chunked HTTP/1.1 body (built in one copy when `sse()` is not needed). */
  sseChunk(unnamed = false): Buffer {
    const i = unnamed ? 1 : 0
    let chunk = this.chunks[i]
    if (chunk === undefined) {
      const joined = this.records[i]
      const parts = joined !== undefined ? [joined] : this.parts(unnamed)
      const length = parts.reduce((n, p) => n + p.length, 0)
      this.chunks[i] = chunk = Buffer.concat([Buffer.from(`${length.toString(16)}\r\n`), ...parts, CRLF])
    }
    return chunk
  }

  /** One WebSocket text frame per event, back to back. */
  get ws(): Buffer {
    if (this.wsBytes === undefined) {
      this.wsBytes = this.frames.length === 1 ? wsFrameOf(this.frames[0]) : Buffer.concat(this.frames.map(wsFrameOf))
    }
    return this.wsBytes
  }

  /** The frames after `id`, as a batch (the whole batch when none is at or before it). */
  after(id: number): Batch | null {
    if (this.frames[0].id > id) return this
    const rest = this.frames.filter((f) => f.id > id)
    return rest.length === 0 ? null : new Batch(rest)
  }
}
