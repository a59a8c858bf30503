import { isUtf8 } from 'node:buffer'
import { readFileSync } from 'node:fs'
import { parseWireMessage } from '../client/stream-client.js'
import { toJson, type StoredEvent } from '../event.js'

/**
 * The recording format: JSON Lines, one event per line, in id order:
 *   {"receivedAt":"2026-11-24T14:00:00.123Z","event":{"id":"1042","type":...,"time":...,"data":{...}}}
 * `event` is the event exactly as the wire format carries it; `receivedAt` is when the recorder
 * received it (the replay reproduces the gaps between these).
 */
export interface Recorded {
  /** Milliseconds since the epoch. */
  receivedAt: number
  event: StoredEvent
}

export class RecordingError extends Error {
  override name = 'RecordingError'
}

/** One line of a recording (without the newline); the event uses the wire serialisation. */
export function formatLine(receivedAt: Date, e: StoredEvent): string {
  return `{"receivedAt":${JSON.stringify(receivedAt.toISOString())},"event":${toJson(e)}}`
}

function parseLine(file: string, n: number, line: string): Recorded {
  const where = `${file}:${n}`
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch (err) {
    throw new RecordingError(`${where}: not valid JSON (${(err as Error).message})`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new RecordingError(`${where}: expected {"receivedAt":..., "event":{...}}`)
  const { receivedAt, event } = value as Record<string, unknown>
  const at = typeof receivedAt === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(receivedAt) ? Date.parse(receivedAt) : NaN
  if (Number.isNaN(at)) throw new RecordingError(`${where}: receivedAt must be an ISO-8601 date-time, got ${JSON.stringify(receivedAt)?.slice(0, 40)}`)
  let parsed: ReturnType<typeof parseWireMessage>
  try {
    parsed = parseWireMessage(event)
  } catch (err) {
    throw new RecordingError(`${where}: event: ${(err as Error).message}`)
  }
  if (!('event' in parsed)) throw new RecordingError(`${where}: control events ("live", "reset") are not recorded`)
  return { receivedAt: at, event: parsed.event }
}

/**
 * Read and check a whole recording. Errors name the file, the line and the reason.
 * `allowEmpty`: an empty file is a valid (empty) recording, e.g. when `record` starts on it.
 */
export function readRecording(file: string, opts: { allowEmpty?: boolean } = {}): Recorded[] {
  let bytes: Buffer
  try {
    bytes = readFileSync(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new RecordingError(`${file}: no such file`)
    throw new RecordingError(`${file}: cannot read: ${(err as Error).message}`)
  }
  // Decoding as UTF-8 would turn invalid bytes into U+FFFD and serve an event nobody recorded.
  if (!isUtf8(bytes)) {
    // A newline byte is never part of a multi-byte sequence, so some line holds the bad bytes.
    for (let n = 1, start = 0; start <= bytes.length; n++) {
      const end = bytes.indexOf(0x0a, start)
      const stop = end < 0 ? bytes.length : end
      if (!isUtf8(bytes.subarray(start, stop))) throw new RecordingError(`${file}:${n}: not valid UTF-8`)
      start = stop + 1
    }
  }
  const lines = bytes.toString('utf8').split('\n')
  const out: Recorded[] = []
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '')
    if (line.trim() === '') return
    const rec = parseLine(file, i + 1, line)
    const prev = out[out.length - 1]
    if (prev !== undefined && rec.event.id <= prev.event.id) {
      throw new RecordingError(`${file}:${i + 1}: event id ${rec.event.id} is not above the previous id ${prev.event.id} (ids must increase)`)
    }
    out.push(rec)
  })
  if (out.length === 0 && !opts.allowEmpty) throw new RecordingError(`${file}: the recording is empty (no events)`)
  return out
}
