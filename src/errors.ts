import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify'
import type { SchemaErrorDataVar, SchemaErrorFormatter } from 'fastify/types/schema.js'
import { redactUrl } from './config.js'
import { quoted } from './event.js'

/**
 * The one error shape of every HTTP answer that is not a success: routes, schema validation,
 * Fastify's own errors (body too large, bad URL), 404/405, and what Node's HTTP parser refuses
 * (408, 431, 400). A 5xx adds the request id to quote.
 */
export interface ErrorBody {
  statusCode: number
  error: string
  message: string
  requestId?: string
}

export function errorBody(statusCode: number, message: string): ErrorBody {
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', message }
}

/** Requests whose refusal is logged ("request refused"): that line is their one line. */
export const refused = new WeakSet<FastifyRequest>()

/**
 * Answer a 4xx with the one error shape. Logged at info with the reason and the path (credentials
 * in the query hidden), without a stack: it is the client's mistake, told to the client.
 */
export function refuse(reply: FastifyReply, statusCode: number, message: string): FastifyReply {
  const req = reply.request
  refused.add(req)
  req.log.info({ statusCode, reason: message, method: req.method, url: redactUrl(req.url) }, 'request refused')
  return reply.code(statusCode).send(errorBody(statusCode, message))
}

/** What Fastify's own 4xx errors say, in words that tell the client what to change. */
function clientMessage(err: FastifyError, req: FastifyRequest): string {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return `the body is larger than ${req.routeOptions.bodyLimit ?? 'the limit of'} bytes (bodyLimit): nothing was stored`
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return 'the body is not as long as its Content-Length header says'
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'send a JSON body with content-type: application/json'
    case 'FST_ERR_BAD_URL':
      return `the URL is not valid: "%" must start a percent-encoded UTF-8 sequence (got ${JSON.stringify(req.url.split('?')[0].slice(0, 200))})`
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return 'a path segment is longer than 512 characters'
  }
  return err.message
}

/** A 503 with the one error shape, the request id to quote (a 5xx), and when to retry if known. */
export function unavailable(reply: FastifyReply, message: string, retryAfterSeconds?: number): FastifyReply {
  if (retryAfterSeconds !== undefined) void reply.header('retry-after', String(retryAfterSeconds))
  return reply.code(503).send({ ...errorBody(503, message), requestId: reply.request.id })
}

/**
 * The error handler (also for Fastify's framework errors). A 4xx is the client's to read: its
 * message, logged at info without a stack. A 5xx can carry internals (a store's source positions,
 * addresses): the client gets the request id to quote, the log the details. Fastify's `code`
 * (FST_ERR_…) and `validation` fields are never sent.
 */
export function sendError(err: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const code = err.statusCode ?? (err as { status?: unknown }).status
  const statusCode = typeof code === 'number' && code >= 400 && code <= 599 ? code : 500
  if (statusCode < 500) return refuse(reply, statusCode, clientMessage(err, req))
  req.log.error({ err }, 'request failed')
  return reply.code(statusCode).send({ ...errorBody(statusCode, `internal error (request id ${req.id}); see the server log`), requestId: req.id })
}

/** Ajv's error with what `verbose: true` adds: the value that failed and the schema holding the rule. */
type VerboseError = FastifySchemaValidationError & { data?: unknown; parentSchema?: { description?: string } }

/**
 * A route's schemaErrorFormatter: the first schema error as one sentence a person understands.
 * A rule is stated by the `description` of the schema it is in; unknown and empty query
 * parameters are answered with the list of those the route takes (from its querystring schema).
 */
export function schemaErrors(querystring?: { properties?: Record<string, unknown> }): SchemaErrorFormatter {
  const names = Object.keys(querystring?.properties ?? {})
  const takes = names.length === 0 ? 'this path takes no query parameters' : `this path takes: ${names.join(', ')}`
  return (errors: FastifySchemaValidationError[], dataVar: SchemaErrorDataVar): Error => {
    const e = errors[0] as VerboseError
    const name = e.instancePath.slice(1).replaceAll('/', '.')
    const what = dataVar === 'querystring' ? `query parameter "${name}"` : dataVar === 'params' ? `path parameter "${name}"` : name
    if (e.keyword === 'additionalProperties') {
      const unknown = String((e.params as { additionalProperty?: unknown }).additionalProperty)
      return new Error(dataVar === 'querystring' ? `unknown query parameter "${unknown.slice(0, 60)}": ${takes}` : `unknown field "${unknown.slice(0, 60)}"`)
    }
    if (e.keyword === 'required') {
      const missing = String((e.params as { missingProperty?: unknown }).missingProperty)
      const rule = (querystring?.properties?.[missing] as { description?: string } | undefined)?.description
      const named = dataVar === 'querystring' ? `query parameter "${missing}"` : dataVar === 'params' ? `path parameter "${missing}"` : `field "${missing}"`
      return new Error(`${named} is missing${rule === undefined ? '' : `: ${rule}`}`)
    }
    if (e.data === '') return new Error(`${what} is empty: give it a value or leave it out (${takes})`)
    if (Array.isArray(e.data)) return new Error(`${what} is given ${e.data.length} times: give it once`)
    const rule = e.parentSchema?.description
    if (rule !== undefined) return new Error(`${rule}, got ${quoted(e.data)}`)
    return new Error(`${what} ${e.message ?? 'is not valid'}`)
  }
}

/** The parts of a route's schema that requests are validated against. */
export interface RouteSchema {
  querystring?: unknown
  params?: unknown
  body?: unknown
}

/**
 * 404 for a path no route serves, 405 (with `Allow`) for a path served under other methods. The
 * route table is filled by an onRoute hook; the message quotes the path without its query, which
 * may hold a token.
 */
export class RouteTable {
  private readonly routes: { pattern: RegExp; methods: Set<string> }[] = []
  /** Every route with a schema, as added: what a test walks to see each schema error in words. */
  readonly schemas: { url: string; methods: string[]; schema: RouteSchema }[] = []

  add(url: string, methods: string | string[], schema?: RouteSchema): void {
    if (schema !== undefined) this.schemas.push({ url, methods: Array.isArray(methods) ? methods : [methods], schema })
    if (url.includes('*')) return
    const source = url
      .split('/')
      .map((part) => (part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/')
    let route = this.routes.find((r) => r.pattern.source === `^${source}$`)
    if (route === undefined) this.routes.push((route = { pattern: new RegExp(`^${source}$`), methods: new Set() }))
    for (const m of Array.isArray(methods) ? methods : [methods]) route.methods.add(m)
  }

  notFound = (req: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const path = req.url.split('?')[0]
    const allowed = new Set<string>()
    for (const r of this.routes) if (r.pattern.test(path)) for (const m of r.methods) allowed.add(m)
    if (allowed.size === 0) return refuse(reply, 404, `nothing is served at ${path.slice(0, 200)}`)
    const list = [...allowed].sort()
    reply.header('allow', list.join(', '))
    return refuse(reply, 405, `${req.method} is not allowed on ${path.slice(0, 200)}: use ${list.join(' or ')}`)
  }
}

/**
 * Requests Node's HTTP parser refuses before Fastify sees them: 408 (not complete within
 * requestTimeoutSeconds), 431 (headers too large), 400 (not HTTP). Logged at debug: a flood of
 * them is a client's business, not the operator's.
 */
export function clientErrorHandler(requestTimeoutSeconds: number) {
  return function (this: FastifyInstance, err: Error & { code?: string }, socket: Socket): void {
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    const [statusCode, message] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, `the request (headers and body) was not complete within ${requestTimeoutSeconds} s (requestTimeoutSeconds)`]
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'the request headers are too large']
          : [400, 'the request is not valid HTTP/1.1']
    this.log.debug({ statusCode, code: err.code, remoteAddress: socket.remoteAddress }, 'client error')
    if (socket.writable) {
      const body = JSON.stringify(errorBody(statusCode, message))
      socket.write(`HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    }
    socket.destroy()
  }
}
