import { isConflict, keyConflict } from '../idempotency.js'
import { ensureKeyIndex, namesKeyIndex } from './mongo-keys.js'
import { randomBytes } from 'node:crypto'
import { MongoBulkWriteError, MongoClient, MongoServerSelectionError, type Collection, type Db, type Filter, type FindCursor, type IndexDescription, type MongoClientOptions, type Sort } from 'mongodb'
import { COMPETITION_ACTIVATED, type NewEvent, type StoredEvent } from '../event.js'
import { windowStart, type StreamFilter } from '../stream.js'
import { DEFAULT_TIMEOUT_MS, DeadlineError, withDeadline } from './deadline.js'
import { StoreRejectedError, StoreUnavailableError, type EventStore, type ReadOptions, type StoreBounds, type Tail, type TailHandlers } from './event-store.js'
import { EVENT_PROJECTION, eventBytes, toDoc, toEvent, type EventDoc } from './mongo-doc.js'
import { MongoHead, type HeadDoc } from './mongo-head.js'
import { AwaitDataTail, HeadPollTail, type MongoTailStats } from './mongo-tail.js'
import { ReadQueue } from './read-queue.js'

export type { MongoTailStats } from './mongo-tail.js'

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
  /** Deadline of every store call, in ms (`store.timeoutMs`; default 5000). */
  timeoutMs?: number
  /**
   * Replay reads (resumes older than the hot history) sent to the store at once per process.
   * 0 or unset: by server, 1 on FerretDB (each read is a scan that takes the CPU live delivery and
   * POSTs need), 8 on MongoDB.
   */
  replayConcurrency?: number
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
  /**
   * How the tail follows new documents: a tailable awaitData cursor (MongoDB), or polls of the
   * newest documents (FerretDB, whose tailable cursor re-scans the collection on every poll).
   * Default: chosen by the server.
   */
  tail?: 'awaitData' | 'poll'
  /** The polling tail's pause between polls that found nothing new. */
  pollMs?: number
}

/** The replay queries: by competition, by type+time (the 24 h window), by room; all ordered by id. */
const REPLAY_INDEXES: IndexDescription[] = [
  { key: { competitionId: 1, _id: 1 }, name: 'competitionId_id' },
  { key: { type: 1, time: 1, _id: 1 }, name: 'type_time_id' },
  { key: { room: 1, _id: 1 }, name: 'room_id' },
]

const DUPLICATE_KEY = 11000
/** Write errors about the server's state, not the document: InternalError, interrupted, shutting down, stepped down, time limits. */
const TRANSIENT_WRITE_CODES = new Set([1, 6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436])
/** Id conflicts one append tolerates (each means another writer stored events meanwhile). */
const INSERT_RETRIES = 1000
const RECENT_WRITE_MS = 1000
export class CollectionNotCappedError extends Error {
  override name = 'CollectionNotCappedError'
}

/** An append waiting for the insert in flight to end (see MongoEventStore.append). */
interface QueuedAppend {
  events: NewEvent[]
  ids: number[] | undefined
  resolve(stored: StoredEvent[]): void
  reject(err: unknown): void
}

/** Replay reads at once when not configured (see MongoStoreConfig.replayConcurrency). */
const AUTO_CONCURRENCY = { mongodb: 8, ferretdb: 1 }

/** Documents per server batch of a replay read that goes on while its page is not full. */
const REPLAY_BATCH = 100

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
  private readonly tails = new Set<AwaitDataTail | HeadPollTail>()
  /** The replays' own client (own connection pool): tailing, appends and /ready never wait behind them. */
  readonly replayClient: MongoClient
  private replayColl!: Collection<EventDoc>
  /** FerretDB: what appends announce, for the tail and the position queries (see MongoHead). */
  announced: MongoHead | undefined
  /** Replay reads: bounded, shared fairly between clients, cancelled when a client leaves. */
  readonly readQueue: ReadQueue
  /** Deadline of every store call (ms). */
  readonly timeoutMs: number
  /** Is the server FerretDB (see README "What differs on FerretDB")? */
  isFerretDb = false
  /** The newest id this process wrote, and when: a recent one spares a read before the next append. */
  private lastWritten: { id: number; at: number } | null = null
  private readonly appendQueue: QueuedAppend[] = []
  private appending = false
  /**
   * Replays read in id order. MongoDB walks the {field, _id} indexes for that. FerretDB v1.24 reads
   * the whole collection and sorts it in memory for any sort, `$natural` included; a capped
   * collection read without a sort it hands to SQLite in natural order (its record id) and streams,
   * stopping where the page stops. So there no sort (natural order equals id order, see append):
   * a page then costs the documents up to it, not a read and sort of the whole collection.
   */
  private replaySort: Sort | undefined = { _id: 1 }

  constructor(readonly config: MongoStoreConfig, private readonly opts: MongoStoreOptions = {}) {
    const monitorCommands = config.monitorCommands === true
    this.timeoutMs = config.timeoutMs ?? DEFAULT_TIMEOUT_MS
    const concurrency = config.replayConcurrency !== undefined && config.replayConcurrency > 0 ? config.replayConcurrency : AUTO_CONCURRENCY.mongodb
    const common = { serverSelectionTimeoutMS: this.timeoutMs, ...(monitorCommands ? { monitorCommands } : {}), ...opts.clientOptions }
    this.client = new MongoClient(config.url, common)
    this.replayClient = new MongoClient(config.url, { ...common, maxPoolSize: concurrency })
    this.readQueue = new ReadQueue({ concurrency, timeoutMs: this.timeoutMs })
    if (monitorCommands) {
      for (const c of [this.client, this.replayClient]) c.on('commandStarted', (e) => this.commands.set(e.commandName, (this.commands.get(e.commandName) ?? 0) + 1))
    }
  }

  /** Driver options that bound a call by the store deadline (the driver gives up its connection then). */
  private get deadline(): { timeoutMS: number } {
    return { timeoutMS: this.timeoutMs }
  }

  get collectionName(): string {
    return `${this.config.database}.${this.config.collection}`
  }

  async open(): Promise<void> {
    const { database, collection, cappedSize, cappedMax } = this.config
    await Promise.all([this.client.connect(), this.replayClient.connect()])
    this.db = this.client.db(database)
    const build = (await this.db.admin().command({ buildInfo: 1 })) as { ferretdbVersion?: unknown }
    this.isFerretDb = build.ferretdbVersion !== undefined
    this.replaySort = this.isFerretDb ? undefined : { _id: 1 }
    if (this.isFerretDb && !(this.config.replayConcurrency !== undefined && this.config.replayConcurrency > 0)) this.readQueue.concurrency = AUTO_CONCURRENCY.ferretdb
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
    this.replayColl = this.replayClient.db(database).collection<EventDoc>(collection)
    // Only the missing ones: FerretDB 1.24 drops the connection on createIndexes of existing indexes.
    const have = new Set((await this.coll.listIndexes().toArray()).map((i) => i.name as string))
    const missing = REPLAY_INDEXES.filter((i) => !have.has(i.name as string))
    if (missing.length > 0) await this.coll.createIndexes(missing)
    await ensureKeyIndex(this.coll, have)
    if (this.isFerretDb || this.opts.tail === 'poll') {
      // The head is raised to what older versions (or a writer that died before announcing) left
      // by bounds(), which the hub reads before it starts, and after any id conflict: not here too,
      // a second scan of the collection at every start.
      this.announced = new MongoHead(this.db.collection<HeadDoc>(`${collection}_head`), this.db.collection<EventDoc>(`${collection}_recent`), this.timeoutMs)
    }
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
      // The caller's answer has a deadline, whatever the write in flight does (a frozen server
      // keeps its socket open and answers nothing). Still queued then: it was never sent, so it is
      // certainly not stored. Sent: it may have landed (a retry with the same key stores it once).
      let done = false
      const timer = setTimeout(() => {
        const at = this.appendQueue.indexOf(job)
        if (at >= 0) this.appendQueue.splice(at, 1)
        job.reject(new StoreUnavailableError([], at >= 0, new DeadlineError(`append to ${this.collectionName}`, this.timeoutMs)))
      }, this.timeoutMs)
      timer.unref()
      const job: QueuedAppend = {
        events,
        ids,
        resolve: (stored) => {
          clearTimeout(timer)
          if (!done) resolve(stored)
          done = true
        },
        reject: (err) => {
          clearTimeout(timer)
          if (!done) reject(err)
          done = true
        },
      }
      this.appendQueue.push(job)
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
    // Every document this call stores is announced (FerretDB) before the caller is answered, even
    // when the call fails after storing some: an answered id must be within the position queries.
    const fresh: EventDoc[] = []
    try {
      return await this.insertDocs(events, ids, fresh)
    } finally {
      if (this.announced !== undefined && fresh.length > 0) await this.announced.announce(fresh)
    }
  }

  private async insertDocs(events: NewEvent[], ids: number[] | undefined, fresh: EventDoc[]): Promise<StoredEvent[]> {
    const at = new Date()
    const token = randomBytes(9).toString('base64url')
    const stored: StoredEvent[] = []
    let rest = events.map((e, i) => ({ e, i, id: ids?.[i] }))
    /** An id was taken: the newest id is read from the collection itself, not the head (see newestInCollection). */
    let conflicted = false
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
        // Given ids are checked against the collection, not the head: skipping one that is not
        // stored would lose it (see newestInCollection). Their writer appends without pauses when busy,
        // so this read is rare where it costs (FerretDB).
        newest = guess ?? (conflicted || ids !== undefined ? await this.newestInCollection() : await this.newestId()) ?? 0
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
        await this.coll.insertMany(docs, { ordered: true, ...this.deadline })
      } catch (err) {
        const failed = err instanceof MongoBulkWriteError ? firstWriteError(err) : null
        if (failed === null) {
          if (neverSent(err)) throw new StoreUnavailableError(stored, true, err)
          // No answer about the documents (connection lost, timeout...): ask which of them landed.
          const landed = await this.landed(docs, token)
          for (const d of docs.slice(0, landed ?? 0)) stored.push(toEvent(d))
          fresh.push(...docs.slice(0, landed ?? 0))
          throw new StoreUnavailableError(stored, landed !== null, err)
        }
        inserted = failed.index
        fresh.push(...docs.slice(0, inserted))
        const storedSoFar = (): StoredEvent[] => [...stored, ...docs.slice(0, inserted).map(toEvent)]
        const unavailable = (lookup: unknown): never => {
          throw new StoreUnavailableError(storedSoFar(), true, lookup)
        }
        const idConflict = failed.code === DUPLICATE_KEY && (await this.isIdConflict(failed.message, docs[inserted]._id).catch(unavailable))
        if (idConflict) conflicted = true
        if (!idConflict) {
          // Another write holds the event's idempotency key (on any instance: one unique index).
          const held = failed.code === DUPLICATE_KEY ? await this.heldKey(failed.message, docs[inserted]).catch(unavailable) : null
          if (held === null) {
            // A server that could not write now (FerretDB's SQLite busy under two writers answers
            // InternalError) has not refused the event: not stored, and a retry may succeed.
            if (TRANSIENT_WRITE_CODES.has(failed.code)) throw new StoreUnavailableError(storedSoFar(), true, new Error(failed.message))
            throw new StoreRejectedError(rest[inserted].i, storedSoFar(), failed.message)
          }
          // Given ids (the NATS writer): another body is refused (dead-lettered); a retry is skipped.
          if (ids !== undefined && isConflict(rest[inserted].e, held)) throw new StoreRejectedError(rest[inserted].i, storedSoFar(), keyConflict(held))
          for (const d of docs.slice(0, inserted)) stored.push(toEvent(d))
          // Without ids the result has one event per event given: the held one answers this one.
          if (ids === undefined) stored.push(held)
          this.lastWritten = inserted > 0 ? { id: docs[inserted - 1]._id, at: Date.now() } : null
          rest = rest.slice(inserted + 1)
          continue
        }
      }
      for (const d of docs.slice(0, inserted)) stored.push(toEvent(d))
      fresh.push(...docs.slice(0, inserted))
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
    return (await this.coll.countDocuments({ _id: id }, { limit: 1, ...this.deadline })) > 0
  }

  /** The stored event holding `doc`'s idempotency key, when a duplicate key is about that index; else null. */
  private async heldKey(message: string, doc: EventDoc): Promise<StoredEvent | null> {
    if (doc.ik === undefined || namesKeyIndex(message) === false) return null
    const held = await this.coll.findOne({ ik: doc.ik })
    return held === null ? null : toEvent(held)
  }

  /** How many of `docs` (a prefix: the insert was ordered) this write stored, or null when the store does not answer. */
  private async landed(docs: EventDoc[], token: string): Promise<number | null> {
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        const found = await this.coll.find({ _id: { $in: docs.map((d) => d._id) } }, { projection: { _id: 1, w: 1 }, ...this.deadline }).toArray()
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
    const docs = await this.coll.find({ ik: { $in: keys } }, this.deadline).toArray()
    return new Map(docs.map((d) => [d.ik as string, toEvent(d)]))
  }

  async findByKey(key: string): Promise<StoredEvent | null> {
    const d = await withDeadline(this.coll.findOne({ ik: key }, this.deadline), this.timeoutMs, 'findByKey')
    return d === null ? null : toEvent(d)
  }

  /**
   * Reverse natural order (id order read backwards, see append): on FerretDB the one order it hands
   * to SQLite, read lazily, so the warm-up reads what it keeps and stops at `maxBytes` instead of
   * decoding a full collection. On the replay client: it is a long read.
   */
  async newestEvents(limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<StoredEvent[]> {
    if (limit <= 0) return []
    const ms = 6 * this.timeoutMs
    if (this.isFerretDb) return this.newestByWindow(limit, maxBytes, ms)
    const cursor = this.replayColl.find({}, { projection: EVENT_PROJECTION, sort: { $natural: -1 }, limit, batchSize: Math.min(limit, 1000), timeoutMS: ms })
    const events = await this.readPage(cursor, maxBytes, 'warm-up read of the newest events', ms)
    return events.reverse()
  }

  /**
   * FerretDB reads a whole collection and sorts it in memory for any sort, `$natural: -1`
   * included; without one it streams in natural order. So there the warm-up streams forwards and
   * keeps a window of the newest `limit` events and `maxBytes`: one pass, memory bounded by the window.
   */
  private async newestByWindow(limit: number, maxBytes: number, ms: number): Promise<StoredEvent[]> {
    const cursor = this.replayColl.find({}, { projection: EVENT_PROJECTION, batchSize: 1000, timeoutMS: ms })
    const window: { e: StoredEvent; bytes: number }[] = []
    let head = 0
    let bytes = 0
    const read = async (): Promise<void> => {
      for await (const d of cursor) {
        const e = toEvent(d)
        const size = maxBytes === Number.POSITIVE_INFINITY ? 0 : eventBytes(e)
        window.push({ e, bytes: size })
        bytes += size
        while (window.length - head > limit || (bytes > maxBytes && window.length - head > 1)) bytes -= window[head++].bytes
        // Drop what fell out now and then, not on every event.
        if (head > 4096) {
          window.splice(0, head)
          head = 0
        }
      }
    }
    try {
      await withDeadline(read(), ms, 'warm-up read of the newest events')
    } catch (err) {
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError([], true, err)
    } finally {
      void cursor.close().catch(() => {})
    }
    return window.slice(head).map((w) => w.e)
  }

  /** Events from a cursor until it ends or their serialised size reaches `maxBytes` (at least one), within `ms`. */
  private async readPage(cursor: FindCursor<EventDoc>, maxBytes: number, what: string, ms: number): Promise<StoredEvent[]> {
    const events: StoredEvent[] = []
    let bytes = 0
    const read = async (): Promise<void> => {
      for await (const d of cursor) {
        const e = toEvent(d)
        events.push(e)
        if (maxBytes !== Number.POSITIVE_INFINITY) bytes += eventBytes(e)
        if (bytes >= maxBytes) break
      }
    }
    try {
      await withDeadline(read(), ms, what)
    } catch (err) {
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError([], true, err)
    } finally {
      void cursor.close().catch(() => {})
    }
    return events
  }

  /**
   * A replay page, through the read queue (see ReadQueue) on the replay client. Bounded by
   * `limit` and `opts.maxBytes`; never empty while an event of the stream lies in (afterId, upTo]:
   * the driver follows the cursor across the server's batches, so only the two bounds cut a page.
   */
  read(filter: StreamFilter, afterId: number, limit: number, opts: ReadOptions = {}): Promise<StoredEvent[]> {
    const { upTo, maxBytes = Number.POSITIVE_INFINITY, signal } = opts
    // An empty range holds nothing: no query (on FerretDB it would still scan the collection).
    if (limit <= 0 || (upTo !== undefined && upTo <= afterId)) return Promise.resolve([])
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
    return this.readQueue.run((ms) => {
      const cursor = this.replayColl.find(q, { projection: EVENT_PROJECTION, ...(this.replaySort === undefined ? {} : { sort: this.replaySort }), limit, batchSize: Math.min(limit, REPLAY_BATCH), timeoutMS: ms })
      return this.readPage(cursor, maxBytes, 'replay read', ms)
    }, signal)
  }

  async evictedThrough(): Promise<number> {
    const [d] = await this.oldestFirst(this.coll.find({}, { projection: { _id: 1, prev: 1 }, ...this.deadline })).limit(1).toArray()
    if (d === undefined) return 0
    return typeof d.prev === 'number' ? d.prev : Number(d._id) - 1
  }

  async bounds(): Promise<StoreBounds> {
    const [oldest, newest] = await Promise.all([this.edgeId(1), this.newestInCollection()])
    if (oldest === null || newest === null) return { oldest: null, newest: null }
    return { oldest, newest }
  }

  tail(afterId: number, handlers: TailHandlers): Tail {
    // FerretDB's tailable cursor reads the whole collection at every poll (see MongoHead).
    const poll = this.opts.tail === 'poll' || (this.opts.tail === undefined && this.announced !== undefined)
    const topts = { ...this.opts, timeoutMs: this.timeoutMs }
    const t = poll ? new HeadPollTail(this, this.db, this.coll, afterId, handlers, topts) : new AwaitDataTail(this, this.db, this.coll, afterId, handlers, topts)
    this.tails.add(t)
    void t.run().finally(() => this.tails.delete(t))
    return { close: () => t.close() }
  }

  /** Within the store deadline: a frozen server fails it like an absent one. */
  async ping(): Promise<void> {
    await withDeadline(this.client.db(this.config.database).command({ ping: 1 }, this.deadline), this.timeoutMs, 'ping')
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.announced?.close()
    await Promise.all([...this.tails].map((t) => t.close()))
    // Forced: a tail's awaitData getMore may still wait out its maxTimeMS on the server.
    await Promise.all([this.client.close(true), this.replayClient.close(true)])
  }

  /** For the tail's check that it has not silently lost its place. */
  newest(): Promise<number | null> {
    return this.newestId()
  }

  /**
   * The collection's own newest id (a scan on FerretDB), raising the head to it. On FerretDB the head
   * is at or past every acknowledged id but is no proof of what is stored: it can be behind (a writer
   * died between storing and announcing; every id read from it would collide again), and it was seen
   * ahead under load (98 announced ids not in the collection; cause not found, BENCHMARKS.md), where
   * a writer with ids of its own that trusted it skipped events for good. So after an id conflict, for given ids,
   * and for bounds() (where the tail, the NATS writer and a relay start), the collection answers.
   */
  private async newestInCollection(): Promise<number | null> {
    const newest = await this.edgeId(-1)
    if (this.announced !== undefined && newest !== null) await this.announced.repair(newest)
    return newest
  }

  /** The newest id stored: on FerretDB the head (one document, at or past every acknowledged id), elsewhere the collection's natural edge. */
  private newestId(): Promise<number | null> {
    return this.announced !== undefined ? this.announced.newest() : this.edgeId(-1)
  }

  /**
   * The oldest or newest id. Insertion order is id order (see append), so the collection's natural
   * order answers it: a capped collection's cheapest read on MongoDB. On FerretDB the oldest is the
   * first document of a read without a sort (see replaySort: one document, not a read and sort of
   * the whole collection); the newest still costs that, `$natural: -1` being a sort there too.
   */
  private async edgeId(dir: 1 | -1): Promise<number | null> {
    const find = this.coll.find({}, { projection: { _id: 1 }, ...this.deadline })
    const [d] = await (dir === 1 ? this.oldestFirst(find) : find.sort({ $natural: -1 })).limit(1).toArray()
    return d === undefined ? null : Number(d._id)
  }

  /** A read of the collection oldest first: natural order, which FerretDB gives a read without a sort (see replaySort). */
  private oldestFirst<T>(cursor: FindCursor<T>): FindCursor<T> {
    return this.isFerretDb ? cursor : cursor.sort({ $natural: 1 })
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
