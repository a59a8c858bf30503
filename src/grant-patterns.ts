import { ClaimError } from './claims.js'
import { NAME_PATTERN, NAME_RULE } from './event.js'
import { keyOfPath } from './stream.js'

/*
 * The patterns a token may carry, checked as the server reads what they match: a pattern that can
 * match no stream path (`/nope`, `/messages?room=a b`) or no post target would be a token that
 * allows nothing it names. `*` stands for any run of name characters, the empty run included.
 */

const NAME = new RegExp(NAME_PATTERN)
/** Runs `*` is tried as: empty, and name characters. */
const FILLS = ['', 'x', '0']

function canMatch(pattern: string, valid: (s: string) => boolean): boolean {
  return FILLS.some((fill) => valid(pattern.replaceAll('*', fill)))
}

const STREAMS = '/v1/competitions, /v1/competitions/ID, /messages or /messages?room=ROOM'

/** Throws a ClaimError naming the first pattern no stream path or post target can match. */
export function checkPatterns(subscribe: string[], publish: string[]): void {
  for (const p of subscribe) {
    if (p.length === 0 || p.length > 300) throw new ClaimError(`a subscribe pattern has 1-300 characters, got ${p.length}`)
    if (!canMatch(p, (path) => keyOfPath(path) !== null)) {
      throw new ClaimError(`the subscribe pattern ${JSON.stringify(p)} matches no stream: a stream path is ${STREAMS}, with IDs and rooms of ${NAME_RULE} (* for any run of them)`)
    }
  }
  for (const p of publish) {
    if (p.length === 0 || p.length > 300) throw new ClaimError(`a publish pattern has 1-300 characters, got ${p.length}`)
    if (p === 'competitions') continue
    const m = /^(room|competition):(.*)$/.exec(p)
    if (m === null) throw new ClaimError(`a publish pattern is room:NAME, competition:ID or competitions (the list), got ${JSON.stringify(p)}`)
    if (!canMatch(m[2], (name) => NAME.test(name))) {
      throw new ClaimError(`the publish pattern ${JSON.stringify(p)} matches no ${m[1]}: a ${m[1] === 'room' ? 'room' : 'competition id'} is ${NAME_RULE} (* for any run of them)`)
    }
  }
}
