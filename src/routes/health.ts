import type { FastifyInstance } from 'fastify'

/** Liveness and readiness for load balancers and orchestrators. */
export default async function health(app: FastifyInstance): Promise<void> {
  // pid: which process answered, for operators running several workers on one port.
  app.get('/health', async () => ({ status: 'ok', pid: process.pid }))

  app.get('/ready', async (_req, reply) => {
    try {
      await app.store.ping()
      // A relay that stopped relaying for good (see plugins/upstream.ts) is not ready.
      if (app.upstream?.stopped) return reply.code(503).send({ status: 'not ready', store: 'ok', upstream: app.upstream.stopped })
      if (app.upstream) return { status: 'ready', store: 'ok', upstream: app.upstream.connected ? 'connected' : 'reconnecting' }
      return { status: 'ready', store: 'ok' }
    } catch (err) {
      return reply.code(503).send({ status: 'not ready', store: (err as Error).message })
    }
  })
}
