import { COMPETITION_ACTIVATED, type StoredEvent } from './event.js'

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

export function eventKeys(e: StoredEvent): string[] {
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

export function matches(f: StreamFilter, e: StoredEvent, now = Date.now()): boolean {
  switch (f.kind) {
    case 'competitions':
      return e.type === COMPETITION_ACTIVATED && e.time >= windowStart(f.windowMs, now)
    case 'competition':
      return e.competitionId === f.competitionId
    case 'room':
      return e.room !== undefined && (f.room === null || e.room === f.room)
  }
}

