import fp from 'fastify-plugin'
import type { NewEvent } from '../event.js'

/** The one way events enter the store, whoever brings them (POST /messages, NATS, an upstream). */
export interface Ingest {
  /**
   * Store events; returns the ids of those stored. `ids` (one per event, increasing) keeps ids
   * given elsewhere (an upstream's, a recording's); events not above the newest stored id are skipped.
   */
  submit(events: NewEvent[], ids?: number[]): Promise<{ id: number }[]>
}

declare module 'fastify' {
  interface FastifyInstance {
    ingest: Ingest
  }
}

export default fp(
  async (app) => {
    app.decorate('ingest', {
      submit: async (events: NewEvent[], ids?: number[]) => (await app.store.append(events, ids)).map((e) => ({ id: e.id })),
    })
  },
  { name: 'ingest', dependencies: ['store'] },
)
