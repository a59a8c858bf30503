import fp from 'fastify-plugin'
import { closeStep } from '../bounded.js'
import type { EventStore } from '../store/event-store.js'
import { createStore } from '../store/index.js'
import { serviceError } from '../startup.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: EventStore
  }
}

/** Opens the configured EventStore (`app.store`) and closes it last, unless it was handed in. */
export default fp<{ store?: EventStore }>(
  async (app, opts) => {
    if (opts.store !== undefined) {
      app.decorate('store', opts.store)
      return
    }
    const store = await createStore(app.config)
    try {
      await store.open()
    } catch (err) {
      const { type, mongodb } = app.config.store
      throw type === 'mongodb' ? serviceError('MongoDB', mongodb.url, 'store.mongodb.url', err) : err
    }
    app.decorate('store', store)
    app.addHook('onClose', () => closeStep(app.log, 'the store', () => store.close()))
  },
  { name: 'store', dependencies: ['config'] },
)
