import fp from 'fastify-plugin'
import { closeStep } from '../bounded.js'
import { MemoryBudget } from '../budget.js'
import type { EventStore } from '../store/event-store.js'
import { createStore } from '../store/index.js'
import { MemoryEventStore } from '../store/memory-store.js'
import { serviceError } from '../startup.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: EventStore
    /** The process's memory budget, shared by the store, the hub's history and frames, and clients' buffers. */
    budget: MemoryBudget
  }
}

/**
 * Opens the configured EventStore (`app.store`) and closes it last, unless it was handed in; and the
 * memory budget (`app.budget`) it and the hub share.
 */
export default fp<{ store?: EventStore }>(
  async (app, opts) => {
    const budget = new MemoryBudget(app.config.memory.budgetBytes)
    app.decorate('budget', budget)
    if (opts.store !== undefined) {
      app.decorate('store', opts.store)
      return
    }
    const store = await createStore(app.config, budget)
    try {
      await store.open()
    } catch (err) {
      const { type, mongodb } = app.config.store
      throw type === 'mongodb' ? serviceError('MongoDB', mongodb.url, 'store.mongodb.url', err) : err
    }
    app.decorate('store', store)
    if (store instanceof MemoryEventStore) budget.track('store', () => store.bytes)
    app.addHook('onClose', () => closeStep(app.log, 'the store', () => store.close()))
  },
  { name: 'store', dependencies: ['config'] },
)
