import type { FastifyInstance } from 'fastify'

/** Prometheus scrape endpoint. */
export default async function metrics(app: FastifyInstance): Promise<void> {
  app.get('/metrics', async (_req, reply) => {
    const text = await app.metrics.registry.metrics()
    return reply.type(app.metrics.registry.contentType).send(text)
  })
}
