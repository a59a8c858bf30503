import fp from 'fastify-plugin'
import type { NewEvent } from '../event.js'
import { checkStored } from '../idempotency.js'
import { StoreUnavailableError } from '../store/event-store.js'

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

/** How long a POST whose key JetStream already holds waits for the writer to store the first one. */
const CONFIRM_MS = 5000

/**
 * Without NATS, events go straight into the store. With NATS they are published to JetStream and
 * reach the store through the writer, like any other NATS message; the id answered is the stream
 * sequence, which is the id the event gets once stored.
 */
export default fp(
  async (app) => {
    const nats = app.nats

    /** Wait (bounded) until the store holds the key's first event, and compare bodies. */
    async function confirmSameBody(e: NewEvent, seq: number): Promise<void> {
      const until = Date.now() + CONFIRM_MS
      for (let wait = 20; ; wait = Math.min(wait * 2, 500)) {
        const stored = await app.store.findByKey(e.idempotencyKey as string)
        if (stored !== null) return void checkStored(e, stored)
        if (Date.now() + wait > until) {
          throw new StoreUnavailableError([], false, new Error(`event ${seq} with this Idempotency-Key is not stored yet, so whether this body is its body is unknown`))
        }
        await new Promise((r) => setTimeout(r, wait))
      }
    }
    app.decorate('ingest', {
      submit: async (events: NewEvent[], ids?: number[]) => {
        // Given ids (an upstream's, a recording's) never travel through NATS: relays take no NATS.
        if (ids !== undefined) return (await app.store.append(events, ids)).map((e) => ({ id: e.id }))
        // Without ids the store answers one event per event given: a held key's stored event.
        if (nats === null) return (await app.store.append(events)).map((stored, i) => ({ id: checkStored(events[i], stored).id }))
        const out: { id: number }[] = []
        for (const e of events) {
          // A retry past JetStream's duplicate window is still recognised while the store holds the event.
          const known = e.idempotencyKey === undefined ? null : await app.store.findByKey(e.idempotencyKey)
          if (known !== null) {
            out.push({ id: checkStored(e, known).id })
            continue
          }
          const { seq, duplicate } = await nats.publish(e)
          // JetStream took the key's first message (the key is the message id): whether this body is
          // that one's is known once the writer stored it.
          if (duplicate && e.idempotencyKey !== undefined) await confirmSameBody(e, seq)
          out.push({ id: seq })
        }
        return out
      },
    })
  },
  { name: 'ingest', dependencies: ['store', 'nats'] },
)
