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

/**
 * Without NATS, events go straight into the store. With NATS they are published to JetStream and
 * reach the store through the writer, like any other NATS message; the id answered is the stream
 * sequence, which is the id the event gets once stored.
 */
export default fp(
  async (app) => {
    const nats = app.nats
    app.decorate('ingest', {
      submit: async (events: NewEvent[]) => {
        if (nats === null) return (await app.store.append(events)).map((e) => ({ id: e.id }))
        const out: { id: number }[] = []
        for (const e of events) out.push({ id: await nats.publish(e) })
        return out
      },
    })
  },
  { name: 'ingest', dependencies: ['store', 'nats'] },
)
