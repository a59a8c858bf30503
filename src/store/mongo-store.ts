import { randomBytes } from 'node:crypto'
import { MongoBulkWriteError, MongoClient, MongoServerSelectionError, type Collection, type Db, type Filter, type IndexDescription, type MongoClientOptions, type Sort } from 'mongodb'
import { COMPETITION_ACTIVATED, type NewEvent, type StoredEvent } from '../event.js'
import { windowStart, type StreamFilter } from '../stream.js'
import { StoreRejectedError, StoreUnavailableError, type EventStore, type ReadOptions, type StoreBounds, type Tail, type TailHandlers } from './event-store.js'

export interface MongoStoreConfig {
  url: string
  database: string
  collection: string
  /** Capped collection size in bytes. */
  cappedSize: number
  /** Capped collection maximum number of documents. */
  cappedMax: number
  /**
   * Count every command sent (`commands`, /metrics). Off by default: the driver then builds an event
   * per command and decodes each reply whole, cursor batches included (the bench turns it on).
   */
  monitorCommands?: boolean
}

export interface MongoStoreOptions {
  /** Passed to MongoClient (tests turn on `monitorCommands` to count cursors). */
  clientOptions?: MongoClientOptions
  /** How long one awaitData getMore waits for new documents. */
  awaitMs?: number
  /** First and largest pause before the tail re-opens after an error. */
  backoffMs?: { min: number; max: number }
  /**
   * Re-open the tailing cursor after it has handed over this many documents. FerretDB re-runs a
   * tailable cursor's whole query on every awaitData poll (about every 10 ms), so a cursor anchored
   * far back costs more each poll; re-anchoring on the last seen id keeps that query short.
   */
  reanchorAfter?: number
}

/** A stored document: the event with its id as `_id` (so the unique _id index keeps ids unique). */
interface EventDoc {
  _id: number
  type: string
  competitionId?: string
  room?: string
  time: string
  data: Record<string, unknown>
  /** When the store accepted it: the tail's lag is measured from here. */
  at: Date
  /**
   * The id stored just before this one. On the oldest document it is the newest id the capped
   * collection dropped, which tells an exact resume from one that needs `reset`.
   */
  prev?: number
  /** The write that stored it: after an insert whose answer was lost, tells whether it landed. */
  w?: string
  /** Idempotency key it was posted with. */
  k?: string
}

/** The replay queries: by competition, by type+time (the 24 h window), by room; all ordered by id. */
const REPLAY_INDEXES: IndexDescription[] = [
  { key: { competitionId: 1, _id: 1 }, name: 'competitionId_id' },
  { key: { type: 1, time: 1, _id: 1 }, name: 'type_time_id' },
  { key: { room: 1, _id: 1 }, name: 'room_id' },
  { key: { k: 1 }, name: 'idempotency_key' },
]

const DUPLICATE_KEY = 11000
/** Id conflicts one append tolerates (each means another writer stored events meanwhile). */
const INSERT_RETRIES = 1000
const RECENT_WRITE_MS = 1000
/**
 * One awaitData getMore waits up to AWAIT_MS for new documents and returns up to TAIL_BATCH.
 * FerretDB re-runs the cursor's query on each poll and gives up the whole poll when maxTimeMS runs
 * out mid-query, so a short wait starves the tail once the collection is large; a large batch
 * makes one such query hand over everything new.
 */
const AWAIT_MS = 5000
const TAIL_BATCH = 10_000

function toEvent(d: EventDoc): StoredEvent {
  const e: StoredEvent = { id: Number(d._id), type: d.type, time: d.time, data: d.data }
  if (d.competitionId !== undefined && d.competitionId !== null) e.competitionId = d.competitionId
  if (d.room !== undefined && d.room !== null) e.room = d.room
  return e
}

function toDoc(e: NewEvent, id: number, at: Date, prev: number, w: string): EventDoc {
  const d: EventDoc = { _id: id, type: e.type, time: e.time, data: e.data, at, prev, w }
  if (e.competitionId !== undefined) d.competitionId = e.competitionId
  if (e.room !== undefined) d.room = e.room
  if (e.idempotencyKey !== undefined) d.k = e.idempotencyKey
  return d
}

/** Reads that must not be sent back to clients or compared: bookkeeping fields. */
const EVENT_PROJECTION = { at: 0, prev: 0, w: 0, k: 0 }

export class CollectionNotCappedError extends Error {
  override name = 'CollectionNotCappedError'
}

/** Counters of the tailing cursor, for logs and /metrics. */
export interface MongoTailStats {
  /** Milliseconds between the store accepting the last handed-over event and the tail handing it over. */
  lagMs: number
  /** Times the cursor was (re-)opened. */
  opens: number
  /** Errors after which the cursor was re-opened. */
  errors: number
  /** Empty waits while newer ids were stored, after which the cursor was re-opened. */
  stalls: number
}

/** An append waiting for the insert in flight to end (see MongoEventStore.append). */
interface QueuedAppend {
  events: NewEvent[]
  ids: number[] | undefined
  resolve(stored: StoredEvent[]): void
  reject(err: unknown): void
}

/**
 * The product's store: one capped MongoDB collection, ids as `_id`, and one tailable awaitData
 * cursor per process that re-opens from the last seen id after any error.
 *
 * Ids without given ids: optimistic and ordered. Read the newest `_id`, insert the batch as
 * newest+1.. with an ordered insert; a duplicate key means another writer got there first: re-read
 * and retry the rest. An id k+1 is only ever inserted once id k exists, so natural (insertion) order
 * is id order even with several processes appending to one collection.
 */
export class MongoEventStore implements EventStore {
  readonly kind = 'mongodb'
  readonly client: MongoClient
  readonly tailStats: MongoTailStats = { lagMs: 0, opens: 0, errors: 0, stalls: 0 }
  /** Commands sent to the server, by name (find, getMore, insert, ...), when `monitorCommands` is on. */
  readonly commands = new Map<string, number>()
  private db!: Db
  private coll!: Collection<EventDoc>
  private closed = false
  private readonly tails = new Set<MongoTail>()
  /** The newest id this process wrote, and when: a recent one spares a read before the next append. */
  private lastWritten: { id: number; at: number } | null = null
  private readonly appendQueue: QueuedAppend[] = []
  private appending = false
  /**
   * Replays read in id order. MongoDB walks the {field, _id} indexes for that; FerretDB sorts only
   * by natural order in its database and would read and sort the whole collection for each page,
   * so there the natural order (which equals id order, see append) is used.
   */
  private replaySort: Sort = { _id: 1 }

  constructor(readonly config: MongoStoreConfig, private readonly opts: MongoStoreOptions = {}) {
    const monitorCommands = config.monitorCommands === true
    this.client = new MongoClient(config.url, { serverSelectionTimeoutMS: 5000, ...(monitorCommands ? { monitorCommands } : {}), ...opts.clientOptions })
    if (monitorCommands) this.client.on('commandStarted', (e) => this.commands.set(e.commandName, (this.commands.get(e.commandName) ?? 0) + 1))
  }

  get collectionName(): string {
    return `${this.config.database}.${this.config.collection}`
  }

  async open(): Promise<void> {
    const { database, collection, cappedSize, cappedMax } = this.config
    await this.client.connect()
    this.db = this.client.db(database)
    const build = (await this.db.admin().command({ buildInfo: 1 })) as { ferretdb?: unknown }
    this.replaySort = build.ferretdb === undefined ? { _id: 1 } : { $natural: 1 }
    const [info] = await this.db.listCollections({ name: collection }).toArray()
    if (info === undefined) {
      try {
        await this.db.createCollection(collection, { capped: true, size: cappedSize, max: cappedMax })
      } catch (err) {
        // Another process created it meanwhile: check it below like an existing one.
        if ((err as { codeName?: string }).codeName !== 'NamespaceExists' && (err as { code?: number }).code !== 48) throw err
      }
    }
    const stats = (await this.db.command({ collStats: collection })) as { capped?: boolean }
    if (stats.capped !== true) {
      throw new CollectionNotCappedError(
        `MongoDB collection "${this.collectionName}" exists but is not capped; tailcast needs a capped collection to tail. ` +
          `Drop or rename it (db.${collection}.drop()), convert it (db.runCommand({convertToCapped: "${collection}", size: ${cappedSize}})), ` +
          `or set store.mongodb.collection (TAILCAST_MONGODB_COLLECTION) to another name.`,
      )
    }
    this.coll = this.db.collection<EventDoc>(collection)
    // Only the missing ones: FerretDB 1.24 drops the connection on createIndexes of existing indexes.
    const have = new Set((await this.coll.listIndexes().toArray()).map((i) => i.name as string))
    const missing = REPLAY_INDEXES.filter((i) => !have.has(i.name as string))
    if (missing.length > 0) await this.coll.createIndexes(missing)
  }

  /**
   * Appends are written one insert at a time per process: those that arrive while an insert is in
   * flight wait and then go together in the next one (group commit). Concurrent appends would
   * otherwise all guess the same next id and retry against each other, one round trip each.
   */
  append(events: NewEvent[], ids?: number[]): Promise<StoredEvent[]> {
    if (ids !== undefined && ids.length !== events.length) return Promise.reject(new Error('append: one id per event'))
    if (events.length === 0) return Promise.resolve([])
    return new Promise((resolve, reject) => {
      this.appendQueue.push({ events, ids, resolve, reject })
      if (!this.appending) void this.writeQueued()
    })
  }

  private async writeQueued(): Promise<void> {
    this.appending = true
    while (this.appendQueue.length > 0) {
      // Appends with ids of their own keep them and go alone; the others share one insert.
      const first = this.appendQueue[0]
      if (first.ids !== undefined) {
        this.appendQueue.shift()
        await this.insert(first.events, first.ids).then(first.resolve, first.reject)
        continue
      }
      const withIds = this.appendQueue.findIndex((j) => j.ids !== undefined)
      await this.writeGroup(this.appendQueue.splice(0, withIds === -1 ? this.appendQueue.length : withIds))
    }
    this.appending = false
  }

  /**
   * One insert for the events of several appends. Each caller learns the truth about its own
   * events: stored, refused (its event, nobody else's), or not stored because the store is away.
   * Callers behind a refused event were not written and go again with the next insert.
   */
  private async writeGroup(group: QueuedAppend[]): Promise<void> {
    // Per event of the group: the stored event that answers it, once known.
    const results = group.map((j) => Array.from<StoredEvent | undefined>({ length: j.events.length }))
    const toInsert: { job: number; i: number; e: NewEvent }[] = []
    const aliases: { job: number; i: number; of: number }[] = []
    try {
      const keys = [...new Set(group.flatMap((j) => j.events.flatMap((e) => (e.idempotencyKey === undefined ? [] : [e.idempotencyKey]))))]
      const known = keys.length === 0 ? new Map<string, StoredEvent>() : await this.findKeys(keys)
      const firstOfKey = new Map<string, number>()
      group.forEach((job, j) =>
        job.events.forEach((e, i) => {
          const key = e.idempotencyKey
          const hit = key === undefined ? undefined : known.get(key)
          if (hit !== undefined) results[j][i] = hit
          else if (key !== undefined && firstOfKey.has(key)) aliases.push({ job: j, i, of: firstOfKey.get(key) as number })
          else {
            if (key !== undefined) firstOfKey.set(key, toInsert.length)
            toInsert.push({ job: j, i, e })
          }
        }),
      )
    } catch (err) {
      for (const job of group) job.reject(new StoreUnavailableError([], true, err))
      return
    }
    let stored: StoredEvent[]
    let failure: unknown = null
    try {
      stored = await this.insert(toInsert.map((x) => x.e), undefined)
    } catch (err) {
      failure = err
      stored = err instanceof StoreRejectedError || err instanceof StoreUnavailableError ? err.stored : []
    }
    stored.forEach((s, n) => (results[toInsert[n].job][toInsert[n].i] = s))
    for (const a of aliases) if (a.of < stored.length) results[a.job][a.i] = stored[a.of]
    const refusedJob = failure instanceof StoreRejectedError ? toInsert[failure.index].job : -1
    const retry: QueuedAppend[] = []
    group.forEach((job, j) => {
      const mine = results[j]
      if (mine.every((r) => r !== undefined)) return job.resolve(mine as StoredEvent[])
      const storedOfJob = mine.filter((r) => r !== undefined)
      if (j === refusedJob) {
        const { index, message } = failure as StoreRejectedError
        return job.reject(new StoreRejectedError(toInsert[index].i, storedOfJob, message.replace(/^the store refused the event: /, '')))
      }
      if (failure instanceof StoreRejectedError && storedOfJob.length === 0) return retry.push(job)
      if (failure instanceof StoreUnavailableError) return job.reject(new StoreUnavailableError(storedOfJob, failure.certain, failure.cause))
      job.reject(failure)
    })
    this.appendQueue.unshift(...retry)
  }

  /**
   * Insert in order; returns the events stored. Throws StoreRejectedError (a document refused:
   * the ones before it are stored, none after) or StoreUnavailableError (what is known stored).
   */
  private async insert(events: NewEvent[], ids: number[] | undefined): Promise<StoredEvent[]> {
    const at = new Date()
    const token = randomBytes(9).toString('base64url')
    const stored: StoredEvent[] = []
    let rest = events.map((e, i) => ({ e, i, id: ids?.[i] }))
    for (let attempt = 0; rest.length > 0; attempt++) {
      if (attempt >= INSERT_RETRIES) throw new StoreUnavailableError(stored, true, new Error(`gave up after ${INSERT_RETRIES} id conflicts on ${this.collectionName}`))
      // First try after our own recent write: assume nobody wrote since (reading the newest id is a
      // scan on FerretDB: 0.08-0.8 s at 10,000 documents, by load). Wrong guesses end in a duplicate key and a
      // re-read. Only recent: an old guess could name an id the capped collection has already
      // dropped, and that insert would succeed out of order. Given ids come from one writer at a
      // time (the NATS lease holder, a relay), which re-reads the newest id whenever it starts.
      const guess = attempt === 0 && this.lastWritten !== null && Date.now() - this.lastWritten.at < RECENT_WRITE_MS ? this.lastWritten.id : null
      let newest: number
      try {
        newest = guess ?? (await this.newestId()) ?? 0
      } catch (err) {
        throw new StoreUnavailableError(stored, true, err)
      }
      // Given ids are kept; one not above the newest is a redelivery and is skipped.
      if (ids !== undefined) rest = rest.filter((r) => (r.id as number) > newest)
      if (rest.length === 0) break
      let prev = newest
      const docs = rest.map((r, n) => {
        const d = toDoc(r.e, r.id ?? newest + 1 + n, at, prev, token)
        prev = d._id
        return d
      })
      let inserted = docs.length
      try {
        await this.coll.insertMany(docs, { ordered: true })
      } catch (err) {
        const failed = err instanceof MongoBulkWriteError ? firstWriteError(err) : null
        if (failed === null) {
          if (neverSent(err)) throw new StoreUnavailableError(stored, true, err)
          // No answer about the documents (connection lost, timeout...): ask which of them landed.
          const landed = await this.landed(docs, token)
          for (const d of docs.slice(0, landed ?? 0)) stored.push(toEvent(d))
          throw new StoreUnavailableError(stored, landed !== null, err)
        }
        inserted = failed.index
        const storedSoFar = (): StoredEvent[] => [...stored, ...docs.slice(0, inserted).map(toEvent)]
        const idConflict =
          failed.code === DUPLICATE_KEY &&
          (await this.isIdConflict(failed.message, docs[inserted]._id).catch((lookup: unknown) => {
            throw new StoreUnavailableError(storedSoFar(), true, lookup)
          }))
        if (!idConflict) throw new StoreRejectedError(rest[inserted].i, storedSoFar(), failed.message)
      }
      for (const d of docs.slice(0, inserted)) stored.push(toEvent(d))
      this.lastWritten = inserted > 0 ? { id: docs[inserted - 1]._id, at: Date.now() } : null
      rest = rest.slice(inserted)
    }
    return stored
  }

  /**
   * A duplicate key on `_id` is another writer having taken the id (read again, retry); one on
   * another unique index (an operator's) is a refusal of the document. MongoDB names the index in
   * the message; FerretDB does not, so there the id is looked up.
   */
  private async isIdConflict(message: string, id: number): Promise<boolean> {
    const index = /index: (\S+)/.exec(message)?.[1]
    if (index !== undefined) return index === '_id_'
    return (await this.coll.countDocuments({ _id: id }, { limit: 1 })) > 0
  }

  /** How many of `docs` (a prefix: the insert was ordered) this write stored, or null when the store does not answer. */
  private async landed(docs: EventDoc[], token: string): Promise<number | null> {
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        const found = await this.coll.find({ _id: { $in: docs.map((d) => d._id) } }, { projection: { _id: 1, w: 1 } }).toArray()
        const ours = new Set(found.filter((d) => d.w === token).map((d) => Number(d._id)))
        let n = 0
        while (n < docs.length && ours.has(docs[n]._id)) n++
        return n
      } catch {
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt))
      }
    }
    return null
  }

  private async findKeys(keys: string[]): Promise<Map<string, StoredEvent>> {
    const docs = await this.coll.find({ k: { $in: keys } }).toArray()
    return new Map(docs.map((d) => [d.k as string, toEvent(d)]))
  }

  async findByKey(key: string): Promise<StoredEvent | null> {
    const d = await this.coll.findOne({ k: key })
    return d === null ? null : toEvent(d)
  }

  async newestEvents(limit: number): Promise<StoredEvent[]> {
    if (limit <= 0) return []
    const docs = await this.coll.find({}, { projection: EVENT_PROJECTION }).sort({ $natural: -1 }).limit(limit).toArray()
    return docs.reverse().map(toEvent)
  }

  async evictedThrough(): Promise<number> {
    const [d] = await this.coll.find({}, { projection: { _id: 1, prev: 1 } }).sort({ $natural: 1 }).limit(1).toArray()
    if (d === undefined) return 0
    return typeof d.prev === 'number' ? d.prev : Number(d._id) - 1
  }

  async read(filter: StreamFilter, afterId: number, limit: number, opts: ReadOptions = {}): Promise<StoredEvent[]> {
    const { upTo } = opts
    const q: Filter<EventDoc> = { _id: upTo === undefined ? { $gt: afterId } : { $gt: afterId, $lte: upTo } }
    switch (filter.kind) {
      case 'competitions':
        q.type = COMPETITION_ACTIVATED
        q.time = { $gte: windowStart(filter.windowMs) }
        break
      case 'competition':
        q.competitionId = filter.competitionId
        break
      case 'room':
        q.room = filter.room === null ? { $exists: true } : filter.room
        break
    }
    const docs = await this.coll.find(q, { projection: EVENT_PROJECTION }).sort(this.replaySort).limit(limit).toArray()
    return docs.map(toEvent)
  }

  async bounds(): Promise<StoreBounds> {
    const [oldest, newest] = await Promise.all([this.edgeId(1), this.newestId()])
    if (oldest === null || newest === null) return { oldest: null, newest: null }
    return { oldest, newest }
  }

  tail(afterId: number, handlers: TailHandlers): Tail {
    const t = new MongoTail(this, this.db, this.coll, afterId, handlers, this.opts)
    this.tails.add(t)
    void t.run().finally(() => this.tails.delete(t))
    return { close: () => t.close() }
  }

  async ping(): Promise<void> {
    await this.client.db(this.config.database).command({ ping: 1 })
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all([...this.tails].map((t) => t.close()))
    // Forced: a tail's awaitData getMore may still wait out its maxTimeMS on the server.
    await this.client.close(true)
  }

  /** For the tail's check that it has not silently lost its place. */
  newest(): Promise<number | null> {
    return this.newestId()
  }

  private newestId(): Promise<number | null> {
    return this.edgeId(-1)
  }

  /**
   * The oldest or newest id. Insertion order is id order (see append), so the collection's natural
   * order answers it: a capped collection's cheapest read on MongoDB, and the one sort FerretDB
   * hands down to SQLite (a sort on _id makes it read and sort the whole collection).
   */
  private async edgeId(dir: 1 | -1): Promise<number | null> {
    const [d] = await this.coll.find({}, { projection: { _id: 1 } }).sort({ $natural: dir }).limit(1).toArray()
    return d === undefined ? null : Number(d._id)
  }
}

/**
 * The insert never reached a server: none could be selected, or the connection for it could not be
 * opened (the driver reports `connect ECONNREFUSED …` inside a bulk write error). Nothing landed.
 */
function neverSent(err: unknown): boolean {
  return err instanceof MongoServerSelectionError || /^connect (ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND)\b/.test((err as Error).message)
}

/** With an ordered insert, everything before the first failed document was inserted, nothing after. */
function firstWriteError(err: MongoBulkWriteError): { index: number; code: number; message: string } | null {
  const errors = (Array.isArray(err.writeErrors) ? err.writeErrors : [err.writeErrors]).filter((w) => w !== undefined)
  if (errors.length === 0) return null
  const first = errors.reduce((a, b) => (b.index < a.index ? b : a))
  return { index: first.index, code: first.code, message: first.errmsg ?? 'write error' }
}

/**
 * The one tailing cursor. Each (re-)open anchors on the last seen id: `find {_id >= last}` with a
 * first batch of one document, so the cursor starts positioned on a document (FerretDB, like
 * MongoDB, cannot keep a tailable cursor open on nothing). The anchor itself is not handed over
 * again; ids not above the last one handed over are dropped, so nothing is handed over twice.
 */
class MongoTail {
  private closed = false
  private last: number
  private cursorId: unknown = null
  private wake: (() => void) | undefined

  constructor(
    private readonly store: MongoEventStore,
    private readonly db: Db,
    private readonly coll: Collection<EventDoc>,
    afterId: number,
    private readonly handlers: TailHandlers,
    private readonly opts: MongoStoreOptions,
  ) {
    this.last = afterId
  }

  async run(): Promise<void> {
    const min = this.opts.backoffMs?.min ?? 50
    const max = this.opts.backoffMs?.max ?? 2000
    let backoff = min
    while (!this.closed) {
      try {
        const open = await this.follow()
        backoff = min
        // The collection is empty or the cursor closed on its own: poll again shortly.
        if (!open) await this.pause(this.opts.awaitMs !== undefined ? Math.min(this.opts.awaitMs, 100) : 100)
      } catch (err) {
        if (this.closed) break
        this.store.tailStats.errors++
        this.handlers.onError?.(err as Error)
        await this.pause(backoff)
        backoff = Math.min(max, backoff * 2)
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true
    this.wake?.()
    const id = this.cursorId
    this.cursorId = null
    if (id !== null) {
      await this.db.command({ killCursors: this.coll.collectionName, cursors: [id] }, { promoteLongs: false }).catch(() => {})
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined
        resolve()
      }, ms)
      this.wake = () => {
        clearTimeout(timer)
        this.wake = undefined
        resolve()
      }
    })
  }

  /** One cursor's life: open it, then getMore until it ends. Returns false when it never opened. */
  private async follow(): Promise<boolean> {
    const db = this.db
    const name = this.coll.collectionName
    const filter = this.last > 0 ? { _id: { $gte: this.last } } : {}
    const first = (await db.command(
      { find: name, filter, projection: {}, tailable: true, awaitData: true, batchSize: 1 },
      { promoteLongs: false },
    )) as { cursor: { id: unknown; firstBatch: EventDoc[] } }
    this.store.tailStats.opens++
    this.hand(first.cursor.firstBatch)
    if (isZero(first.cursor.id)) return false
    this.cursorId = first.cursor.id
    const reanchorAfter = this.opts.reanchorAfter ?? 10_000
    let seen = 0
    try {
      while (!this.closed) {
        const more = (await db.command(
          { getMore: this.cursorId, collection: name, batchSize: TAIL_BATCH, maxTimeMS: this.opts.awaitMs ?? AWAIT_MS },
          { promoteLongs: false },
        )) as { cursor: { id: unknown; nextBatch: EventDoc[] } }
        seen += this.hand(more.cursor.nextBatch)
        if (isZero(more.cursor.id)) {
          this.cursorId = null
          return true
        }
        if (seen >= reanchorAfter) break
        // An empty wait while the collection holds newer ids means the cursor lost its place
        // without saying so (seen on FerretDB with several writers over time): re-anchor.
        if (more.cursor.nextBatch.length === 0 && ((await this.store.newest()) ?? 0) > this.last) {
          this.store.tailStats.stalls++
          break
        }
      }
    } finally {
      if (this.cursorId !== null && !this.closed) {
        const id = this.cursorId
        this.cursorId = null
        await db.command({ killCursors: name, cursors: [id] }, { promoteLongs: false }).catch(() => {})
      }
    }
    return true
  }

  private hand(docs: EventDoc[]): number {
    if (this.closed || docs.length === 0) return 0
    const events: StoredEvent[] = []
    for (const d of docs) {
      const e = toEvent(d)
      if (e.id <= this.last) continue
      this.last = e.id
      events.push(e)
    }
    if (events.length === 0) return 0
    const lastDoc = docs[docs.length - 1]
    const acceptedAt = lastDoc.at instanceof Date ? lastDoc.at.getTime() : undefined
    if (acceptedAt !== undefined) this.store.tailStats.lagMs = Math.max(0, Date.now() - acceptedAt)
    this.handlers.onEvents(events, acceptedAt)
    return events.length
  }
}

function isZero(id: unknown): boolean {
  if (id === null || id === undefined) return true
  if (typeof id === 'number' || typeof id === 'bigint') return id == 0
  const l = id as { isZero?: () => boolean }
  return typeof l.isZero === 'function' ? l.isZero() : false
}
