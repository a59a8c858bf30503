import { STATUS_CODES } from 'node:http'
import cors from '@fastify/cors'
import websocket from '@fastify/websocket'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { redactUrl, type Config } from './config.js'
import { WS_CLOSE } from './hub/ws-transport.js'
import type { EventStore } from './store/event-store.js'
import configPlugin from './plugins/config.js'
import hubPlugin from './plugins/hub.js'
import ingestPlugin from './plugins/ingest.js'
import metricsPlugin from './plugins/metrics.js'
import natsPlugin from './plugins/nats.js'
import storePlugin from './plugins/store.js'
import upstreamPlugin from './plugins/upstream.js'
import healthRoutes from './routes/health.js'
import messagesRoutes from './routes/messages.js'
import metricsRoutes from './routes/metrics.js'
import streamsRoutes from './routes/streams.js'
import webRoutes from './routes/web.js'

export interface AppOptions {
  /** Where log lines go (JSON, at config.logLevel); default stdout. */
  logStream?: { write(line: string): void }
  /** Serve from this store instead of creating one from the config; the caller closes it. */
  store?: EventStore
}

/** A request as logged: Fastify's fields, with credentials in the query (`?access_token=`) hidden. */
function logRequest(req: FastifyRequest): Record<string, unknown> {
  return { method: req.method, url: redactUrl(req.url), host: req.host, remoteAddress: req.ip, remotePort: req.socket?.remotePort }
}

/**
 * Errors thrown by routes and by Fastify itself, in the one error shape. A 4xx is the client's to
 * read: its message as is, logged without a stack. A 5xx can carry internals (a store's source
 * positions, addresses): the client gets the request id to quote, the log the details.
 */
function sendError(err: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const code = err.statusCode ?? (err as { status?: unknown }).status
  const statusCode = typeof code === 'number' && code >= 400 && code <= 599 ? code : 500
  const error = STATUS_CODES[statusCode] ?? 'Error'
  if (statusCode < 500) {
    req.log.info({ statusCode, reason: err.message }, 'request refused')
    return reply.code(statusCode).send({ statusCode, error, message: err.message })
  }
  req.log.error({ err }, 'request failed')
  return reply.code(statusCode).send({ statusCode, error, message: `internal error (request id ${req.id}); see the server log`, requestId: req.id })
}

/** The whole server, ready to `listen`: external plugins, then app plugins, then routes. */
export async function buildApp(config: Config, opts: AppOptions = {}): Promise<FastifyInstance> {
  const requestTimeout = Math.round(config.requestTimeoutSeconds * 1000)
  const app = Fastify({
    // Receiving a request (headers and body) may take this long; a stream is not cut: its GET is
    // in once it starts, and an upgraded WebSocket leaves the HTTP server's checks. Node checks
    // every connectionsCheckingInterval (30 s by default) and wants headersTimeout <= requestTimeout.
    requestTimeout,
    http: { headersTimeout: Math.min(60_000, requestTimeout), connectionsCheckingInterval: Math.min(5000, Math.ceil(requestTimeout / 4)) },
    logger: {
      level: config.logLevel,
      redact: ['req.headers.authorization', 'req.headers.cookie'],
      serializers: { req: logRequest },
      ...(opts.logStream === undefined ? {} : { stream: opts.logStream }),
    },
    bodyLimit: config.bodyLimit,
    // Opening a store, its indexes and the newest-id read can take seconds on a large FerretDB
    // collection (a scan); Fastify's default of 10 s per plugin would stop the start.
    pluginTimeout: 60_000,
    return503OnClosing: true,
    // Long competition ids get a 400 that says why, rather than the router's 404.
    routerOptions: { maxParamLength: 512 },
    forceCloseConnections: 'idle',
  })

  // First: a route keeps the error handler in place when it is added.
  app.setErrorHandler(sendError)
  // Fastify's own 404 quotes and logs the URL with its query, which may hold a token.
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0]
    reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `Route ${req.method}:${path} not found` })
  })

  const origins = config.cors.origins
  await app.register(cors, {
    origin: origins.includes('*') ? '*' : origins,
    methods: config.cors.methods,
    allowedHeaders: config.cors.headers,
  })
  await app.register(websocket, {
    options: { maxPayload: 64 * 1024, perMessageDeflate: false },
    // The plugin's own preClose closes sockets without a code (clients must see 1012, reconnect)
    // and waits until no client is left, which clients that reconnect at once can keep from ever
    // happening. Here: 1012 to every client, no new upgrades (503), and no waiting.
    preClose(this: FastifyInstance, done: () => void) {
      for (const client of this.websocketServer.clients) client.close(WS_CLOSE.shutdown.code, WS_CLOSE.shutdown.reason)
      this.websocketServer.close()
      done()
    },
  })

  await app.register(configPlugin, { config })
  await app.register(storePlugin, { store: opts.store })
  await app.register(hubPlugin)
  await app.register(natsPlugin)
  await app.register(ingestPlugin)
  await app.register(metricsPlugin)
  await app.register(upstreamPlugin)

  await app.register(healthRoutes)
  await app.register(streamsRoutes)
  await app.register(messagesRoutes)
  await app.register(metricsRoutes)
  await app.register(webRoutes)
  return app
}
