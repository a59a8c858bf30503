import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { deniedTargets } from '../claims.js'
import { refuse, schemaErrors, unavailable } from '../errors.js'
import { decodeEvent, InvalidEventError } from '../event.js'
import { ANONYMOUS_SCOPE, bodyDigest, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE, IdempotencyConflictError, scopedKey, subjectScope, tokenScope } from '../idempotency.js'
import { StoreRejectedError, StoreUnavailableError } from '../store/event-store.js'

/** POST /messages takes its event in the body: a query parameter is a mistake worth a 400. */
const NO_QUERY = Type.Object({}, { additionalProperties: false })

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

/** POST /messages: inject one event (a room message or a full event). GET /messages is a stream. GET /posting: may one post here. */
export default async function messages(app: FastifyInstance): Promise<void> {
  const { enabled, token } = app.config.post
  const expected = token === '' ? null : digest(token)

  // The body stays bytes here: decodeEvent is the one decoder every ingest path shares. JSON only:
  // text/plain, form and multipart bodies are what any web page can make a browser send cross-site
  // without a CORS preflight.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))

  // Before the body is read, and with one message for every other type, a malformed one or none.
  async function jsonOnly(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (req.mediaType === 'application/json') return
    const got = req.headers['content-type'] === undefined ? 'no content-type' : `content-type ${JSON.stringify(req.headers['content-type']).slice(0, 80)}`
    return refuse(reply, 415, `send the event as JSON with content-type: application/json (got ${got})`)
  }

  /**
   * The server's post token allows everything; with JWT auth on, a JWT allows the rooms and
   * competitions of its "tailcast.publish" claim (checked once the event is read). Only from the
   * header: a cookie would let any page post with a visitor's token.
   */
  async function authorize(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (!enabled) return refuse(reply, 403, 'posting is disabled on this server')
    if (expected === null && !app.auth.enabled) return
    const bearer = app.auth.bearerOf(req)
    if (bearer === undefined) {
      const what = app.auth.enabled ? 'a JWT with a "tailcast.publish" claim' : '<token>'
      return refuse(reply.header('www-authenticate', 'Bearer'), 401, `POST /messages needs "Authorization: Bearer ${what}"`)
    }
    // Compare digests so that neither the length nor the content of the token leaks through timing.
    if (expected !== null && timingSafeEqual(digest(bearer), expected)) return
    if (!app.auth.enabled) return refuse(reply, 403, 'the bearer token is not valid')
    await app.auth.accept(req, reply, bearer)
  }

  // What a page needs to know before offering a send box: no side effect, nothing logged as refused.
  app.get('/posting', async () => {
    if (app.upstream) return { enabled: false, tokenRequired: false, reason: `this server is a read-only relay of ${app.upstream.url}: post events to the upstream` }
    if (!enabled) return { enabled: false, tokenRequired: false, reason: 'posting is disabled on this server' }
    return { enabled: true, tokenRequired: expected !== null || app.auth.enabled }
  })

  app.post('/messages', { onRequest: authorize, preParsing: jsonOnly, schema: { querystring: NO_QUERY }, schemaErrorFormatter: schemaErrors(NO_QUERY) }, async (req, reply) => {
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) return refuse(reply, 400, 'the body is empty: send one JSON event')
    let event
    try {
      event = decodeEvent(req.body)
    } catch (err) {
      if (err instanceof InvalidEventError) {
        app.metrics.dropped.inc({ reason: 'invalid' })
        return refuse(reply, 400, err.message)
      }
      throw err
    }
    const denied = req.authorization === null ? [] : deniedTargets(req.authorization.grant, event)
    if (denied.length > 0) return refuse(reply, 403, `the token may not post to ${denied.join(' or ')} (its "tailcast.publish" claim); nothing was stored`)
    const key = req.headers['idempotency-key']
    if (key !== undefined) {
      if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) {
        return refuse(reply, 400, `the Idempotency-Key header ${IDEMPOTENCY_KEY_RULE}`)
      }
      // The key is the publisher's: its JWT subject, else its bearer token, else the anonymous scope.
      const bearer = app.auth.bearerOf(req)
      const subject = req.authorization?.subject ?? null
      const scope = subject !== null ? subjectScope(subject) : bearer !== undefined ? tokenScope(bearer) : ANONYMOUS_SCOPE
      event.idempotencyKey = scopedKey(scope, key)
      event.idempotencyDigest = bodyDigest(req.body)
    }
    try {
      const [stored] = await app.ingest.submit([event])
      return await reply.code(202).send({ id: String(stored.id) })
    } catch (err) {
      // The answer tells the truth about the store: refused or not stored is never a 202.
      if (err instanceof IdempotencyConflictError) return refuse(reply, 422, err.message)
      if (err instanceof StoreRejectedError) {
        // A gap between the decoder and the store, for the operator; the reason, not a stack (a 4xx).
        req.log.warn({ reason: err.message }, 'the store refused an event the decoder accepted')
        app.metrics.dropped.inc({ reason: 'refused' })
        return refuse(reply, 400, 'the store refused this event; nothing was stored')
      }
      if (err instanceof StoreUnavailableError) {
        // Named as the part that failed: with NATS on, a POST's write goes to NATS, not the store.
        req.log.error({ err }, `POST /messages: ${err.component} is unavailable`)
        const message = err.certain
          ? `${err.component} is unavailable; the event was not stored: retry later`
          : `${err.component} did not confirm the write, so the event may have been stored: retry with the same Idempotency-Key header to store it exactly once`
        return unavailable(reply, message, 1)
      }
      throw err
    }
  })
}
