import type { FastifyInstance } from 'fastify'
import { redactUrl } from '../config.js'
import { upstreamProblem } from '../plugins/upstream.js'

/** Liveness and readiness for load balancers and orchestrators. */
export default async function health(app: FastifyInstance): Promise<void> {
  // pid: which process answered, for operators running several workers on one port; node: the
  // runtime it runs on (the project pins one, see README "Runtime").
  // Polled by load balancers and orchestrators: their per-request log lines are debug.
  const quiet = { config: { requestLogLevel: 'debug' as const } }
  app.get('/health', quiet, async () => ({ status: 'ok', pid: process.pid, node: process.version }))

  /** 200 when the store answers and every configured source (NATS, an upstream) is usable; else 503 saying which is not. */
  app.get('/ready', quiet, async (_req, reply) => {
    // Stopping (SIGTERM): no longer chosen, whatever else holds (src/shutdown.ts).
    if (app.shutdown.stopping) return reply.code(503).send({ status: 'stopping' })
    const nats = app.nats === null ? undefined : app.nats.state
    const upstreamDown = app.upstream ? upstreamProblem(app.upstream) : null
    const upstream = app.upstream === null || app.upstream === undefined ? undefined : upstreamDown ?? (app.upstream.connected ? 'connected' : 'reconnecting')
    try {
      await app.store.ping()
    } catch (err) {
      // For an operator (e.g. "connect ECONNREFUSED 10.0.0.5:27017"), so without credentials.
      return reply.code(503).send({ status: 'not ready', store: redactUrl(String((err as Error).message)).slice(0, 200), nats, upstream })
    }
    // Until the history is warm every replay reads the store: a storm of resumes sent here now
    // would cost one store query per client.
    if (!app.hub.history.isWarm) return reply.code(503).send({ status: 'not ready', store: 'ok', history: 'warming', nats, upstream })
    // A relay that does not follow its upstream (see plugins/upstream.ts), or a NATS writer whose
    // batches keep failing (the store refuses writes, the lease keeps slipping), is not ready.
    if ((nats !== undefined && (!nats.connected || (nats.writer && nats.writerFailures >= 3))) || upstreamDown !== null) {
      return reply.code(503).send({ status: 'not ready', store: 'ok', nats, upstream })
    }
    return { status: 'ready', store: 'ok', nats, upstream }
  })
}
