import { createHash } from 'node:crypto'
import type { NewEvent, StoredEvent } from './event.js'

/**
 * Idempotency keys (`Idempotency-Key` on POST, `Tailcast-Idempotency-Key` on NATS): one rule, one
 * scope, one comparison for every ingest path.
 *
 * A key belongs to its publisher: the stored key is a digest of (scope, key), where the scope is
 * the publisher's identity (a JWT's subject, else a digest of its bearer token; anonymous posts
 * share one scope; a raw NATS publisher is its own). So a key used by B is another key than A's:
 * B can neither learn A's id by replaying A's key nor squat it before A posts.
 * Next to the key the store keeps a digest of the body: a retry (same body) answers the stored
 * event, a reuse with another body is a conflict (422), never a silent drop.
 */

/** The rule for a key as sent: 1-200 visible ASCII characters (a UUID fits). */
export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,200}$/
export const IDEMPOTENCY_KEY_RULE = 'must be 1-200 visible ASCII characters (e.g. a UUID)'

/** Scopes of publishers without an identity of their own. */
export const ANONYMOUS_SCOPE = 'anonymous'
export const NATS_SCOPE = 'nats'

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('base64url')
}

/** The scope of a publisher known by a verified JWT's subject. */
export function subjectScope(subject: string): string {
  return `sub:${subject}`
}

/** The scope of a publisher known only by its bearer token (the post token, a JWT without `sub`). */
export function tokenScope(token: string): string {
  return `token:${sha256(token)}`
}

/** The key as stored: a digest of scope and key (43 characters, whatever their lengths). */
export function scopedKey(scope: string, key: string): string {
  return sha256(`${scope}\n${key}`)
}

/** The digest of a request's body as sent: a retry sends the same bytes. */
export function bodyDigest(body: Uint8Array): string {
  return sha256(body)
}

/** A key was reused for another event than the one stored with it. */
export class IdempotencyConflictError extends Error {
  override name = 'IdempotencyConflictError'
  constructor(readonly stored: StoredEvent) {
    super(`this Idempotency-Key was already used for another event (id ${stored.id}); the first one stays stored: use a new key for a new event`)
  }
}

/**
 * The answer to `event` when the store holds `stored` for its key: `stored` itself for a retry
 * (same body, or a stored event that predates digests), a conflict for another body.
 */
export function checkStored(event: NewEvent, stored: StoredEvent): StoredEvent {
  if (isConflict(event, stored)) throw new IdempotencyConflictError(stored)
  return stored
}

/** Is `stored`, held for `event`'s key, another event than `event`? */
export function isConflict(event: NewEvent, stored: Pick<StoredEvent, 'idempotencyDigest'>): boolean {
  return event.idempotencyDigest !== undefined && stored.idempotencyDigest !== undefined && stored.idempotencyDigest !== event.idempotencyDigest
}

/** The store's reason for refusing an event whose key is held by another event (a dead letter's reason). */
export function keyConflict(stored: Pick<StoredEvent, 'id'>): string {
  return `its idempotency key was already used for another event (id ${stored.id}), which stays stored`
}
