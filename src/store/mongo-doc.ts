import { toJson, type NewEvent, type StoredEvent } from '../event.js'

/** A stored document: the event with its id as `_id` (so the unique _id index keeps ids unique). */
export interface EventDoc {
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
  /** Idempotency key of an older version (unscoped): no longer read, see mongo-keys.ts. */
  k?: string
  /** Idempotency key it was posted with, scoped to its publisher (unique index, see mongo-keys.ts). */
  ik?: string
  /** Digest of the body posted with that key. */
  ih?: string
}

export function toEvent(d: EventDoc): StoredEvent {
  const e: StoredEvent = { id: Number(d._id), type: d.type, time: d.time, data: d.data }
  if (d.competitionId !== undefined && d.competitionId !== null) e.competitionId = d.competitionId
  if (d.room !== undefined && d.room !== null) e.room = d.room
  if (d.ih !== undefined) e.idempotencyDigest = d.ih
  return e
}

export function toDoc(e: NewEvent, id: number, at: Date, prev: number, w: string): EventDoc {
  const d: EventDoc = { _id: id, type: e.type, time: e.time, data: e.data, at, prev, w }
  if (e.competitionId !== undefined) d.competitionId = e.competitionId
  if (e.room !== undefined) d.room = e.room
  if (e.idempotencyKey !== undefined) d.ik = e.idempotencyKey
  if (e.idempotencyDigest !== undefined) d.ih = e.idempotencyDigest
  return d
}

/** Reads that must not be sent back to clients or compared: bookkeeping fields. */
export const EVENT_PROJECTION = { at: 0, prev: 0, w: 0, k: 0, ik: 0, ih: 0 }

/** The serialised size of an event, the measure of every byte bound on pages. */
export function eventBytes(e: StoredEvent): number {
  return Buffer.byteLength(toJson(e))
}

/** Is a cursor id the "no cursor" id (0, as a number, bigint or BSON Long)? */
export function isZero(id: unknown): boolean {
  if (id === null || id === undefined) return true
  if (typeof id === 'number' || typeof id === 'bigint') return id == 0
  const l = id as { isZero?: () => boolean }
  return typeof l.isZero === 'function' ? l.isZero() : false
}
