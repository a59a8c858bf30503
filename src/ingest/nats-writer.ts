import {
  AckPolicy,
  DeliverPolicy,
  headers as natsHeaders,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type MsgHdrs,
  type StoredMsg,
} from 'nats'
import type { Config } from '../config.js'
import { decodeEvent, InvalidEventError, type NewEvent } from '../event.js'
import { bodyDigest, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_RULE, NATS_SCOPE, scopedKey } from '../idempotency.js'
import { StoreRejectedError, type EventStore } from '../store/event-store.js'

type NatsConfig = Config['nats']

interface Log {
  info(obj: unknown, msg?: string): void
  warn(obj: unknown, msg?: string): void
}

/** The part of the ingest's state (/ready, /metrics) the writer keeps. */
export interface WriterState {
  /** Stream sequence of the last message this instance finished (stored, or dead-lettered). */
  lastSequence: number
  written: number
  deadLettered: number
  /** Redelivered messages found already stored, acked without a second write. */
  redeliveriesSkipped: number
  lastError: string | null
  /** Batches (and consumer restarts) in a row the writer failed; zero again once a batch is stored or nothing waits. /ready fails from 3 on. */
  writerFailures: number
}

/** Dead-letter headers (the body is the original payload, byte for byte). */
export const DEAD_LETTER_HEADERS = {
  reason: 'Tailcast-Reason',
  subject: 'Tailcast-Subject',
  sequence: 'Tailcast-Sequence',
  stream: 'Tailcast-Stream',
  /** Present when the body had to be cut to fit the server's max_payload: the original length. */
  truncated: 'Tailcast-Truncated',
} as const

/** A raw NATS publisher's idempotency key (POST's rule, scoped to NATS publishers). */
export const IDEMPOTENCY_HEADER = 'Tailcast-Idempotency-Key'
/** Set by POST /messages: its key scoped to its publisher, and its body's digest (see idempotency.ts). */
export const SCOPED_KEY_HEADER = 'Tailcast-Idempotency-Scoped-Key'
export const DIGEST_HEADER = 'Tailcast-Idempotency-Digest'

/** Bytes kept free for the dead-letter headers (reason at most 1,000 characters, subject, ids). */
const DEAD_LETTER_HEADER_ROOM = 4096

/**
 * A consumer's pull and its heartbeats: a pull lost with the node it went through is sent again
 * after two missed heartbeats, and the catch-up (below) starts then too.
 */
const PULL_EXPIRES_MS = 5000
const IDLE_HEARTBEAT_MS = 1000
/** A JetStream request of the writer's: short, since it is retried (a cluster electing a leader does not answer). */
const API_TIMEOUT_MS = 1500
/** While catching up and level with the stream: how often to look for a newer message. */
const CATCH_UP_POLL_MS = 100
/** A catch-up ends by then (longer than a cluster's leader elections): the consumer carries on. */
const CATCH_UP_MAX_MS = 15_000

/** One stream message on its way to the store: from the consumer, or read directly by sequence. */
interface Item {
  seq: number
  subject: string
  data: Uint8Array
  headers: MsgHdrs | undefined
  /** When JetStream stored it: the event's time when the payload has none (the same on every redelivery). */
  storedAtMs: number
  /** Read as "the next message at or after" a sequence: nothing lies between the position and it. */
  next: boolean
  ack(): void
}

/** Bookkeeping per message held (the item, the nats.js message object), estimated. */
const ITEM_OVERHEAD = 320

/** What one message held costs: payload, subject and headers as they came, plus bookkeeping. */
function itemBytes(m: Item): number {
  let n = m.data.length + m.subject.length + ITEM_OVERHEAD
  if (m.headers !== undefined) for (const k of m.headers.keys()) for (const v of m.headers.values(k)) n += k.length + v.length + 4
  return n
}

function fromConsumer(m: JsMsg): Item {
  return { seq: m.seq, subject: m.subject, data: m.data, headers: m.headers, storedAtMs: Math.floor(m.info.timestampNanos / 1e6), next: false, ack: () => m.ack() }
}

function fromDirect(m: StoredMsg): Item {
  return { seq: m.seq, subject: m.subject, data: m.data, headers: m.header, storedAtMs: m.time.getTime(), next: true, ack: () => {} }
}

/**
 * The idempotency key of a message, into `event`; returns why it is refused, or null. A message
 * published by POST carries its key already scoped to its publisher, with its body's digest; a
 * raw NATS publisher's `Tailcast-Idempotency-Key` follows POST's rule and is scoped to NATS
 * publishers (so it can never squat a POST publisher's key), its digest taken from the payload.
 */
function keyOfMessage(m: Item, event: NewEvent): string | null {
  const scoped = m.headers?.get(SCOPED_KEY_HEADER) ?? ''
  if (scoped !== '') {
    if (!/^[A-Za-z0-9_-]{43}$/.test(scoped)) return `the ${SCOPED_KEY_HEADER} header is not a key digest (it is set by POST /messages)`
    event.idempotencyKey = scoped
    const digest = m.headers?.get(DIGEST_HEADER) ?? ''
    event.idempotencyDigest = digest !== '' ? digest : bodyDigest(m.data)
    return null
  }
  if (m.headers === undefined || !m.headers.has(IDEMPOTENCY_HEADER)) return null
  const raw = m.headers.get(IDEMPOTENCY_HEADER)
  if (!IDEMPOTENCY_KEY.test(raw)) return `the ${IDEMPOTENCY_HEADER} header ${IDEMPOTENCY_KEY_RULE}, got ${JSON.stringify(raw.slice(0, 40))}${raw.length > 40 ? '…' : ''} (${raw.length} characters)`
  event.idempotencyKey = scopedKey(NATS_SCOPE, raw)
  event.idempotencyDigest = bodyDigest(m.data)
  return null
}

/** One header line: no CR/LF, bounded. */
function headerValue(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').slice(0, 1000)
}

export interface WriterDeps {
  cfg: NatsConfig
  store: EventStore
  log: Log
  st: WriterState
  js: () => JetStreamClient
  /** A manager whose requests time out after API_TIMEOUT_MS (see managerTimeoutMs). */
  jsm: () => JetStreamManager
  /** The lease is ours for long enough to finish a write. */
  leaseHeld: () => boolean
  closing: () => boolean
  /** The server's max_payload (dead letters must fit). */
  maxPayload: () => number
  /** The dead-letter stream is gone: create it again. */
  ensureDeadLetterStream: () => Promise<void>
}

export const managerTimeoutMs = API_TIMEOUT_MS

/**
 * The writer: while this instance holds the lease, it consumes the stream through the durable pull
 * consumer into the store, in stream order, with the stream sequence as the event id, and acks each
 * message only after its batch is stored. The store's newest id is the position:
 * - when the writer starts (lease won, a failed batch) it re-creates the durable consumer at
 *   newest + 1, so messages another writer had in flight are neither lost nor doubled;
 * - when the connection moves to another node (the one it was on died) the consumer is kept: nats.js
 *   pulls again through the new node, and until the consumer delivers again the writer reads the
 *   messages after its position directly ("direct get", answered by any replica, no leader needed),
 *   so events are not held while the consumer's leader is elected again;
 * - a delivery lost on the way (a gap in the sequences) is read directly too, not waited for.
 * Whatever the source, a message at or below the position is acked and skipped, so the store gets
 * each sequence once, in order.
 */
export class NatsWriter {
  private messages: ConsumerMessages | undefined
  private queue: Item[] = []
  private draining = false
  private resetting: Promise<void> | undefined
  private restartWanted = false
  private generation = 0
  private catchingUp = false
  /** When the consumer last handed over a message past the position. */
  private deliveredAt = 0
  /** Bytes of the batches being written now (the consumer's and the catch-up's). */
  private writingBytes = 0

  constructor(private readonly d: WriterDeps) {}

  /** A batch or a consumer reset in flight (close waits for it, so that its acks go out). */
  get busy(): boolean {
    return this.draining || this.resetting !== undefined
  }

  /**
   * Bytes of the messages this writer holds: delivered and waiting, or being written (memory budget
   * part `ingest`). At most twice `nats.batchSize` delivered messages wait (the consumer's pull).
   */
  get heldBytes(): number {
    let n = this.writingBytes
    for (const m of this.queue) n += itemBytes(m)
    return n
  }

  /** Consuming, or about to (the lease renewal restarts a writer that is neither). */
  get running(): boolean {
    return this.messages !== undefined || this.resetting !== undefined
  }

  stop(): void {
    // Messages a stopped consumer still hands over are ignored (they come again after a reset).
    this.generation++
    this.messages?.stop()
    this.messages = undefined
    this.queue = []
  }

  /**
   * (Re)create the durable consumer at the store's newest id + 1 and consume from there. A request
   * made while a reset runs is never dropped: the reset runs again.
   */
  restart(): void {
    this.stop()
    this.restartWanted = true
    if (this.resetting) return
    this.resetting = (async () => {
      while (this.restartWanted && !this.d.closing()) {
        this.restartWanted = false
        try {
          await this.resetConsumer()
        } catch (err) {
          this.d.st.lastError = (err as Error).message
          this.d.st.writerFailures++
          this.d.log.warn({ err: (err as Error).message, failuresInARow: this.d.st.writerFailures }, 'NATS consumer reset failed; retrying')
          await new Promise((r) => setTimeout(r, 250))
          if (this.d.leaseHeld()) this.restartWanted = true
        }
      }
    })().finally(() => (this.resetting = undefined))
  }

  /**
   * The connection moved to another node, or the consumer's heartbeats stopped: keep the consumer
   * (nats.js pulls again) and read what follows the position directly until it delivers again.
   */
  resume(reason: string): void {
    if (!this.d.leaseHeld()) return
    if (this.messages === undefined && this.resetting === undefined) {
      this.restart()
      return
    }
    void this.catchUp(reason)
  }

  private async resetConsumer(): Promise<void> {
    if (!this.d.leaseHeld()) return
    const { cfg } = this.d
    const jsm = this.d.jsm()
    // The position, read while no batch is written (a catch-up's included).
    let newest = 0
    await this.exclusive(async () => {
      newest = (await this.d.store.bounds()).newest ?? 0
      this.d.st.lastSequence = newest
    })
    // Events flow from here while the consumer is set up (its API calls wait for any election).
    void this.catchUp('the writer started')
    await jsm.consumers.delete(cfg.stream, cfg.durable).catch((err: Error) => {
      if (!/consumer not found/i.test(err.message)) throw err
    })
    await jsm.consumers.add(cfg.stream, {
      durable_name: cfg.durable,
      ack_policy: AckPolicy.Explicit,
      ack_wait: Math.round(cfg.ackWaitSeconds * 1e9),
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: newest + 1,
      filter_subject: cfg.subject,
      max_ack_pending: cfg.batchSize * 4,
    })
    if (!this.d.leaseHeld()) return
    const consumer = await this.d.js().consumers.get(cfg.stream, cfg.durable)
    // Nothing waiting to be written: the writer is well again (else the next stored batch says so).
    if ((await consumer.info()).num_pending === 0) this.d.st.writerFailures = 0
    this.queue = []
    const generation = ++this.generation
    const messages = await consumer.consume({
      max_messages: cfg.batchSize * 2,
      expires: PULL_EXPIRES_MS,
      idle_heartbeat: IDLE_HEARTBEAT_MS,
      // A pull sent again (reconnect, missed heartbeats) goes out at once, without first asking
      // the consumer's leader, which may be the node that died.
      bind: true,
      callback: (m) => {
        if (generation !== this.generation) return
        if (m.seq > this.d.st.lastSequence) this.deliveredAt = performance.now()
        this.queue.push(fromConsumer(m))
        void this.drain()
      },
    })
    // Stopped while it was starting (lease lost, reconnect): the next restart or renewal starts again.
    if (generation !== this.generation) messages.stop()
    else {
      this.messages = messages
      void this.watch(messages, generation)
      // Messages that came before the assignment wait in the queue.
      void this.drain()
    }
  }

  private async watch(messages: ConsumerMessages, generation: number): Promise<void> {
    for await (const s of await messages.status()) {
      if (generation !== this.generation) return
      if (s.type === 'heartbeats_missed') this.resume('the consumer missed its heartbeats')
    }
  }

  /**
   * Read the messages after the position directly and write them, until the consumer has handed
   * over a new message since this began and nothing newer is found. Bounded by the lease: a writer
   * that loses it stops (and one that wins it starts here, before its consumer is set up).
   */
  private async catchUp(reason: string): Promise<void> {
    if (this.catchingUp) return
    this.catchingUp = true
    const began = performance.now()
    let read = 0
    try {
      // Not tied to one consumer: a restart while catching up keeps it going.
      // Until the consumer hands over something past the position (then it is the faster path:
      // batches, not one request per message), or for CATCH_UP_MAX_MS.
      while (this.d.leaseHeld() && this.deliveredAt <= began && performance.now() - began <= CATCH_UP_MAX_MS) {
        const { items: got } = await this.readAfter(this.d.st.lastSequence, this.d.cfg.batchSize)
        if (got.length > 0) {
          read += got.length
          await this.exclusive(() => this.writeBatch(got))
        } else await new Promise((r) => setTimeout(r, CATCH_UP_POLL_MS))
      }
      if (read > 0) this.d.log.info({ reason, read, ms: Math.round(performance.now() - began) }, 'NATS writer caught up by reading the stream directly')
    } catch (err) {
      // The consumer goes on (it is the writer's path; this only shortens a wait for it).
      this.d.st.lastError = (err as Error).message
      this.d.log.warn({ err: (err as Error).message, reason }, 'NATS writer could not read the stream directly; waiting for the consumer')
    } finally {
      this.catchingUp = false
    }
    void this.drain()
  }

  /**
   * Up to `max` messages after `position`, in order, each "the next one at or after" (any replica
   * answers). `ranOut`: the answering replica had nothing more, before `below` (it may be behind
   * the stream's leader: a follower answers direct gets with what it has).
   */
  private async readAfter(position: number, max: number, below = Infinity): Promise<{ items: Item[]; ranOut: boolean }> {
    const items: Item[] = []
    let at = position + 1
    while (items.length < max && at < below) {
      let m: StoredMsg
      try {
        // The manager has it (nats.js types name it only on the implementation).
        m = await (this.d.jsm() as JetStreamManager & { direct: { getMessage(stream: string, q: { seq: number; next_by_subj: string }): Promise<StoredMsg> } }).direct.getMessage(this.d.cfg.stream, { seq: at, next_by_subj: this.d.cfg.subject })
      } catch (err) {
        if (/no message found|404/i.test(`${(err as { code?: string }).code ?? ''} ${(err as Error).message}`)) return { items, ranOut: true }
        throw err
      }
      if (m.seq >= below) break
      items.push(fromDirect(m))
      at = m.seq + 1
    }
    return { items, ranOut: false }
  }

  /** Run `write` while no batch is being written (the consumer's and the catch-up's take turns). */
  private async exclusive(write: () => Promise<void>): Promise<void> {
    while (this.draining) await new Promise((r) => setTimeout(r, 5))
    this.draining = true
    try {
      await write()
    } finally {
      this.draining = false
    }
  }

  /** Write what has arrived, one batch at a time, in order. */
  private async drain(): Promise<void> {
    if (this.draining) return
    this.draining = true
    try {
      while (this.queue.length > 0 && this.messages !== undefined) {
        const batch = this.queue.splice(0, this.d.cfg.batchSize)
        await this.writeBatch(batch)
      }
    } catch (err) {
      this.d.st.lastError = (err as Error).message
      this.d.st.writerFailures++
      this.d.log.warn({ err: (err as Error).message, failuresInARow: this.d.st.writerFailures }, 'NATS ingest batch failed; restarting from the store position')
      this.stop()
      // The next lease renewal restarts consuming from the store's position.
    } finally {
      this.draining = false
    }
  }

  private async writeBatch(batch: Item[]): Promise<void> {
    const bytes = batch.reduce((n, m) => n + itemBytes(m), 0)
    this.writingBytes += bytes
    try {
      await this.writeItems(batch)
    } finally {
      this.writingBytes -= bytes
    }
  }

  private async writeItems(batch: Item[]): Promise<void> {
    const accepted: { m: Item; event: NewEvent }[] = []
    const dead: { m: Item; reason: string }[] = []
    const done: Item[] = []
    let last = this.d.st.lastSequence
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i]
      if (m.seq <= last) {
        // Already stored (or dead-lettered): a redelivery. Ack it, write nothing.
        this.d.st.redeliveriesSkipped++
        m.ack()
        continue
      }
      if (m.seq !== last + 1 && !m.next) {
        // A message before this one was delivered but never reached us (it went to the node that
        // died), or a consumer set up at the store's position began past where the catch-up left
        // the position: read what lies between directly, then this one. Never taken on trust,
        // not even as a new consumer's first message.
        const { items: between, ranOut } = await this.readAfter(last, m.seq - last - 1, m.seq)
        if (between.length > 0) {
          batch.splice(i, 0, ...between)
          i--
          continue
        }
        // Nothing found before this message by a replica that does not have this message either:
        // it is behind, and the messages between are unread, not absent. Taking this one would skip
        // them for good (their redelivery would be at or below the position): start again from the
        // store's position instead, where the consumer's leader delivers them.
        if (ranOut) throw new Error(`messages ${last + 1} to ${m.seq - 1} could not be read (the replica that answered is behind the stream)`)
      }
      last = m.seq
      done.push(m)
      if (m.data.length > this.d.cfg.maxPayload) {
        dead.push({ m, reason: `the payload is ${m.data.length} bytes, over the limit of ${this.d.cfg.maxPayload} (nats.maxPayload)` })
        continue
      }
      try {
        const event = decodeEvent(m.data, new Date(m.storedAtMs))
        const keyProblem = keyOfMessage(m, event)
        if (keyProblem !== null) {
          dead.push({ m, reason: keyProblem })
          continue
        }
        accepted.push({ m, event })
      } catch (err) {
        if (!(err instanceof InvalidEventError)) throw err
        dead.push({ m, reason: err.message })
      }
    }
    if (done.length === 0) return
    if (!this.d.leaseHeld()) throw new Error('the writer lease expired before the batch was written')
    // Dead letters first: a dead letter published twice is removed by its Nats-Msg-Id, one never
    // published would be lost once a later event of the batch is stored.
    for (const x of dead) await this.deadLetter(x.m, x.reason)
    const refused = await this.storeBatch(accepted)
    for (const m of done) m.ack()
    this.d.st.lastSequence = last
    this.d.st.written += accepted.length - refused
    this.d.st.deadLettered += dead.length + refused
    this.d.st.writerFailures = 0
  }

  /**
   * Store the batch with the stream sequences as ids. A message the store refuses for its content is
   * dead-lettered with the store's reason and the rest of the batch is stored after it: one event
   * can never hold up the ones behind it. Returns how many were refused.
   */
  private async storeBatch(batch: { m: Item; event: NewEvent }[]): Promise<number> {
    let refused = 0
    let rest = batch
    while (rest.length > 0) {
      try {
        await this.d.store.append(
          rest.map((a) => a.event),
          rest.map((a) => a.m.seq),
        )
        return refused
      } catch (err) {
        if (!(err instanceof StoreRejectedError)) throw err
        await this.deadLetter(rest[err.index].m, err.message)
        refused++
        rest = rest.slice(err.index + 1)
      }
    }
    return refused
  }

  private async deadLetter(m: Item, reason: string): Promise<void> {
    const { cfg } = this.d
    const h = natsHeaders()
    h.set(DEAD_LETTER_HEADERS.reason, headerValue(reason))
    h.set(DEAD_LETTER_HEADERS.subject, m.subject)
    h.set(DEAD_LETTER_HEADERS.sequence, String(m.seq))
    h.set(DEAD_LETTER_HEADERS.stream, cfg.stream)
    // The payload plus these headers can pass the server's max_payload that the payload alone fit
    // in: then the dead letter keeps the payload's start and says how long it was, rather than
    // failing for ever and stopping the ingest behind it.
    const room = this.d.maxPayload() - DEAD_LETTER_HEADER_ROOM
    let body = m.data
    if (body.length > room) {
      h.set(DEAD_LETTER_HEADERS.truncated, String(body.length))
      body = body.subarray(0, Math.max(0, room))
    }
    const publish = () => this.d.js().publish(cfg.deadLetterSubject, body, { headers: h, msgID: `${cfg.stream}:${m.seq}`, timeout: 5000 })
    try {
      await publish().catch(async (err: Error) => {
        // No stream takes the subject (someone deleted it): create it again, once.
        if (!/no responders|503/i.test(err.message)) throw err
        await this.d.ensureDeadLetterStream()
        await publish()
      })
    } catch (err) {
      throw new Error(`dead-lettering sequence ${m.seq} to ${cfg.deadLetterSubject} failed: ${(err as Error).message}`)
    }
    this.d.log.warn({ subject: m.subject, sequence: m.seq, reason }, 'NATS message sent to the dead-letter subject')
  }
}
