import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { SseTransport } from '../hub/sse-transport.js'
import type { Transport } from '../hub/transport.js'
import { WsTransport } from '../hub/ws-transport.js'
import type { StreamFilter } from '../stream.js'

/** Resume ids are positive integers as decimal text; "0" means "from the start". */
const RESUME_ID = /^(0|[1-9][0-9]{0,15})$/
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/

interface StreamRequest {
  filter: StreamFilter
  resumeId: number | null
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
  const query = (req.query as Record<string, unknown>).lastEventId
  const raw = typeof header === 'string' && header !== '' ? header : query
  if (raw === undefined || raw === '') return null
  if (typeof raw !== 'string' || !RESUME_ID.test(raw)) {
    throw new BadStreamRequest(`lastEventId must be a positive integer as decimal text (at most 16 digits), got ${JSON.stringify(raw).slice(0, 60)}`)
  }
  const id = Number(raw)
  if (!Number.isSafeInteger(id)) throw new BadStreamRequest('lastEventId is out of range')
  return id === 0 ? null : id
}

function filterOf(req: FastifyRequest, windowMs: number): StreamFilter {
  const params = req.params as Record<string, string | undefined>
  const query = req.query as Record<string, unknown>
  if (req.routeOptions.url === '/v1/competitions') return { kind: 'competitions', windowMs }
  if (req.routeOptions.url === '/v1/competitions/:id') {
    const id = params.id ?? ''
    if (!NAME.test(id)) throw new BadStreamRequest('the competition id must be 1-128 letters, digits or "_.:-"')
    return { kind: 'competition', competitionId: id }
  }
  const room = query.room
  if (room === undefined || room === '') return { kind: 'room', room: null }
  if (typeof room !== 'string' || !NAME.test(room)) throw new BadStreamRequest('room must be 1-128 letters, digits or "_.:-" (one room per stream)')
  return { kind: 'room', room }
}

/** The stream paths. Each path serves SSE to a plain GET and a WebSocket to an upgrade request. */
export default async function streams(app: FastifyInstance): Promise<void> {
  const windowMs = app.config.streams.competitionsWindowHours * 3_600_000
  const perAddress = app.config.streams.maxConnectionsPerAddress
  const open = new Map<string, number>()
  const origins = app.config.cors.origins
  app.decorateRequest('stream', null)

  // Runs before any stream starts (and before a WebSocket upgrade), so bad input is a plain 400.
  async function parse(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    // Browsers apply CORS to what a page reads from an EventSource, but let any page open a
    // WebSocket anywhere: upgrades are checked here. No Origin: not a browser (wscat, servers).
    const origin = req.headers.origin
    if (req.ws && origin !== undefined && !origins.includes('*') && !origins.includes(origin)) {
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: `WebSocket connections from origin ${JSON.stringify(origin).slice(0, 200)} are not allowed (cors.origins)` })
    }
    try {
      req.stream = { filter: filterOf(req, windowMs), resumeId: resumeIdOf(req) }
    } catch (err) {
      if (!(err instanceof BadStreamRequest)) throw err
      return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: err.message })
    }
    if (perAddress > 0 && (open.get(req.ip) ?? 0) >= perAddress) {
      return reply.code(429).send({ statusCode: 429, error: 'Too Many Requests', message: `at most ${perAddress} streams per client address` })
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
  }

  for (const url of ['/v1/competitions', '/v1/competitions/:id', '/messages']) {
    app.route({
      method: 'GET',
      url,
      preValidation: parse,
      handler: async (req, reply) => {
        reply.hijack()
        const transport = new SseTransport(reply.raw)
        transport.open(reply.getHeaders(), app.config.streams.retryMs)
        // Fastify answers HEAD with this GET handler: the same head (node drops the body of a HEAD
        // response, and adds no content-length), then the end, nothing attached.
        if (req.method === 'HEAD') return void reply.raw.end()
        follow(req, transport)
      },
      wsHandler: (socket: WebSocket, req: FastifyRequest) => follow(req, new WsTransport(socket)),
    })
  }
}
