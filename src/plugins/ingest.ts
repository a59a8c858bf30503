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

/**
 * Without NATS, events go straight into the store. With NATS they are published to JetStream and
 * reach the store through the writer, like any other NATS message; the id answered is the stream
 * sequence, which is the id the event gets once stored.
 *
 * Every id answered is told to the hub before the answer goes out: a stream requested after it is
 * replayed up to it (read-your-writes). With NATS, the newest position acknowledged by any instance
 * is JetStream's last sequence, not the store's newest id (the writer may not have stored it yet).
 */
export default fp(
  async (app) => {
    const nats = app.nats
    if (nats !== null) {
      app.hub.readAcknowledgedFrom(async () => {
        const last = await nats.lastSequence()
        // Read after `last`: when the writer has settled everything up to it, a dead-lettered message
        // (never stored) may be the newest, and the store's newest id is all there is to wait for.
        const settled = await nats.settledThrough().catch(() => 0)
        if (settled < last) return last
        return Math.min(last, (await app.store.bounds()).newest ?? 0)
      })
    }
    const acknowledged = (out: { id: number }[]): { id: number }[] => {
      for (const { id } of out) app.hub.acknowledge(id)
      return out
    }
    app.decorate('ingest', {
      submit: async (events: NewEvent[], ids?: number[]) => {
        // Given ids (an upstream's, a recording's) never travel through NATS: relays take no NATS.
        if (nats === null || ids !== undefined) return acknowledged((await app.store.append(events, ids)).map((e) => ({ id: e.id })))
        const out: { id: number }[] = []
        for (const e of events) {
          // A retry past JetStream's duplicate window is still recognised while the store holds the event.
          const known = e.idempotencyKey === undefined ? null : await app.store.findByKey(e.idempotencyKey)
          out.push({ id: known?.id ?? (await nats.publish(e)) })
        }
        return acknowledged(out)
      },
    })
  },
  { name: 'ingest', dependencies: ['store', 'hub', 'nats'] },
)
