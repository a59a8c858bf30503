import cors from '@fastify/cors'
import websocket from '@fastify/websocket'
import type { Http2SecureServer } from 'node:http2'
import Fastify, { LogController, type FastifyHttp2SecureOptions, type FastifyInstance, type FastifyServerOptions, type FastifyReply, type FastifyRequest } from 'fastify'
import { redactUrl, type Config } from './config.js'
import { shutdownPlugin } from './shutdown.js'
import { clientErrorHandler, refused, RouteTable, sendError } from './errors.js'
import { WS_CLOSE } from './hub/ws-transport.js'
import { tlsOptions } from './tls.js'
import type { EventStore } from './store/event-store.js'
import authPlugin from './plugins/auth.js'
import configPlugin from './plugins/config.js'
import hubPlugin from './plugins/hub.js'
import ingestPlugin from './plugins/ingest.js'
import metricsPlugin from './plugins/metrics.js'
import natsPlugin from './plugins/nats.js'
import presencePlugin from './plugins/presence.js'
import storePlugin from './plugins/store.js'
import upstreamPlugin from './plugins/upstream.js'
import healthRoutes from './routes/health.js'
import messagesRoutes from './routes/messages.js'
import metricsRoutes from './routes/metrics.js'
import presenceRoutes from './routes/presence.js'
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
  const peer = req.socket?.remoteAddress
  // Behind a trusted proxy (trustProxy) req.ip is the client's address; the proxy's is logged beside it.
  return { method: req.method, url: redactUrl(req.url), host: req.host, remoteAddress: req.ip, remotePort: req.socket?.remotePort, ...(peer !== undefined && peer !== req.ip ? { proxyAddress: peer } : {}) }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The routes served, with their schemas (404/405 answers, tests). */
    routeTable: RouteTable
  }
  interface FastifyContextConfig {
    /** The level of this route's per-request lines ("incoming request", "request completed"); default info. */
    requestLogLevel?: 'debug' | 'info'
  }
}

/**
 * One line per request at most, at the level the route asks for: streams, health, readiness and
 * metrics are polled or held open by many clients and say `debug`, so `info` keeps lifecycle,
 * posts and errors readable. "incoming request" is `debug` everywhere; a refused request's line is
 * its "request refused" (errors.ts), so it gets no "request completed" besides.
 */
class RequestLog extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request')
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else if (refused.has(request)) reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed')
    else reply.log[request.routeOptions?.config?.requestLogLevel ?? 'info']({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }
}

/** The whole server, ready to `listen`: external plugins, then app plugins, then routes. */
export async function buildApp(config: Config, opts: AppOptions = {}): Promise<FastifyInstance> {
  const requestTimeout = Math.round(config.requestTimeoutSeconds * 1000)
  const options = {
    // Receiving a request (headers and body) may take this long; a stream is not cut: its GET is
    // in once it starts, and an upgraded WebSocket leaves the HTTP server's checks. Node checks
    // every connectionsCheckingInterval (30 s by default) and wants headersTimeout <= requestTimeout.
    requestTimeout,
    logController: new RequestLog(),
    logger: {
      level: config.logLevel,
      redact: ['req.headers.authorization', 'req.headers.cookie'],
      serializers: { req: logRequest },
      ...(opts.logStream === undefined ? {} : { stream: opts.logStream }),
    },
    bodyLimit: config.bodyLimit,
    // X-Forwarded-For is believed only from these peers (req.ip: the per-address cap, logs).
    trustProxy: config.trustProxy.length === 0 ? false : config.trustProxy,
    // Opening a store, its indexes and the newest-id read can take seconds on a large FerretDB
    // collection (a scan); Fastify's default of 10 s per plugin would stop the start.
    pluginTimeout: 60_000,
    return503OnClosing: true,
    // Long competition ids get a 400 that says why, rather than the router's 404.
    routerOptions: { maxParamLength: 512 },
    forceCloseConnections: 'idle' as const,
    // Unknown query parameters are refused (additionalProperties: false), not silently removed;
    // verbose: a schema error carries the value and the schema whose description states the rule.
    ajv: { customOptions: { removeAdditional: false, verbose: true } },
    frameworkErrors: sendError,
    clientErrorHandler: clientErrorHandler(config.requestTimeoutSeconds),
  } satisfies FastifyServerOptions
  const http = { headersTimeout: Math.min(60_000, requestTimeout), connectionsCheckingInterval: Math.min(5000, Math.ceil(requestTimeout / 4)) }
  const tls = tlsOptions(config)
  // With tls.cert/tls.key: HTTPS, HTTP/2 and HTTP/1.1 on one port (tls.ts). The instance is typed
  // as the plain HTTP one everywhere: the routes use what both protocols' requests and replies
  // share, and the SSE transport picks its writer by the response it gets (sse-transport.ts).
  const app = (tls === null ? Fastify({ ...options, http }) : Fastify({ ...options, http2: true, https: tls } as unknown as FastifyHttp2SecureOptions<Http2SecureServer>)) as unknown as FastifyInstance
  // The HTTP/1.1 connections of the TLS port get the same receive deadlines (node checks them there
  // too; Fastify passes its `http` options to a plain server only).
  if (tls !== null) Object.assign(app.server, { requestTimeout, ...http })

  // Before any route: its onRequest hook marks the stream routes' connections.
  shutdownPlugin(app)
  // First: a route keeps the error handler in place when it is added.
  app.setErrorHandler(sendError)
  const routes = new RouteTable()
  app.decorate('routeTable', routes)
  app.addHook('onRoute', (route) => routes.add(route.url, route.method, route.schema))
  // Fastify's own 404 quotes and logs the URL with its query, which may hold a token.
  app.setNotFoundHandler(routes.notFound)

  const origins = config.cors.origins
  await app.register(cors, {
    origin: origins.includes('*') ? '*' : origins,
    methods: config.cors.methods,
    allowedHeaders: config.cors.headers,
    exposedHeaders: config.cors.exposedHeaders,
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
  await app.register(authPlugin)
  await app.register(storePlugin, { store: opts.store })
  await app.register(hubPlugin)
  await app.register(natsPlugin)
  await app.register(ingestPlugin)
  await app.register(presencePlugin)
  await app.register(metricsPlugin)
  await app.register(upstreamPlugin)

  await app.register(healthRoutes)
  await app.register(streamsRoutes)
  await app.register(messagesRoutes)
  await app.register(metricsRoutes)
  await app.register(presenceRoutes)
  await app.register(webRoutes)
  return app
}
