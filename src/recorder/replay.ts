import type { FastifyInstance } from 'fastify'
import { buildApp } from '../app.js'
import { loadConfig, redactUrl, type LogLevel } from '../config.js'
import { COMPETITION_ACTIVATED, type NewEvent } from '../event.js'
import { isStreamRequest } from '../stream.js'
import { readRecording, type Recorded } from './file.js'
import { Progress, type ProgressOutput } from './progress.js'

export interface ReplayOptions {
  file: string
  /** Recorded gaps are divided by this (2: twice as fast). */
  speed?: number
  port?: number
  host?: string
  /** Start over at the end; each pass shifts the ids above the previous pass so they keep increasing. */
  loop?: boolean
  /** A config file for everything else (CORS, heartbeat, ...). */
  config?: string
  logLevel?: LogLevel
  output?: ProgressOutput
  progressIntervalMs?: number
  /** false: serve, but feed only when start() is called (tests connect their clients first). */
  autoStart?: boolean
  /** Start the schedule when the first client opens a stream (instead of at once). */
  startOnConnect?: boolean
}

export interface Replay {
  app: FastifyInstance
  url: string
  wsUrl: string
  events: number
  /** Begin feeding the recording (once). */
  start(): void
  /** Resolves when the last event of the last pass is stored (never with --loop until closed). */
  done: Promise<void>
  close(): Promise<void>
}

/**
 * Serve a recording with the live server itself: the app runs on the embedded store with posting
 * disabled, and the recorded events enter the store through the one ingest path, with their
 * recorded ids, on the recorded schedule divided by `speed`. Clients see the same paths, the same
 * wire format and the same resume rules as on the live server.
 */
export async function startReplay(opts: ReplayOptions): Promise<Replay> {
  const speed = opts.speed ?? 1
  if (!Number.isFinite(speed) || speed <= 0) throw new Error(`--speed must be a positive number, got ${opts.speed}`)
  const recording = readRecording(opts.file)
  const config = loadConfig({
    file: opts.config,
    overrides: {
      host: opts.host ?? '127.0.0.1',
      port: opts.port ?? 3000,
      logLevel: opts.logLevel ?? 'warn',
      store: { type: 'memory', capacity: Math.max(10_000, recording.length) },
      post: { enabled: false },
      // A replay serves the file only, whatever TAILCAST_UPSTREAM says.
      upstream: { url: '' },
      streams: { competitionsWindowHours: windowHours(recording) },
    },
  })
  const app = await buildApp(config)
  if (opts.startOnConnect) {
    app.addHook('onRequest', async (req) => {
      if (!started && isStreamRequest(req.method, req.url)) start(`the first client connected: ${redactUrl(req.url)}`)
    })
  }
  await app.listen({ host: config.host, port: config.port })
  const address = app.server.address()
  const port = address !== null && typeof address === 'object' ? address.port : config.port
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host

  const out = opts.output ?? process.stderr
  const first = recording[0]
  const last = recording[recording.length - 1]
  const span = last.event.id - first.event.id + 1
  let fed = 0
  let pass = 0
  let lastId = 0
  let stopped = false
  let wake: (() => void) | undefined
  const progress = new Progress(
    out,
    () => {
      let clients = 0
      for (const n of app.hub.connections().values()) clients += n
      return `replayed ${fed}/${recording.length} events${opts.loop ? ` (pass ${pass + 1})` : ''} at speed ${speed}, last id ${lastId || '-'}, ${clients} clients`
    },
    opts.progressIntervalMs,
  )

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(done, ms)
      function done(): void {
        clearTimeout(t)
        wake = undefined
        resolve()
      }
      wake = done
    })

  async function feed(): Promise<void> {
    for (;;) {
      const offset = pass * span
      const t0 = performance.now()
      fed = 0
      let i = 0
      while (i < recording.length && !stopped) {
        const due = t0 + (recording[i].receivedAt - first.receivedAt) / speed
        const wait = due - performance.now()
        if (wait > 0) await sleep(wait)
        if (stopped) return
        // Everything due by now goes in one batch, in file order.
        const now = performance.now()
        const batch: Recorded[] = []
        while (i < recording.length && t0 + (recording[i].receivedAt - first.receivedAt) / speed <= now) batch.push(recording[i++])
        if (batch.length === 0) batch.push(recording[i++])
        const events: NewEvent[] = batch.map(({ event: { id: _id, ...e } }) => e)
        await app.ingest.submit(
          events,
          batch.map((r) => r.event.id + offset),
        )
        fed += batch.length
        lastId = batch[batch.length - 1].event.id + offset
      }
      if (!opts.loop || stopped) return
      pass++
      await sleep(1000 / speed)
      if (stopped) return
    }
  }

  let started = false
  let resolveDone!: () => void
  let rejectDone!: (err: unknown) => void
  const done = new Promise<void>((resolve, reject) => {
    resolveDone = resolve
    rejectDone = reject
  })
  done.catch(() => {})
  const spanSeconds = (last.receivedAt - first.receivedAt) / speed / 1000
  const schedule = `${recording.length} events over ${spanSeconds.toFixed(1)} s at speed ${speed}${opts.loop ? ', looping' : ''}`
  /** Begin the schedule: the first event now, the others at their recorded gaps from it. */
  const start = (why?: string): void => {
    if (started) return
    started = true
    progress.note(`replay: schedule started at ${new Date().toISOString()}${why === undefined ? '' : ` (${why})`}: ${schedule}`)
    progress.start()
    feed().then(() => {
      if (!stopped) progress.stop(`replay finished: ${fed} events served at speed ${speed}, last id ${lastId}; still serving, Ctrl-C to stop`)
      resolveDone()
    }, rejectDone)
  }
  const waits = opts.startOnConnect || opts.autoStart === false
  progress.note(`replay: serving ${opts.file} on http://${shownHost}:${port} and ws://${shownHost}:${port}${opts.startOnConnect ? '; the schedule starts when the first client connects' : waits ? '; the schedule has not started' : ''}`)
  if (!waits) start()

  return {
    app,
    url: `http://${shownHost}:${port}`,
    wsUrl: `ws://${shownHost}:${port}`,
    events: recording.length,
    start: () => start(),
    done,
    async close() {
      stopped = true
      wake?.()
      await app.close()
    },
  }
}

/**
 * The competitions stream shows activations of the last N hours by their `time`; a recording made
 * days ago would show none, so the window is widened to reach back to its oldest activation.
 */
function windowHours(recording: Recorded[]): number {
  const base = 24
  let oldest = Infinity
  for (const r of recording) if (r.event.type === COMPETITION_ACTIVATED) oldest = Math.min(oldest, Date.parse(r.event.time))
  if (!Number.isFinite(oldest)) return base
  return Math.max(base, Math.ceil((Date.now() - oldest) / 3_600_000) + base)
}
