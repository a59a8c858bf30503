import { COMPETITION_ACTIVATED, NAME_PATTERN, type EventMeta } from './event.js'

/** What a client follows. The URL is the topic: each stream path maps to one of these. */
export type StreamFilter =
  | { kind: 'competitions'; windowMs: number }
  | { kind: 'competition'; competitionId: string }
  | { kind: 'room'; room: string | null }

/** GET paths that open a stream (SSE or WebSocket): `/messages`, `/v1/competitions`, `/v1/competitions/ID`. */
const STREAM_PATHS = /^\/(v1\/competitions(\/[^/?]*)?|messages)(\?|$)/

export function isStreamRequest(method: string, url: string): boolean {
  return method === 'GET' && STREAM_PATHS.test(url)
}

/**
 * The stream's canonical path, as clients open it and as tokens name it: `/v1/competitions`,
 * `/v1/competitions/ID`, `/messages`, `/messages?room=ROOM`.
 */
export function streamPath(f: StreamFilter): string {
  switch (f.kind) {
    case 'competitions':
      return '/v1/competitions'
    case 'competition':
      return `/v1/competitions/${f.competitionId}`
    case 'room':
      return f.room === null ? '/messages' : `/messages?room=${f.room}`
  }
}

/** The stream key of a canonical stream path (streamPath's inverse); null when it names no stream. */
export function keyOfPath(path: string): string | null {
  if (path === '/v1/competitions') return 'competitions'
  if (path === '/messages') return 'rooms'
  const m = /^\/v1\/competitions\/([^/?]+)$|^\/messages\?room=([^&]+)$/.exec(path)
  if (m === null) return null
  const name = m[1] ?? m[2]
  if (!new RegExp(NAME_PATTERN).test(name)) return null
  return m[1] !== undefined ? `competition:${name}` : `room:${name}`
}

/** The stream kind of a stream key, as /metrics labels it. */
export function kindOfKey(key: string): StreamFilter['kind'] {
  if (key === 'competitions') return 'competitions'
  return key.startsWith('competition:') ? 'competition' : 'room'
}

/** The hub routes events by key so that each event costs one lookup per key, not one test per client. */
export function streamKey(f: StreamFilter): string {
  switch (f.kind) {
    case 'competitions':
      return 'competitions'
    case 'competition':
      return `competition:${f.competitionId}`
    case 'room':
      return f.room === null ? 'rooms' : `room:${f.room}`
  }
}

export function eventKeys(e: EventMeta): string[] {
  const keys: string[] = []
  if (e.type === COMPETITION_ACTIVATED) keys.push('competitions')
  if (e.competitionId !== undefined) keys.push(`competition:${e.competitionId}`)
  if (e.room !== undefined) keys.push(`room:${e.room}`, 'rooms')
  return keys
}

/** The earliest `time` the competitions stream replays, as an ISO string (comparable as text). */
export function windowStart(windowMs: number, now = Date.now()): string {
  return new Date(now - windowMs).toISOString()
}

export function matches(f: StreamFilter, e: EventMeta, now = Date.now()): boolean {
  switch (f.kind) {
    case 'competitions':
      return e.type === COMPETITION_ACTIVATED && e.time >= windowStart(f.windowMs, now)
    case 'competition':
      return e.competitionId === f.competitionId
    case 'room':
      return e.room !== undefined && (f.room === null || e.room === f.room)
  }
}

