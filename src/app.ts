import cors from '@fastify/cors'
import websocket from '@fastify/websocket'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Config } from './config.js'
import type { EventStore } from './store/event-store.js'
import configPlugin from './plugins/config.js'
import hubPlugin from './plugins/hub.js'
import ingestPlugin from './plugins/ingest.js'
import natsPlugin from './plugins/nats.js'
import storePlugin from './plugins/store.js'
import healthRoutes from './routes/health.js'
import messagesRoutes from './routes/messages.js'
import streamsRoutes from './routes/streams.js'

export interface AppOptions {
  /** A pino destination or `false`; defaults to stdout at config.logLevel. */
  logger?: boolean | object
  /** Serve from this store instead of creating one from the config; the caller closes it. */
  store?: EventStore
}

/** The whole server, ready to `listen`: external plugins, then app plugins, then routes. */
export async function buildApp(config: Config, opts: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? { level: config.logLevel, redact: ['req.headers.authorization'] },
    bodyLimit: config.bodyLimit,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  })

  const origins = config.cors.origins
  await app.register(cors, {
    origin: origins.includes('*') ? '*' : origins,
    methods: config.cors.methods,
    allowedHeaders: config.cors.headers,
  })
  await app.register(websocket, { options: { maxPayload: 64 * 1024, perMessageDeflate: false } })

  await app.register(configPlugin, { config })
  await app.register(storePlugin, { store: opts.store })
  await app.register(hubPlugin)
  await app.register(natsPlugin)
  await app.register(ingestPlugin)

  await app.register(healthRoutes)
  await app.register(streamsRoutes)
  await app.register(messagesRoutes)
  return app
}
