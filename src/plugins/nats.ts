import fp from 'fastify-plugin'
import { closeStep } from '../bounded.js'
import { NatsIngest } from '../ingest/nats-ingest.js'
import { serviceError } from '../startup.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** NATS JetStream ingest (`state` for /ready and /metrics), or null when nats.url is empty. */
    nats: NatsIngest | null
  }
}

/** Connects to NATS when configured, ensures the streams, and competes for the writer lease. */
export default fp(
  async (app) => {
    if (app.config.nats.url === '') {
      app.decorate('nats', null)
      return
    }
    const nats = new NatsIngest(app.config.nats, app.store, app.log, app.config.store.timeoutMs)
    try {
      await nats.start()
    } catch (err) {
      throw serviceError('NATS', app.config.nats.url, 'nats.url', err)
    }
    app.decorate('nats', nats)
    app.budget.track('ingest', () => nats.heldBytes)
    // preClose: stop writing and hand the lease over before the store closes.
    app.addHook('preClose', () => closeStep(app.log, 'NATS', () => nats.close()))
  },
  { name: 'nats', dependencies: ['store'] },
)
