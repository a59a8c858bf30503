import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import type { WebSocket } from 'ws'
import { refuse, schemaErrors } from '../errors.js'
import { NAME_PATTERN, NAME_RULE, quoted } from '../event.js'
import { ACCESS_TOKEN_PARAM } from '../plugins/auth.js'
import { sseTransport } from '../hub/sse-transport.js'
import type { Transport } from '../hub/transport.js'
import { WsTransport } from '../hub/ws-transport.js'
import { streamPath, type StreamFilter } from '../stream.js'

/** Resume ids are positive integers as decimal text; "0" means "from the start". */
const RESUME_ID = /^(0|[1-9][0-9]{0,15})$/
const RESUME_RULE = `must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER} (the id of the last event received; 0: from the start)`

/**
 * The query parameters of the stream paths: anything else, an empty value or a repeated one is a
 * 400 that lists these (see errors.ts). The rule of each is its schema's description; the value
 * of lastEventId is checked in resumeIdOf, with the Last-Event-ID header (one rule for both).
 */
const lastEventId = Type.Optional(Type.String({ minLength: 1, description: `lastEventId ${RESUME_RULE}` }))
const unnamed = Type.Optional(
  Type.String({ pattern: '^(1|true|0|false)$', description: 'unnamed must be 1 or true (every event without an "event:" line, for EventSource.onmessage), or 0 or false' }),
)
const access_token = ACCESS_TOKEN_PARAM
const STREAM_QUERY = Type.Object({ lastEventId, unnamed, access_token }, { additionalProperties: false })
const ROOM_QUERY = Type.Object(
  { room: Type.Optional(Type.String({ pattern: NAME_PATTERN, description: `room must be ${NAME_RULE} (one room per stream; leave it out to follow every room)` })), lastEventId, unnamed, access_token },
  { additionalProperties: false },
)
const COMPETITION_PARAMS = Type.Object({ id: Type.String({ pattern: NAME_PATTERN, description: `the competition id must be ${NAME_RULE}` }) })

interface StreamRequest {
  filter: StreamFilter
  resumeId: number | null
  unnamed: boolean
}

declare module 'fastify' {
  interface FastifyRequest {
    stream: StreamRequest | null
  }
}

class BadStreamRequest extends Error {}

/**
 * SSE sends `Last-Event-ID` on reconnect and keeps the URL it started with, so the header wins
 * over a `lastEventId` in the query (which polyfills and WebSocket clients use).
 */
export function resumeIdOf(req: FastifyRequest): number | null {
  const header = req.headers['last-event-id']
  const fromHeader = typeof header === 'string' && header !== ''
  const raw = fromHeader ? header : (req.query as { lastEventId?: string }).lastEventId
  if (raw === undefined) return null
  const id = Number(raw)
  if (!RESUME_ID.test(raw) || !Number.isSafeInteger(id)) {
    throw new BadStreamRequest(`${fromHeader ? 'the Last-Event-ID header' : 'lastEventId'} ${RESUME_RULE}, got ${quoted(raw)}`)
  }
  return id === 0 ? null : id
}

/** What the (already validated) path and query of a stream request follow. */
function filterOf(req: FastifyRequest, windowMs: number): StreamFilter {
  if (req.routeOptions.url === '/v1/competitions') return { kind: 'competitions', windowMs }
  if (req.routeOptions.url === '/v1/competitions/:id') return { kind: 'competition', competitionId: (req.params as { id: string }).id }
  return { kind: 'room', room: (req.query as { room?: string }).room ?? null }
}

/** The stream paths. Each path serves SSE to a plain GET and a WebSocket to an upgrade request. */
export default async function streams(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const windowMs = app.config.streams.competitionsWindowHours * 3_600_000
  const perAddress = app.config.streams.maxConnectionsPerAddress
  const open = new Map<string, number>()
  const origins = app.config.cors.origins
  app.decorateRequest('stream', null)

  // Runs after the schema checks and before any stream starts (and before a WebSocket upgrade),
  // so bad input is a plain 400.
  async function parse(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    // Browsers apply CORS to what a page reads from an EventSource, but let any page open a
    // WebSocket anywhere: upgrades are checked here. No Origin: not a browser (wscat, servers).
    const origin = req.headers.origin
    if (req.ws && origin !== undefined && !origins.includes('*') && !origins.includes(origin)) {
      return refuse(reply, 403, `WebSocket connections from origin ${JSON.stringify(origin).slice(0, 200)} are not allowed (cors.origins)`)
    }
    try {
      const flag = (req.query as { unnamed?: string }).unnamed
      req.stream = { filter: filterOf(req, windowMs), resumeId: resumeIdOf(req), unnamed: flag === '1' || flag === 'true' }
    } catch (err) {
      if (!(err instanceof BadStreamRequest)) throw err
      return refuse(reply, 400, err.message)
    }
    if (app.auth.authorize(req, reply, streamPath(req.stream.filter)) !== undefined) return
    if (perAddress > 0 && (open.get(req.ip) ?? 0) >= perAddress) {
      return refuse(reply, 429, `at most ${perAddress} streams per client address`)
    }
  }

  function follow(req: FastifyRequest, transport: Transport): void {
    const { filter, resumeId } = req.stream as StreamRequest
    if (perAddress > 0) {
      open.set(req.ip, (open.get(req.ip) ?? 0) + 1)
      transport.onClose(() => {
        const n = (open.get(req.ip) ?? 1) - 1
        if (n === 0) open.delete(req.ip)
        else open.set(req.ip, n)
      })
    }
    app.hub.subscribe(filter, transport, resumeId).catch((err: unknown) => {
      req.log.error({ err }, 'stream failed; the client will reconnect')
      transport.close('error')
    })
    app.auth.endAtExpiry(req, transport)
  }

  const paths = [
    { url: '/v1/competitions', schema: { querystring: STREAM_QUERY } },
    { url: '/v1/competitions/:id', schema: { querystring: STREAM_QUERY, params: COMPETITION_PARAMS } },
    { url: '/messages', schema: { querystring: ROOM_QUERY } },
  ]
  for (const { url, schema } of paths) {
    app.route({
      method: 'GET',
      url,
      schema,
      schemaErrorFormatter: schemaErrors(schema.querystring),
      config: { requestLogLevel: 'debug', stream: true },
      // Authentication first (401, before the query is even checked), authorization in parse (403).
      onRequest: app.auth.authenticate,
      preHandler: parse,
      handler: async (req, reply) => {
        reply.hijack()
        const { unnamed, resumeId } = req.stream as StreamRequest
        const transport = sseTransport(reply.raw, { unnamed, retryMs: app.config.streams.retryMs, position: resumeId ?? 0 })
        transport.open(reply.getHeaders(), req.method)
        // Fastify answers HEAD with this GET handler: the same head, then the end, nothing attached.
        if (req.method === 'HEAD') return void reply.raw.end()
        follow(req, transport)
      },
      wsHandler: (socket: WebSocket, req: FastifyRequest) => follow(req, new WsTransport(socket)),
    })
  }
}
