import { createPrivateKey, type KeyObject } from 'node:crypto'
import { SignJWT } from 'jose'
import { COMPETITION_ACTIVATED, type NewEvent } from './event.js'
import { checkPatterns } from './grant-patterns.js'

/**
 * What a token allows, from its `tailcast` claim:
 *
 *   {"tailcast": {"subscribe": ["/v1/competitions/*", "/messages?room=vip"], "publish": ["room:vip"]}}
 *
 * `subscribe` lists stream paths as clients open them (see streamPath): `/v1/competitions`,
 * `/v1/competitions/ID`, `/messages` (every room), `/messages?room=ROOM`. `publish` lists what
 * POST /messages may write to: `room:ROOM`, `competition:ID`, and `competitions` (the competitions
 * list, which every `CompetitionActivatedEvent` reaches). In both, `*` stands for any run of
 * characters within one name (never `/`, `?`, `&`, `=`), e.g. `/v1/competitions/*`, `room:team-*`.
 * `/messages` (every room) also allows each single room, since it carries their events.
 */
export interface Grant {
  subscribe: Pattern[]
  publish: Pattern[]
}

export class ClaimError extends Error {
  override name = 'ClaimError'
}

/** The separators of a stream path: `*` never stands for one. */
const SEPARATOR = /[/?&=]/

/** The separators of `s`, in order, and the names between them. */
function components(s: string): { separators: string; names: string[] } {
  return { separators: s.replace(/[^/?&=]/g, ''), names: s.split(SEPARATOR) }
}

/**
 * A glob within one name (`*`: any run of characters), greedy with the leftmost occurrence of each
 * middle part: linear passes with indexOf, never backtracking.
 */
function globMatch(parts: string[], s: string): boolean {
  if (parts.length === 1) return s === parts[0]
  const first = parts[0]
  const last = parts[parts.length - 1]
  const end = s.length - last.length
  if (end < first.length || !s.startsWith(first) || !s.endsWith(last)) return false
  let pos = first.length
  for (let i = 1; i < parts.length - 1; i++) {
    const at = s.indexOf(parts[i], pos)
    if (at < 0 || at + parts[i].length > end) return false
    pos = at + parts[i].length
  }
  return true
}

/**
 * A claim pattern as a whole-string match, `*` being the only special character. Since `*` never
 * stands for a separator, pattern and subject match when they have the same separators in the same
 * order and each name of the pattern globs the subject's name at its place. No regex, no
 * backtracking: any number of stars against any name costs a few linear passes, which a token
 * holder cannot turn into a stalled event loop.
 */
export class Pattern {
  private readonly separators: string
  /** Each name of the pattern split at its stars. */
  private readonly names: string[][]

  constructor(readonly source: string) {
    const { separators, names } = components(source)
    this.separators = separators
    this.names = names.map((n) => n.split('*'))
  }

  test(subject: string): boolean {
    const { separators, names } = components(subject)
    if (separators !== this.separators) return false
    return this.names.every((parts, i) => globMatch(parts, names[i]))
  }
}

export function compilePattern(pattern: string): Pattern {
  return new Pattern(pattern)
}

function patterns(claim: Record<string, unknown>, name: 'subscribe' | 'publish'): Pattern[] {
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

/**
 * Every stream an event reaches, as publish targets: its room, its competition, and the
 * competitions list for a `CompetitionActivatedEvent` (authorization is by effect, see stream.ts
 * eventKeys). Each target needs a publish pattern, except the list: a `CompetitionActivatedEvent`
 * of a competition the holder may publish to (`competition:ID`) may announce it on the list; one
 * without a competitionId needs `competitions`.
 */
function publishTargets(e: Pick<NewEvent, 'room' | 'competitionId'> & { type?: string }): string[] {
  const targets: string[] = []
  if (e.room !== undefined) targets.push(`room:${e.room}`)
  if (e.competitionId !== undefined) targets.push(`competition:${e.competitionId}`)
  else if (e.type === COMPETITION_ACTIVATED) targets.push('competitions')
  return targets
}

/**
 * The targets of `e` the holder may not post to (empty: allowed). An event with neither room nor
 * competition (nor the list) goes to no stream a grant names: only the server's post token may post it.
 */
export function deniedTargets(grant: Grant, e: Pick<NewEvent, 'room' | 'competitionId'> & { type?: string }): string[] {
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
