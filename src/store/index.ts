import type { Config } from '../config.js'
import type { EventStore } from './event-store.js'
import { MemoryEventStore } from './memory-store.js'

/** The store the configuration names. */
export async function createStore(config: Config): Promise<EventStore> {
  switch (config.store.type) {
    case 'memory':
      return new MemoryEventStore(config.store.capacity)
    case 'mongodb':
      throw new Error('store.type "mongodb" is not available yet')
  }
}
