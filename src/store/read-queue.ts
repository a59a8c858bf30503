import { DeadlineError, withDeadline } from './deadline.js'
import { StoreUnavailableError } from './event-store.js'

export interface ReadQueueOptions {
  /** Reads sent to the store at once; the others wait in the queue. */
  concurrency: number
  /** A read sent to the store that has no answer after this fails (the wait in the queue is not counted). */
  timeoutMs: number
}

/** The reader left before its read was sent (or answered). */
export class ReadAbortedError extends Error {
  override name = 'ReadAbortedError'
  constructor() {
    super('the reader left: its store read was cancelled')
  }
}

interface Job {
  run(timeoutMs: number): Promise<unknown>
  resolve(v: unknown): void
  reject(err: unknown): void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
  reader: object
}

/**
 * The store reads behind replays (resumes older than the hot history) as one bounded, shared
 * resource: at most `concurrency` reads in flight per process, the waiting ones served round robin
 * across readers (one reader's many pages never starve another's first one), a queued read dropped
 * when its reader's signal aborts, and every read sent bounded by a deadline.
 */
export class ReadQueue {
  /** Reads sent to the store and not yet answered (or given up). */
  running = 0
  /** Reads dropped from the queue because their reader left; reads that missed their deadline. */
  readonly stats = { cancelled: 0, timedOut: 0, completed: 0 }
  /** Waiting reads by reader, in turn order (a Map keeps insertion order: the next turn is the first key). */
  private readonly waiting = new Map<object, Job[]>()

  constructor(private readonly opts: ReadQueueOptions) {}

  /** Reads sent at once (settable: a store learns what it talks to when it opens). */
  get concurrency(): number {
    return this.opts.concurrency
  }

  set concurrency(n: number) {
    this.opts.concurrency = n
    this.pump()
  }

  /** Reads waiting for a turn. */
  get queued(): number {
    let n = 0
    for (const jobs of this.waiting.values()) n += jobs.length
    return n
  }

  /**
   * Run `read` when its turn comes. `reader` identifies whose read it is for the fair share (a
   * subscriber's AbortSignal serves: one per client); without one the read is a reader of its own.
   * Fails with ReadAbortedError when `signal` aborts first, with StoreUnavailableError (cause: a
   * DeadlineError) when the store does not answer within the deadline.
   */
  run<T>(read: (timeoutMs: number) => Promise<T>, signal?: AbortSignal, reader?: object): Promise<T> {
    if (signal?.aborted === true) return Promise.reject(new ReadAbortedError())
    return new Promise<T>((resolve, reject) => {
      const job: Job = { run: read, resolve: resolve as (v: unknown) => void, reject, signal, onAbort: undefined, reader: reader ?? signal ?? {} }
      if (signal !== undefined) {
        job.onAbort = () => this.abort(job)
        signal.addEventListener('abort', job.onAbort, { once: true })
      }
      const mine = this.waiting.get(job.reader)
      if (mine === undefined) this.waiting.set(job.reader, [job])
      else mine.push(job)
      this.pump()
    })
  }

  private abort(job: Job): void {
    const mine = this.waiting.get(job.reader)
    const at = mine?.indexOf(job) ?? -1
    if (mine !== undefined && at >= 0) {
      mine.splice(at, 1)
      if (mine.length === 0) this.waiting.delete(job.reader)
      this.stats.cancelled++
    }
    // A read already sent keeps its slot until the store answers (or its deadline passes): the
    // server is still working on it. Its reader stops waiting now.
    job.reject(new ReadAbortedError())
  }

  private pump(): void {
    while (this.running < this.opts.concurrency) {
      const next = this.waiting.entries().next()
      if (next.done === true) return
      const [reader, jobs] = next.value
      const job = jobs.shift() as Job
      // Round robin: this reader goes to the back of the line.
      this.waiting.delete(reader)
      if (jobs.length > 0) this.waiting.set(reader, jobs)
      this.start(job)
    }
  }

  private start(job: Job): void {
    this.running++
    const { timeoutMs } = this.opts
    const call = job.run(timeoutMs)
    withDeadline(call, timeoutMs, 'store read for a replay')
      .then(
        (v) => {
          this.stats.completed++
          job.resolve(v)
        },
        (err: unknown) => {
          if (err instanceof DeadlineError) this.stats.timedOut++
          job.reject(err instanceof DeadlineError || !(err instanceof StoreUnavailableError) ? new StoreUnavailableError([], true, err) : err)
        },
      )
      .finally(() => {
        if (job.onAbort !== undefined) job.signal?.removeEventListener('abort', job.onAbort)
      })
    // The slot is free once the store has answered or the deadline passed, whichever is first
    // (the driver's own timeout gives up the connection of a read past its deadline).
    let freed = false
    const free = (): void => {
      if (freed) return
      freed = true
      this.running--
      this.pump()
    }
    const timer = setTimeout(free, timeoutMs)
    timer.unref()
    call.then(free, free).finally(() => clearTimeout(timer))
  }
}
