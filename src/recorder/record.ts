import { closeSync, existsSync, fsyncSync, openSync, readSync, fstatSync, writeSync } from 'node:fs'
import { StreamClient, type StreamStatus } from '../client/stream-client.js'
import type { StoredEvent } from '../event.js'
import { formatLine, readRecording } from './file.js'
import { Progress, type ProgressOutput } from './progress.js'

export interface RecordOptions {
  url: string
  /** A JWT for a private stream (see StreamClientOptions.token). */
  token?: string
  file: string
  /** Progress and notes; default process.stderr. */
  output?: ProgressOutput
  /** Plain progress lines every this many ms when the output is not a TTY. */
  progressIntervalMs?: number
  minBackoffMs?: number
  maxBackoffMs?: number
}

export interface RecordSummary {
  /** Events written by this run. */
  recorded: number
  /** Id of the last event in the file (0 when none). */
  lastId: number
}

export interface Recorder {
  /** Events written by this run so far. */
  readonly recorded: number
  readonly lastId: number
  /** Stop, write out what is buffered, close the file. */
  stop(): Promise<RecordSummary>
  /** Rejects when the server refuses in a way retrying cannot fix (e.g. 404, 400). */
  readonly failed: Promise<never>
}

const FLUSH_MS = 200
const FLUSH_BYTES = 64 * 1024

/**
 * Follow a stream and append each event to a JSON Lines file (see file.ts). On an existing file
 * it resumes after the file's last id, so a restarted recorder adds no duplicate and leaves no gap
 * (as long as the server still holds that id; otherwise the server sends `reset`, noted on the output).
 */
export async function startRecording(opts: RecordOptions): Promise<Recorder> {
  const out = opts.output ?? process.stderr
  const existing = existsSync(opts.file) ? readRecording(opts.file, { allowEmpty: true }) : []
  let lastId = existing.length > 0 ? existing[existing.length - 1].event.id : 0
  const fd = openSync(opts.file, 'a+')
  // A file whose last line lacks its newline (cut short while being written) gets one first.
  let pending = endsWithoutNewline(fd) ? '\n' : ''
  let recorded = 0
  let behind = 0
  const started = Date.now()
  let state = 'connecting'

  const flush = (): void => {
    if (pending === '') return
    writeSync(fd, pending)
    pending = ''
  }
  const flushTimer = setInterval(flush, FLUSH_MS)
  flushTimer.unref()

  const progress = new Progress(
    out,
    () => {
      const secs = Math.max(0.001, (Date.now() - started) / 1000)
      return `recorded ${recorded} events (${(recorded / secs).toFixed(1)}/s), last id ${lastId || '-'}, ${state} -> ${opts.file}`
    },
    opts.progressIntervalMs,
  )

  let fail!: (err: Error) => void
  const failed = new Promise<never>((_, reject) => (fail = reject))
  failed.catch(() => {})

  const client = new StreamClient({
    url: opts.url,
    token: opts.token,
    lastEventId: lastId,
    minBackoffMs: opts.minBackoffMs,
    maxBackoffMs: opts.maxBackoffMs,
    onEvent: (e: StoredEvent) => {
      pending += formatLine(new Date(), e) + '\n'
      lastId = e.id
      recorded++
      if (pending.length > FLUSH_BYTES) flush()
    },
    onLive: () => {
      state = 'live'
    },
    onReset: (c) => {
      progress.note(
        `record: the server sent reset (${String(c.data.reason ?? 'resume id not available')}): events after id ${lastId} that the server no longer holds are missing; recording continues with its current state`,
      )
    },
    onBehind: (e) => {
      behind++
      if (behind === 1 || behind % 1000 === 0) {
        progress.note(
          `record: after a reset the server sends ids not above ${lastId} (e.g. ${e.id}): its history was replaced; ${behind} such events not written. Record it into a new file.`,
        )
      }
    },
    onStatus: (s: StreamStatus) => {
      if (s.state === 'open') state = 'connected'
      else if (s.state === 'down') {
        state = 'reconnecting'
        progress.note(`record: disconnected (${s.error}); reconnecting in ${s.retryInMs} ms from id ${lastId || '(start)'}`)
      }
    },
    onInvalid: (id, reason) => progress.note(`record: skipped event ${id}, which tailcast does not accept (${reason})`),
    onFatal: (err) => fail(err),
  })
  progress.start()
  client.start()

  let stopping: Promise<RecordSummary> | undefined
  return {
    get recorded() {
      return recorded
    },
    get lastId() {
      return lastId
    },
    failed,
    stop() {
      stopping ??= (async () => {
        await client.close()
        clearInterval(flushTimer)
        flush()
        fsyncSync(fd)
        closeSync(fd)
        progress.stop(`recorded ${recorded} events this run, last id ${lastId || '-'} -> ${opts.file}`)
        return { recorded, lastId }
      })()
      return stopping
    },
  }
}

function endsWithoutNewline(fd: number): boolean {
  const size = fstatSync(fd).size
  if (size === 0) return false
  const b = Buffer.alloc(1)
  readSync(fd, b, 0, 1, size - 1)
  return b[0] !== 0x0a
}
