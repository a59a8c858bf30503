import type { MemoryBudget } from '../budget.js'
import type { Config } from '../config.js'
import type { EventStore } from './event-store.js'
import { MemoryEventStore } from './memory-store.js'
import { MongoEventStore } from './mongo-store.js'

/** The store the configuration names. */
export async function createStore(config: Config, budget: MemoryBudget): Promise<EventStore> {
  switch (config.store.type) {
    case 'memory':
      return new MemoryEventStore(config.store.capacity, { maxBytes: budget.limit('store') })
    case 'mongodb':
      return new MongoEventStore({ ...config.store.mongodb, timeoutMs: config.store.timeoutMs })
  }
}
