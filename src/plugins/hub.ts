import fp from 'fastify-plugin'
import { closeStep } from '../bounded.js'
import { Hub } from '../hub/hub.js'

declare module 'fastify' {
  interface FastifyInstance {
    hub: Hub
  }
}

/** The process's one follower of the store (`app.hub`). On close it tells every client to reconnect. */
export default fp(
  async (app) => {
    const s = app.config.streams
    const budget = app.budget
    const hub = new Hub(app.store, {
      heartbeatMs: s.heartbeatSeconds * 1000,
      frameCacheBytes: budget.limit('frames'),
      // The embedded store's ring already bounds what it keeps: its history holds no more.
      history: {
        maxBytes: Math.min(s.historyMaxBytes, budget.limit('history')),
        maxEvents: app.store.kind === 'memory' ? Math.min(s.historyMaxEvents, app.config.store.capacity) : s.historyMaxEvents,
      },
      replayPageSize: s.replayPageSize,
      replayPageBytes: s.replayPageBytes,
      liveWaitMs: s.liveWaitMs,
      maxPendingEvents: s.maxPendingEvents,
      maxBufferedBytes: s.maxBufferedBytes,
      drainTimeoutMs: s.drainTimeoutSeconds * 1000,
      log: app.log,
    })
    budget.track('history', () => hub.history.bytes)
    budget.track('frames', () => hub.frames.bytes)
    budget.track('clients', () => hub.bufferedBytes())
    await hub.start()
    app.decorate('hub', hub)
    // preClose: streams must end before the HTTP server waits for its connections to close.
    app.addHook('preClose', () => closeStep(app.log, 'the hub (clients told to reconnect, tail)', () => hub.close()))
  },
  { name: 'hub', dependencies: ['store'] },
)
