import t from 'tap'
import type { JetStreamManager, StoredMsg } from 'nats'
import { loadConfig } from '../../src/config.js'
import { NatsWriter, type WriterState } from '../../src/ingest/nats-writer.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'

const SUBJECT = 'events.room.r'
const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))

/**
 * The writer's rule for a gap in the consumer's deliveries, on what a replica answers to a direct
 * get. Which replica answers cannot be chosen on a real cluster, so the direct gets here answer as a
 * replica would: one that is behind ("no message found" for what it does not have yet), one that
 * has every message, one whose messages in the gap were deleted (it answers the next one, past it).
 */
function writerWith(stream: Map<number, string>, answers: 'behind' | 'all') {
  const store = new MemoryEventStore(1000)
  const st: WriterState = { lastSequence: 2, written: 0, deadLettered: 0, redeliveriesSkipped: 0, lastError: null, writerFailures: 0 }
  const direct = {
    async getMessage(_stream: string, q: { seq: number }): Promise<StoredMsg> {
      const seqs = [...stream.keys()].filter((s) => s >= q.seq).sort((a, b) => a - b)
      if (answers === 'behind' || seqs.length === 0) throw Object.assign(new Error('no message found'), { code: '404' })
      const seq = seqs[0]
      return { seq, subject: SUBJECT, data: enc({ text: stream.get(seq), room: 'r' }), header: undefined, time: new Date() } as unknown as StoredMsg
    },
  }
  const writer = new NatsWriter({
    cfg: loadConfig({ env: {} }).nats,
    store,
    log: { info() {}, warn() {} },
    st,
    js: () => {
      throw new Error('no publish expected')
    },
    jsm: () => ({ direct }) as unknown as JetStreamManager,
    leaseHeld: () => true,
    closing: () => false,
    maxPayload: () => 1024 * 1024,
    ensureDeadLetterStream: async () => {},
  })
  let acked = 0
  const delivered = (seq: number) => ({ seq, subject: SUBJECT, data: enc({ text: stream.get(seq), room: 'r' }), headers: undefined, storedAtMs: Date.now(), next: false, ack: () => acked++ })
  const writeBatch = (items: unknown[]): Promise<void> => (writer as unknown as { writeBatch(b: unknown[]): Promise<void> }).writeBatch(items)
  return { store, st, delivered, writeBatch, acked: () => acked }
}

t.test('a delivery past a gap that the answering replica cannot fill is not taken: nothing skipped for good', async (t) => {
  const stream = new Map([[3, 'm3'], [4, 'm4'], [5, 'm5']])
  const w = writerWith(stream, 'behind')
  await t.rejects(w.writeBatch([w.delivered(5)]), /messages 3 to 4 could not be read/)
  t.equal(w.st.lastSequence, 2, 'the position stays before the gap')
  t.equal(w.acked(), 0, 'nothing acked')
  t.same(await w.store.read({ kind: 'room', room: 'r' }, 0, 10), [], 'nothing stored out of order')
})

t.test('a gap a replica can read is filled first, in order', async (t) => {
  const w = writerWith(new Map([[3, 'm3'], [4, 'm4'], [5, 'm5']]), 'all')
  await w.writeBatch([w.delivered(5)])
  t.same((await w.store.read({ kind: 'room', room: 'r' }, 0, 10)).map((e) => [e.id, e.data.text]), [[3, 'm3'], [4, 'm4'], [5, 'm5']])
  t.equal(w.st.lastSequence, 5)
})

t.test('messages of the gap deleted from the stream: the next one is taken', async (t) => {
  const w = writerWith(new Map([[5, 'm5']]), 'all')
  await w.writeBatch([w.delivered(5)])
  t.same((await w.store.read({ kind: 'room', room: 'r' }, 0, 10)).map((e) => e.id), [5])
  t.equal(w.st.lastSequence, 5)
})
