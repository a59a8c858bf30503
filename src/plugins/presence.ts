import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import fp from 'fastify-plugin'
import type { Collection } from 'mongodb'
import { closeStep } from '../bounded.js'
import { MongoEventStore } from '../store/mongo-store.js'

/** How often an instance writes its counts when they changed, and rewrites them anyway. */
const WRITE_MS = 500
const REFRESH_MS = 5000
/** An instance's counts older than this are left out: it stopped or lost the store. */
const PRESENCE_STALE_MS = 15_000
/** Reads of the other instances' counts are shared for this long: every viewer of a page polls. */
const READ_CACHE_MS = 1000
/** Documents of instances gone this long are removed (by a TTL index, or by the instances left when there is none). */
const REMOVE_AFTER_MS = 60_000

export interface Presence {
  /** Clients following each stream key, summed over the instances sharing the store. */
  counts(): Promise<Map<string, number>>
  /** Instances whose counts are summed (this one included). */
  instances(): Promise<number>
}

declare module 'fastify' {
  interface FastifyInstance {
    presence: Presence
  }
}

interface PresenceDoc {
  _id: string
  at: Date
  counts: { k: string; n: number }[]
}

/** A document's keys as JavaScript strings (two bytes a character) and an estimate of the objects around them. */
function presenceBytes(d: PresenceDoc): number {
  let n = 2 * d._id.length + 64
  for (const { k } of d.counts) n += 2 * k.length + 64
  return n
}

/**
 * Who is watching (`app.presence`). Each instance on a MongoDB store keeps one document in
 * `<collection>_presence` with its clients per stream key, rewritten when they change (at most every
 * 0.5 s) and every 5 s; a read sums this instance's live counts with the other documents younger than
 * 15 s (a crashed instance drops out; a TTL index removes its document, or, on a store without TTL
 * indexes such as FerretDB, the live instances remove it, every REFRESH_MS). The embedded store serves
 * one process: its counts are the hub's.
 */
export default fp(
  async (app) => {
    const hub = app.hub
    const store = app.store
    if (!(store instanceof MongoEventStore)) {
      app.decorate('presence', { counts: async () => hub.presence(), instances: async () => 1 })
      return
    }
    const id = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
    const coll: Collection<PresenceDoc> = store.client.db(store.config.database).collection(`${store.config.collection}_presence`)
    const deadline = { timeoutMS: store.timeoutMs }
    // FerretDB v1.24 has no TTL indexes: the instances remove stale documents themselves (below).
    let ttl = !store.isFerretDb
    if (ttl) {
      try {
        await coll.createIndex({ at: 1 }, { expireAfterSeconds: REMOVE_AFTER_MS / 1000, ...deadline })
      } catch (err) {
        ttl = false
        app.log.info(`presence: no TTL index (${(err as Error).message}); this instance removes stale presence documents itself`)
      }
    }
    let removedAt = 0
    const removeStale = async (): Promise<void> => {
      if (ttl || Date.now() - removedAt < REFRESH_MS) return
      removedAt = Date.now()
      await coll.deleteMany({ at: { $lt: new Date(Date.now() - REMOVE_AFTER_MS) } }, deadline).catch(() => {})
    }
    let written = ''
    let writtenAt = 0
    let failing = false
    /** The write in flight: the next one waits for it, and so does the removal at close. */
    let writing: Promise<void> | undefined
    const write = (): Promise<void> => (writing ??= writeCounts().finally(() => (writing = undefined)))
    const writeCounts = async (): Promise<void> => {
      const counts = [...hub.presence()].map(([k, n]) => ({ k, n }))
      const text = JSON.stringify(counts)
      if (text === written && Date.now() - writtenAt < REFRESH_MS) return
      try {
        await coll.replaceOne({ _id: id }, { at: new Date(), counts }, { upsert: true, ...deadline })
        written = text
        writtenAt = Date.now()
        if (failing) app.log.info('presence: this instance\'s counts are written again')
        failing = false
      } catch (err) {
        // Once per outage, not twice a second.
        if (!failing) app.log.warn({ err }, 'presence: writing this instance\'s counts failed; retrying every 0.5 s')
        failing = true
      }
    }
    await write()
    const timer = setInterval(() => void write().then(removeStale), WRITE_MS)
    timer.unref()

    let cached: { at: number; docs: Promise<PresenceDoc[]> } | undefined
    /** Bytes of the other instances' documents last read (memory budget part `presence`, with this instance's own). */
    let othersBytes = 0
    app.budget.track('presence', () => 2 * written.length + othersBytes)
    const others = (): Promise<PresenceDoc[]> => {
      if (cached === undefined || Date.now() - cached.at > READ_CACHE_MS) {
        const docs = coll.find({ _id: { $ne: id }, at: { $gt: new Date(Date.now() - PRESENCE_STALE_MS) } }, { timeoutMS: Math.min(2000, store.timeoutMs) }).toArray()
        void docs.then((ds) => (othersBytes = ds.reduce((n, d) => n + presenceBytes(d), 0)), () => {})
        // A failed read is not kept: the next request tries again.
        docs.catch(() => {
          if (cached?.docs === docs) cached = undefined
        })
        cached = { at: Date.now(), docs }
      }
      return cached.docs
    }
    app.decorate('presence', {
      async counts() {
        const sum = hub.presence()
        for (const doc of await others()) for (const { k, n } of doc.counts) sum.set(k, (sum.get(k) ?? 0) + n)
        return sum
      },
      async instances() {
        return 1 + (await others()).length
      },
    })
    // Before the store closes: the others stop counting this instance's clients at once.
    app.addHook('preClose', () =>
      closeStep(app.log, 'presence (this instance\'s counts removed)', async () => {
        clearInterval(timer)
        // An upsert landing after the removal would bring this instance's counts back for 15 s.
        await writing
        await coll.deleteOne({ _id: id }, deadline)
      }),
    )
  },
  { name: 'presence', dependencies: ['hub', 'store'] },
)
