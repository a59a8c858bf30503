import type { FastifyInstance } from 'fastify'

/** Liveness and readiness for load balancers and orchestrators. */
export default async function health(app: FastifyInstance): Promise<void> {
  app.get('/health', async () => ({ status: 'ok' }))

  app.get('/ready', async (_req, reply) => {
    const nats = app.nats === null ? undefined : app.nats.state
    try {
      await app.store.ping()
    } catch (err) {
      return reply.code(503).send({ status: 'not ready', store: (err as Error).message, nats })
    }
    if (nats !== undefined && !nats.connected) return reply.code(503).send({ status: 'not ready', store: 'ok', nats })
    return { status: 'ready', store: 'ok', nats }
  })
}
