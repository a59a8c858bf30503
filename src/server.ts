import type { ListenOptions } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.js'
import type { Config } from './config.js'
import { logBanner } from './startup.js'

/** Build, listen, and shut down gracefully on SIGTERM / SIGINT. `listen`: how to bind (see cluster.ts). */
export async function serve(config: Config, listen: Pick<ListenOptions, 'reusePort' | 'exclusive'> = {}): Promise<FastifyInstance> {
  const app = await buildApp(config)
  // A deploy or a load-balancer flip reconnects every client at once: a deep accept queue (the
  // kernel caps it at net.core.somaxconn) takes that storm instead of resetting connections.
  await app.listen({ port: config.port, host: config.host, backlog: 4096, ...listen })
  logBanner(app, config)
  let stopping = false
  /**
   * The order that lets a rolling restart refuse nothing (README "Rolling restart"): stop being
   * chosen and accepting, answer every request in flight (src/shutdown.ts), then end the streams
   * with a reconnect hint, then close NATS and the store (the plugins' close hooks, in that order).
   */
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return
    stopping = true
    setTimeout(() => {
      app.log.error('shutdown deadline passed; exiting')
      process.exit(1)
    }, config.shutdownTimeoutSeconds * 1000).unref()
    app.log.info({ signal }, 'shutting down: /ready answers 503, no new connections; answering the requests in flight')
    const drained = await app.shutdown.drain(config.shutdownDrainSeconds * 1000)
    if (drained.left === 0) app.log.info({ elapsedMs: drained.elapsedMs }, 'shutdown: requests in flight answered; ending the streams (clients told to reconnect)')
    else app.log.warn({ elapsedMs: drained.elapsedMs, connections: drained.left }, 'shutdown: connections still open after shutdownDrainSeconds; closing them and ending the streams')
    // Clients were told to reconnect at once; a connection still open after a few seconds (a
    // client that ignores the close, a request stuck on an unreachable NATS) must not hold the exit.
    setTimeout(() => {
      for (const socket of app.shutdown.openSockets()) socket.destroy()
    }, 3000).unref()
    try {
      await app.close()
    } catch (err) {
      app.log.error({ err }, 'error during shutdown')
      process.exit(1)
    }
    app.log.info('shutdown: done')
    // The log is written asynchronously: exiting with a write in flight printed its line after
    // the ones buffered behind it (seen on a busy machine: "shutting down" after "shutdown: done").
    // (Bounded by the shutdown deadline above.)
    const log = app.log as { flush?: (cb: () => void) => void }
    await new Promise<void>((resolve) => (log.flush === undefined ? resolve() : log.flush(() => resolve())))
    process.exit(0)
  }
  process.once('SIGTERM', () => void stop('SIGTERM'))
  process.once('SIGINT', () => void stop('SIGINT'))
  return app
}
