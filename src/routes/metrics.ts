import type { FastifyInstance } from 'fastify'

/** Prometheus scrape endpoint. */
export default async function metrics(app: FastifyInstance): Promise<void> {
  // Scraped every few seconds: its per-request log lines are debug.
  app.get('/metrics', { config: { requestLogLevel: 'debug' } }, async (_req, reply) => {
    const text = await app.metrics.registry.metrics()
    return reply.type(app.metrics.registry.contentType).send(text)
  })
}
