import fp from 'fastify-plugin'
import type { EventStore } from '../store/event-store.js'
import { createStore } from '../store/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: EventStore
  }
}

/** Opens the configured EventStore (`app.store`) and closes it last. */
export default fp(
  async (app) => {
    const store = await createStore(app.config)
    await store.open()
    app.decorate('store', store)
    app.addHook('onClose', async () => store.close())
  },
  { name: 'store', dependencies: ['config'] },
)
