import type { ListenOptions, Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.js'
import type { Config } from './config.js'
import { logBanner } from './startup.js'

/** Build, listen, and shut down gracefully on SIGTERM / SIGINT. `listen`: how to bind (see cluster.ts). */
export async function serve(config: Config, listen: Pick<ListenOptions, 'reusePort' | 'exclusive'> = {}): Promise<FastifyInstance> {
  const app = await buildApp(config)
  // Every socket, upgraded WebSockets included (the HTTP server stops tracking those).
  const sockets = new Set<Socket>()
  app.server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  // A deploy or a load-balancer flip reconnects every client at once: a deep accept queue (the
  // kernel caps it at net.core.somaxconn) takes that storm instead of resetting connections.
  await app.listen({ port: config.port, host: config.host, backlog: 4096, ...listen })
  logBanner(app, config)
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    app.log.info({ signal }, 'shutting down: clients are told to reconnect')
    setTimeout(() => {
      app.log.error('shutdown deadline passed; exiting')
      process.exit(1)
    }, config.shutdownTimeoutSeconds * 1000).unref()
    // Clients were told to reconnect at once; a connection still open after a few seconds (a
    // client that ignores the close, a request stuck on an unreachable NATS) must not hold the exit.
    setTimeout(() => {
      for (const socket of sockets) socket.destroy()
    }, 3000).unref()
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, 'error during shutdown')
        process.exit(1)
      },
    )
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  return app
}
