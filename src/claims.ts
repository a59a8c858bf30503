import { createPrivateKey, type KeyObject } from 'node:crypto'
import { SignJWT } from 'jose'
import type { NewEvent } from './event.js'
import { checkPatterns } from './grant-patterns.js'

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
function publishTargets(e: Pick<NewEvent, 'room' | 'competitionId'>): string[] {
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

export interface MintOptions {
  subscribe: string[]
  publish: string[]
  /** A jose time span: `1h`, `30m`, `7d`. */
  expiresIn: string
  subject?: string
  issuer?: string
  audience?: string
}

/** The JWT algorithm of an RSA (RS256) or EC P-256 (ES256) key, public or private; undefined for any other. */
export function algorithmOf(key: KeyObject): 'RS256' | 'ES256' | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256'
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256'
  return undefined
}

/** The signing key for `tailcast token`: an HS256 secret, or a PEM private key (RSA: RS256, EC P-256: ES256). */
export function signingKey(source: { secret: string } | { privateKeyPem: string }): { key: Uint8Array | KeyObject; alg: string } {
  if ('secret' in source) return { key: new TextEncoder().encode(source.secret), alg: 'HS256' }
  const key = createPrivateKey(source.privateKeyPem)
  const alg = algorithmOf(key)
  if (alg !== undefined) return { key, alg }
  throw new ClaimError(`an RSA (RS256) or EC P-256 (ES256) private key is needed, got ${key.asymmetricKeyType ?? 'another kind'}`)
}

/** A token carrying the tailcast claim (see Grant), as the server checks it. */
export async function mintToken(signer: { key: Uint8Array | KeyObject; alg: string }, o: MintOptions): Promise<string> {
  checkPatterns(o.subscribe, o.publish)
  const jwt = new SignJWT({ tailcast: { subscribe: o.subscribe, publish: o.publish } }).setProtectedHeader({ alg: signer.alg }).setIssuedAt()
  try {
    jwt.setExpirationTime(o.expiresIn)
  } catch {
    throw new ClaimError(`--expires must be a time span such as 30m, 1h or 7d, got ${JSON.stringify(o.expiresIn)}`)
  }
  if (o.subject !== undefined) jwt.setSubject(o.subject)
  if (o.issuer) jwt.setIssuer(o.issuer)
  if (o.audience) jwt.setAudience(o.audience)
  return jwt.sign(signer.key)
}
