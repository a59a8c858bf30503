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
        return Math.min(last, (await app.store.newest()) ?? 0)
      })
    }
    const acknowledged = (out: { id: number }[]): { id: number }[] => {
      for (const { id } of out) app.hub.acknowledge(id)
      return out
    }

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
        if (ids !== undefined) return acknowledged((await app.store.append(events, ids)).map((e) => ({ id: e.id })))
        // Without ids the store answers one event per event given: a held key's stored event.
        if (nats === null) return acknowledged((await app.store.append(events)).map((stored, i) => ({ id: checkStored(events[i], stored).id })))
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
        return acknowledged(out)
      },
    })
  },
  { name: 'ingest', dependencies: ['store', 'hub', 'nats'] },
)
