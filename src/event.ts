import { isUtf8 } from 'node:buffer'
import { Ajv, type ErrorObject } from 'ajv'

/** An event as it enters tailcast (POST /messages, NATS, an upstream): no id yet. */
export interface NewEvent {
  type: string
  competitionId?: string
  room?: string
  time: string
  data: Record<string, unknown>
  /**
   * The `Idempotency-Key` the event was posted with: a store that already holds an event with this
   * key answers that event instead of storing another. Never part of the wire format.
   */
  idempotencyKey?: string
  /** A digest of the body the key came with (see idempotency.ts): a reuse with another body is a conflict. */
  idempotencyDigest?: string
}

/** An event as stored and delivered. `id` is a positive integer, strictly increasing in store order. */
export interface StoredEvent extends NewEvent {
  id: number
}

/** What filtering and bookkeeping need of a stored event: everything but its `data`. */
export type EventMeta = Omit<StoredEvent, 'data'>

/** The event's metadata, sharing nothing with its `data` tree (which may be large, and is then freed). */
export function metaOf(e: StoredEvent): EventMeta {
  const m: EventMeta = { id: e.id, type: e.type, time: e.time }
  if (e.competitionId !== undefined) m.competitionId = e.competitionId
  if (e.room !== undefined) m.room = e.room
  if (e.idempotencyKey !== undefined) m.idempotencyKey = e.idempotencyKey
  if (e.idempotencyDigest !== undefined) m.idempotencyDigest = e.idempotencyDigest
  return m
}

export const COMPETITION_ACTIVATED = 'CompetitionActivatedEvent'
export const ROOM_MESSAGE = 'message'
/** Control events share the envelope but are never stored. `end`: the server is ending the stream, and says why. */
export const CONTROL_TYPES = ['live', 'reset', 'end'] as const
export type ControlType = (typeof CONTROL_TYPES)[number]

/** Room names and competition ids: the pattern, and the rule in words for error messages. */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'
export const NAME_RULE = '1-128 letters, digits or "_.:-", starting with a letter or digit'

const roomMessageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['text', 'room'],
  properties: {
    text: { type: 'string', minLength: 1, maxLength: 10000 },
    room: { type: 'string', pattern: NAME_PATTERN, description: NAME_RULE },
  },
} as const

const fullEventSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'data'],
  properties: {
    type: {
      type: 'string',
      pattern: '^[A-Za-z][A-Za-z0-9_.:-]{0,127}$',
      description: '1-128 letters, digits or "_.:-", starting with a letter',
      not: { enum: [...CONTROL_TYPES] },
    },
    competitionId: { type: 'string', pattern: NAME_PATTERN, description: NAME_RULE },
    room: { type: 'string', pattern: NAME_PATTERN, description: NAME_RULE },
    time: { type: 'string', maxLength: 40 },
    data: { type: 'object' },
  },
} as const

// verbose: errors carry the failing value and its schema (whose description states the rule).
const ajv = new Ajv({ allErrors: false, strict: true, verbose: true })
const validateRoomMessage = ajv.compile(roomMessageSchema)
const validateFullEvent = ajv.compile(fullEventSchema)

export class InvalidEventError extends Error {
  override name = 'InvalidEventError'
}

/** Ajv's first error as a sentence a person understands: the field, the rule, and what was sent. */
function describe(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0]
  if (!e) return 'invalid event'
  const where = e.instancePath ? e.instancePath.slice(1).replaceAll('/', '.') : 'event'
  const p = e.params as Record<string, unknown>
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown field "${String(p.additionalProperty)}"`
    case 'required':
      return `missing field "${String(p.missingProperty)}"`
    case 'not':
      return `type ${CONTROL_TYPES.map((c) => `"${c}"`).join(', ')} are reserved for control events`
    case 'type':
      return `${where} must be ${p.type === 'object' ? 'an object' : `a ${String(p.type)}`}`
    case 'minLength':
      return `${where} must be at least ${plural(Number(p.limit), 'character')}`
    case 'maxLength':
      return `${where} must be at most ${plural(Number(p.limit), 'character')} (got ${String(e.data).length})`
    case 'pattern':
      return `${where} must be ${String((e.parentSchema as { description?: string }).description)} (got ${quoted(e.data)})`
  }
  return `${where} ${e.message ?? 'is invalid'}`
}

/** A value as JSON for a message, cut to about 80 characters. */
export function quoted(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length <= 80 ? text : `${text.slice(0, 76)}…${text.endsWith('"') ? '"' : ''}`
}

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? '' : 's'}`
}

/**
 * What every ingest path accepts (POST, NATS, a relay's upstream, a recording): only events that every
 * supported store can store and that serialise and deliver. Enforced here, in the one decoder, so
 * nothing that could fail later is ever accepted.
 */
export const EVENT_LIMITS = {
  /** Levels of objects and arrays inside `data` (`data` itself is level 1). MongoDB's limit is 100 for the whole document. */
  maxDepth: 64,
  /** The event's JSON envelope (id, type, ... data), in UTF-8 bytes. MongoDB's document limit is 16 MiB. */
  maxBytes: 1024 * 1024,
  /** A key name inside `data`, in characters. */
  maxKeyLength: 256,
  minYear: 0,
  maxYear: 9999,
} as const

/**
 * Reject what MongoDB (or FerretDB) refuses, what JSON cannot carry back, and what a later
 * serialisation could choke on: nesting past the limit, arrays directly inside arrays (FerretDB),
 * key names with NUL, a leading `$` or a `.`, empty or over-long keys, prototype keys, non-finite
 * numbers, strings that are not well-formed Unicode (a lone surrogate would come back from the
 * store as U+FFFD).
 */
function checkValue(v: unknown, path: string, depth: number): void {
  if (path.length > 80) path = `${path.slice(0, 40)}…${path.slice(-30)}`
  switch (typeof v) {
    case 'string':
      if (!v.isWellFormed()) throw new InvalidEventError(`${path}: strings must be well-formed Unicode (no lone surrogate halves)`)
      return
    case 'number':
      if (!Number.isFinite(v)) throw new InvalidEventError(`${path}: numbers must be finite (got ${v})`)
      return
    case 'boolean':
      return
    case 'object':
      break
    default:
      throw new InvalidEventError(`${path}: ${typeof v} is not a JSON value`)
  }
  if (v === null) return
  if (depth > EVENT_LIMITS.maxDepth) throw new InvalidEventError(`${path}: nested deeper than ${EVENT_LIMITS.maxDepth} levels inside data`)
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      if (Array.isArray(v[i])) throw new InvalidEventError(`${path}[${i}]: an array directly inside an array is not supported (FerretDB refuses it); wrap the inner array in an object`)
      checkValue(v[i], `${path}[${i}]`, depth + 1)
    }
    return
  }
  for (const key of Object.keys(v)) {
    checkKey(key, path)
    const value = (v as Record<string, unknown>)[key]
    if (key === 'constructor' && value !== null && typeof value === 'object' && Object.hasOwn(value, 'prototype')) {
      throw new InvalidEventError(`${path}.constructor: key "prototype" is not allowed here (prototype pollution)`)
    }
    if (Array.isArray(value) && RAW_ARRAY_KEYS.has(key)) {
      throw new InvalidEventError(`${path}: an array under the key ${JSON.stringify(key)} is not supported (the MongoDB driver reads it back as raw bytes); use another key name`)
    }
    checkValue(value, `${path}.${key}`, depth + 1)
  }
}

/**
 * Key names under which the MongoDB driver (bson 6) returns the objects of an array as raw BSON:
 * it looks a field's name up in a plain object (`fieldsAsRaw`), so every Object.prototype member
 * (`toString`, `constructor`, `valueOf`, ...) matches.
 */
const RAW_ARRAY_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype))

function checkKey(key: string, path: string): void {
  const where = `${path}: key ${JSON.stringify(key.length > 40 ? key.slice(0, 40) + '…' : key)}`
  if (key === '') throw new InvalidEventError(`${path}: empty key names are not allowed`)
  if (key.length > EVENT_LIMITS.maxKeyLength) throw new InvalidEventError(`${where}: key names are at most ${EVENT_LIMITS.maxKeyLength} characters`)
  if (key === '__proto__') throw new InvalidEventError(`${where}: this key name is not allowed (prototype pollution)`)
  if (key === '_id') throw new InvalidEventError(`${where}: the key name "_id" is reserved (FerretDB moves it to the front of its object)`)
  if (key.startsWith('$')) throw new InvalidEventError(`${where}: key names must not start with "$"`)
  if (key.includes('.')) throw new InvalidEventError(`${where}: key names must not contain "."`)
  if (key.includes('\0')) throw new InvalidEventError(`${where}: key names must not contain NUL`)
  if (!key.isWellFormed()) throw new InvalidEventError(`${where}: key names must be well-formed Unicode`)
}

const TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})$/i

/**
 * A real calendar date-time with a zone (`Z` or `±hh:mm`), as ISO-8601 UTC with milliseconds, so
 * that string order is time order (the competitions window compares strings). `Date.parse` alone
 * would roll 2026-02-30 over to March 2, read a zone-less time as server-local, and print years
 * past 9999 as `+010000`.
 */
export function normaliseTime(raw: string): string {
  const m = TIME.exec(raw)
  const bad = (why: string): InvalidEventError => new InvalidEventError(`time ${why}, e.g. 2026-11-22T18:00:00.000Z (got ${JSON.stringify(raw.slice(0, 40))})`)
  if (m === null) throw bad('must be an ISO-8601 date-time with a zone (Z or ±hh:mm)')
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((x) => Number(x ?? 0))
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !isLeap(year) ? 1 : 0)
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth) throw bad('must be a real calendar date')
  if (hour > 23 || minute > 59 || second > 59) throw bad('must be a real time of day')
  let offsetMin = 0
  const zone = m[8].toUpperCase()
  if (zone !== 'Z') {
    const oh = Number(zone.slice(1, 3))
    const om = Number(zone.slice(4, 6))
    if (oh > 23 || om > 59) throw bad('has an offset out of range')
    offsetMin = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om)
  }
  const ms = Number((m[7] ?? '').padEnd(3, '0').slice(0, 3))
  const d = new Date(0)
  d.setUTCFullYear(year, month - 1, day)
  d.setUTCHours(hour, minute - offsetMin, second, ms)
  const y = d.getUTCFullYear()
  if (y < EVENT_LIMITS.minYear || y > EVENT_LIMITS.maxYear) throw bad(`must fall in the years ${String(EVENT_LIMITS.minYear).padStart(4, '0')}-${EVENT_LIMITS.maxYear} in UTC`)
  return d.toISOString()
}

function isLeap(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0
}

/**
 * The one validation of incoming events, shared by every ingest path.
 * Accepts a room message `{text, room}` or a full event; returns the normalised event (time
 * defaulted to now, see normaliseTime). Throws InvalidEventError naming the field and the rule.
 */
export function parseNewEvent(input: unknown, now = new Date()): NewEvent {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidEventError('the body must be a JSON object')
  }
  for (const key of Object.keys(input)) {
    if (key === '__proto__' || key === 'constructor' || key === 'prototype') throw new InvalidEventError(`key "${key}" is not allowed (prototype pollution)`)
  }
  let event: NewEvent
  if ('text' in input && !('type' in input)) {
    if (!validateRoomMessage(input)) throw new InvalidEventError(describe(validateRoomMessage.errors))
    const m = input as { text: string; room: string }
    checkValue(m.text, 'text', 1)
    event = { type: ROOM_MESSAGE, room: m.room, time: now.toISOString(), data: { text: m.text } }
  } else {
    if (!validateFullEvent(input)) throw new InvalidEventError(describe(validateFullEvent.errors))
    const e = input as { type: string; competitionId?: string; room?: string; time?: string; data: Record<string, unknown> }
    checkValue(e.data, 'data', 1)
    event = { type: e.type, time: e.time === undefined ? now.toISOString() : normaliseTime(e.time), data: e.data }
    if (e.competitionId !== undefined) event.competitionId = e.competitionId
    if (e.room !== undefined) event.room = e.room
  }
  // The largest id keeps the size check true for the envelope as it will be sent.
  const bytes = Buffer.byteLength(toJson({ id: Number.MAX_SAFE_INTEGER, ...event }))
  if (bytes > EVENT_LIMITS.maxBytes) throw new InvalidEventError(`the event is ${bytes} bytes as JSON, over the limit of ${EVENT_LIMITS.maxBytes}`)
  return event
}

/**
 * Bytes from any ingest path (an HTTP body, a NATS payload) to a valid event, or an
 * InvalidEventError saying why: invalid UTF-8, invalid JSON, or a rule of parseNewEvent.
 */
export function decodeEvent(bytes: Uint8Array, now = new Date()): NewEvent {
  if (!isUtf8(bytes)) throw new InvalidEventError('the payload is not valid UTF-8')
  let value: unknown
  try {
    // Plain JSON.parse makes `__proto__` an own key (no pollution); parseNewEvent refuses it by name.
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
  } catch (err) {
    throw new InvalidEventError(`the payload is not valid JSON: ${(err as Error).message}`)
  }
  return parseNewEvent(value, now)
}

/** The JSON envelope sent on both transports; key order is fixed so output is stable. */
export function toJson(e: StoredEvent): string {
  return JSON.stringify({
    id: String(e.id),
    type: e.type,
    competitionId: e.competitionId,
    room: e.room,
    time: e.time,
    data: e.data,
  })
}

/** An event serialised for the wire, made once per event per process and shared by every client. */
export interface Frame {
  id: number
  /** The JSON envelope as UTF-8, sent as one WebSocket text frame. */
  json: Buffer
  /** The complete SSE record: `id:`, `event:`, `data:`, blank line. */
  sse: Buffer
}

export function sseRecord(id: number | null, type: string, json: string): Buffer {
  const idLine = id === null ? '' : `id: ${id}\n`
  return Buffer.from(`${idLine}event: ${type}\ndata: ${json}\n\n`)
}

const NEWLINE = 0x0a
const ID_LINE = 0x69 // "i" of "id: "

/**
 * An sseRecord without its `event:` line, as the slices of `sse` before and after it (no copy):
 * EventSource hands a record without `event:` to `onmessage`; the type stays in the JSON.
 */
export function unnamedSse(sse: Buffer): Buffer[] {
  const start = sse[0] === ID_LINE ? sse.indexOf(NEWLINE) + 1 : 0
  const end = sse.indexOf(NEWLINE, start) + 1
  return start === 0 ? [sse.subarray(end)] : [sse.subarray(0, start), sse.subarray(end)]
}

/**
 * Each event's JSON envelope, serialised once per process: a store that keeps the bytes (the
 * embedded ring) and the hub's frame share one serialisation. Held only while the event object is.
 */
const serialised = new WeakMap<StoredEvent, Buffer>()

/** The event's JSON envelope as UTF-8 (see toJson), made at most once per event object. */
export function jsonOf(e: StoredEvent): Buffer {
  let json = serialised.get(e)
  if (json === undefined) serialised.set(e, (json = Buffer.from(toJson(e))))
  return json
}

/** Tell jsonOf the bytes `e` was read from (they are its envelope), so it is not serialised again. */
export function knownJson(e: StoredEvent, json: Buffer): StoredEvent {
  serialised.set(e, json)
  return e
}

const DATA_LINE_END = Buffer.from('\n\n')

/**
 * The frame holds one buffer: the SSE record, with the JSON envelope (the WebSocket payload) a view
 * into it, so an event held for delivery costs its serialised size once (plus a WebSocket frame, built
 * when a WebSocket client needs it).
 */
export function frameOf(e: StoredEvent): Frame {
  const json = jsonOf(e)
  const head = Buffer.from(`id: ${e.id}\nevent: ${e.type}\ndata: `)
  const sse = Buffer.concat([head, json, DATA_LINE_END])
  return { id: e.id, json: sse.subarray(head.length, head.length + json.length), sse }
}

/**
 * A `live` or `reset` control event. Its `id` is the stream position: every event of the stream
 * with an id up to it has been delivered, so it is a valid resume id ("0" means from the start).
 * On SSE, `live` carries `id:` so EventSource resumes from there; `reset` carries none, so a client
 * that drops during the rebuilt replay keeps asking for (and gets) a reset.
 */
export function controlFrame(type: 'live' | 'reset', position: number, data: Record<string, unknown> = {}): Frame {
  const json = JSON.stringify({ id: String(position), type, time: new Date().toISOString(), data })
  const sseId = type === 'live' && position > 0 ? position : null
  return { id: position, json: Buffer.from(json), sse: sseRecord(sseId, type, json) }
}

/**
 * The `end` control event, the last record of a stream the server ends: `data` says why and how to
 * come back (end-reason.ts). Its `id` is the position the client had reached (0: nothing yet); the
 * SSE record carries no `id:` line, so EventSource's own Last-Event-ID stays that of the last event.
 */
export function endFrame(position: number, data: Record<string, unknown>): Frame {
  const json = JSON.stringify({ id: String(position), type: 'end', time: new Date().toISOString(), data })
  return { id: position, json: Buffer.from(json), sse: sseRecord(null, 'end', json) }
}
