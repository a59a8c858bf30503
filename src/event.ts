import { isUtf8 } from 'node:buffer'
import { Ajv, type ErrorObject } from 'ajv'
import sjson from 'secure-json-parse'

/** An event as it enters tailcast (POST /messages, NATS, an upstream): no id yet. */
export interface NewEvent {
  type: string
  competitionId?: string
  room?: string
  time: string
  data: Record<string, unknown>
}

/** An event as stored and delivered. `id` is a positive integer, strictly increasing in store order. */
export interface StoredEvent extends NewEvent {
  id: number
}

export const COMPETITION_ACTIVATED = 'CompetitionActivatedEvent'
export const ROOM_MESSAGE = 'message'
/** Control events share the envelope but are never stored. */
export const CONTROL_TYPES = ['live', 'reset'] as const
export type ControlType = (typeof CONTROL_TYPES)[number]

const NAME = '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'

const roomMessageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['text', 'room'],
  properties: {
    text: { type: 'string', minLength: 1, maxLength: 10000 },
    room: { type: 'string', pattern: NAME },
  },
} as const

const fullEventSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'data'],
  properties: {
    type: { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_.:-]{0,127}$', not: { enum: [...CONTROL_TYPES] } },
    competitionId: { type: 'string', pattern: NAME },
    room: { type: 'string', pattern: NAME },
    time: { type: 'string', minLength: 10, maxLength: 40 },
    data: { type: 'object' },
  },
} as const

const ajv = new Ajv({ allErrors: false, strict: true })
const validateRoomMessage = ajv.compile(roomMessageSchema)
const validateFullEvent = ajv.compile(fullEventSchema)

export class InvalidEventError extends Error {
  override name = 'InvalidEventError'
}

function describe(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0]
  if (!e) return 'invalid event'
  const where = e.instancePath ? e.instancePath.slice(1).replaceAll('/', '.') : 'event'
  if (e.keyword === 'additionalProperties') return `unknown field "${(e.params as { additionalProperty: string }).additionalProperty}"`
  if (e.keyword === 'required') return `missing field "${(e.params as { missingProperty: string }).missingProperty}"`
  if (e.keyword === 'not' && where === 'type') return `type "live" and "reset" are reserved for control events`
  return `${where} ${e.message ?? 'is invalid'}`
}

/**
 * The one validation of incoming events, shared by every ingest path.
 * Accepts a room message `{text, room}` or a full event; returns the normalised event
 * (time defaulted to now and rewritten as ISO-8601 UTC so that string order is time order).
 */
export function parseNewEvent(input: unknown, now = new Date()): NewEvent {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidEventError('the body must be a JSON object')
  }
  if ('text' in input && !('type' in input)) {
    if (!validateRoomMessage(input)) throw new InvalidEventError(describe(validateRoomMessage.errors))
    const m = input as { text: string; room: string }
    return { type: ROOM_MESSAGE, room: m.room, time: now.toISOString(), data: { text: m.text } }
  }
  if (!validateFullEvent(input)) throw new InvalidEventError(describe(validateFullEvent.errors))
  const e = input as { type: string; competitionId?: string; room?: string; time?: string; data: Record<string, unknown> }
  let time = now.toISOString()
  if (e.time !== undefined) {
    const t = Date.parse(e.time)
    if (!/^\d{4}-\d{2}-\d{2}T/.test(e.time) || Number.isNaN(t)) {
      throw new InvalidEventError('time must be an ISO-8601 date-time, e.g. 2026-11-22T18:00:00.000Z')
    }
    time = new Date(t).toISOString()
  }
  const out: NewEvent = { type: e.type, time, data: e.data }
  if (e.competitionId !== undefined) out.competitionId = e.competitionId
  if (e.room !== undefined) out.room = e.room
  return out
}

/**
 * Bytes from any ingest path (an HTTP body, a NATS payload) to a valid event, or an
 * InvalidEventError saying why: invalid UTF-8, invalid JSON, prototype-pollution keys, schema.
 */
export function decodeEvent(bytes: Uint8Array, now = new Date()): NewEvent {
  if (!isUtf8(bytes)) throw new InvalidEventError('the payload is not valid UTF-8')
  let value: unknown
  try {
    value = sjson.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'), undefined, {
      protoAction: 'error',
      constructorAction: 'error',
    })
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

export function frameOf(e: StoredEvent): Frame {
  const json = toJson(e)
  return { id: e.id, json: Buffer.from(json), sse: sseRecord(e.id, e.type, json) }
}

/**
 * A `live` or `reset` control event. Its `id` is the stream position: every event of the stream
 * with an id up to it has been delivered, so it is a valid resume id ("0" means from the start).
 * On SSE, `live` carries `id:` so EventSource resumes from there; `reset` carries none, so a client
 * that drops during the rebuilt replay keeps asking for (and gets) a reset.
 */
export function controlFrame(type: ControlType, position: number, data: Record<string, unknown> = {}): Frame {
  const json = JSON.stringify({ id: String(position), type, time: new Date().toISOString(), data })
  const sseId = type === 'live' && position > 0 ? position : null
  return { id: position, json: Buffer.from(json), sse: sseRecord(sseId, type, json) }
}
