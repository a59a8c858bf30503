import type { NewEvent } from './event.js'

/**
 * What a token allows, from its `tailcast` claim:
 *
 *   {"tailcast": {"subscribe": ["/v1/competitions/*", "/messages?room=vip"], "publish": ["room:vip"]}}
 *
 * `subscribe` lists stream paths as clients open them (see streamPath): `/v1/competitions`,
 * `/v1/competitions/ID`, `/messages` (every room), `/messages?room=ROOM`. `publish` lists what
 * POST /messages may write to: `room:ROOM`, `competition:ID`. In both, `*` stands for any run of
 * characters within one name (never `/`, `?`, `&`, `=`), e.g. `/v1/competitions/*`, `room:team-*`.
 * `/messages` (every room) also allows each single room, since it carries their events.
 */
export interface Grant {
  subscribe: RegExp[]
  publish: RegExp[]
}

export class ClaimError extends Error {
  override name = 'ClaimError'
}

const NAME_CHARS = '[^/?&=]*'

/** A pattern as a whole-string match: `*` is the only special character. */
export function compilePattern(pattern: string): RegExp {
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join(NAME_CHARS)
  return new RegExp(`^${source}$`)
}

function patterns(claim: Record<string, unknown>, name: 'subscribe' | 'publish'): RegExp[] {
  const list = claim[name]
  if (list === undefined) return []
  if (!Array.isArray(list) || !list.every((p) => typeof p === 'string' && p.length > 0 && p.length <= 300) || list.length > 1000) {
    throw new ClaimError(`the "tailcast.${name}" claim must be a list of patterns (strings of 1-300 characters)`)
  }
  return list.map(compilePattern)
}

/** The grant of a verified token's payload; a token without the claim allows nothing. */
export function grantOf(payload: Record<string, unknown>): Grant {
  const claim = payload.tailcast
  if (claim === undefined) return { subscribe: [], publish: [] }
  if (typeof claim !== 'object' || claim === null || Array.isArray(claim)) {
    throw new ClaimError('the "tailcast" claim must be an object: {"subscribe": [...], "publish": [...]}')
  }
  return { subscribe: patterns(claim as Record<string, unknown>, 'subscribe'), publish: patterns(claim as Record<string, unknown>, 'publish') }
}

/** May the holder follow the stream at `path` (a canonical stream path)? */
export function mayFollow(grant: Grant, path: string): boolean {
  if (grant.subscribe.some((p) => p.test(path))) return true
  return path.startsWith('/messages?room=') && grant.subscribe.some((p) => p.test('/messages'))
}

/** What an event is posted to: its room and its competition (`room:ROOM`, `competition:ID`). */
export function publishTargets(e: Pick<NewEvent, 'room' | 'competitionId'>): string[] {
  const targets: string[] = []
  if (e.room !== undefined) targets.push(`room:${e.room}`)
  if (e.competitionId !== undefined) targets.push(`competition:${e.competitionId}`)
  return targets
}

/**
 * The targets of `e` the holder may not post to (empty: allowed). An event with neither room nor
 * competition goes to no stream a grant names: only the server's post token may post it.
 */
export function deniedTargets(grant: Grant, e: Pick<NewEvent, 'room' | 'competitionId'>): string[] {
  const targets = publishTargets(e)
  if (targets.length === 0) return ['(an event without room or competitionId)']
  return targets.filter((t) => !grant.publish.some((p) => p.test(t)))
}
