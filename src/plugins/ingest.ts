import fp from 'fastify-plugin'
import type { NewEvent } from '../event.js'

/** The one way events enter the store, whoever brings them (POST /messages, NATS, an upstream). */
export interface Ingest {
  submit(events: NewEvent[]): Promise<{ id: number }[]>
}

declare module 'fastify' {
  interface FastifyInstance {
    ingest: Ingest
  }
}

export default fp(
  async (app) => {
    app.decorate('ingest', {
      submit: async (events: NewEvent[]) => (await app.store.append(events)).map((e) => ({ id: e.id })),
    })
  },
  { name: 'ingest', dependencies: ['store'] },
)
