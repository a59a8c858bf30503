import { bounded } from '../bounded.js'
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { connect, headers as natsHeaders, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type KV, type NatsConnection } from 'nats'
import type { Config } from '../config.js'
import type { NewEvent } from '../event.js'
import { StoreUnavailableError, type EventStore } from '../store/event-store.js'
import { DIGEST_HEADER, managerTimeoutMs, NatsWriter, SCOPED_KEY_HEADER, type WriterState } from './nats-writer.js'

export { DEAD_LETTER_HEADERS } from './nats-writer.js'

export type NatsConfig = Config['nats']

interface Log {
  info(obj: unknown, msg?: string): void
  warn(obj: unknown, msg?: string): void
  error(obj: unknown, msg?: string): void
}

/** What /ready and /metrics see: the connection, the lease, and the writer's own state. */
export interface NatsState extends WriterState {
  connected: boolean
  /** The server of the cluster this process is connected to now (`host:port`), null while disconnected. */
  server: string | null
  /** This instance holds the writer lease and consumes the stream into the store. */
  writer: boolean
}

const LEASE_KEY = 'writer'
/** How long past its lease a writer goes on while the lease bucket cannot answer (see leaseUnreachable). */
const LEASE_GRACE_MS = 10_000
/** How long an instance starting waits for JetStream to answer its set-up (the plugin timeout is 60 s). */
const JETSTREAM_SETUP_MS = 40_000

export function leaseBucket(cfg: NatsConfig): string {
  return `${cfg.stream}_LEASE`
}

export function deadLetterStream(cfg: NatsConfig): string {
  return `${cfg.stream}_DEADLETTER`
}

/**
 * The subject POST /messages publishes an event to: under the configured subject's `>`
 * (`events.room.<room>`, `events.competition.<id>`, `events.<type>`), or the subject itself when it
 * has no wildcard.
 */
export function subjectFor(cfg: NatsConfig, e: NewEvent): string {
  if (!cfg.subject.endsWith('>')) return cfg.subject
  const prefix = cfg.subject.slice(0, -1)
  if (e.competitionId !== undefined) return `${prefix}competition.${e.competitionId}`
  if (e.room !== undefined) return `${prefix}room.${e.room}`
  return `${prefix}${e.type}`
}

/**
 * `nats.url` as nats.js takes it: one or more servers, comma-separated (the nodes of a cluster; the
 * client learns the others from the server too), and the credentials of their user info as options,
 * since nats.js ignores user info in a server URL. `nats://TOKEN@host` is a token,
 * `nats://user:password@host` a user and password; every server that names them must name the same.
 */
export function natsConnectOptions(url: string): { servers: string[]; user?: string; pass?: string; token?: string } {
  const servers: string[] = []
  let auth: { user: string; pass?: string } | undefined
  for (const entry of url.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    let u: URL
    try {
      u = new URL(entry)
    } catch {
      // Never echo the entry: it may hold credentials.
      throw new Error(`nats.url: server ${servers.length + 1} is not a URL (expected nats://host:port, comma-separated for several)`)
    }
    if (!/^(nats|tls|ws|wss):$/.test(u.protocol) || u.host === '') {
      throw new Error(`nats.url: server ${servers.length + 1} is not a NATS URL (expected nats://host:port, comma-separated for several)`)
    }
    servers.push(`${u.protocol}//${u.host}`)
    if (u.username === '' && u.password === '') continue
    const mine = { user: decodeURIComponent(u.username), pass: u.password === '' ? undefined : decodeURIComponent(u.password) }
    if (auth !== undefined && (auth.user !== mine.user || auth.pass !== mine.pass)) {
      throw new Error(`nats.url: the servers name different credentials (server ${servers.length}); one connection uses one set: name them on each server or on none but the first`)
    }
    auth = mine
  }
  if (servers.length === 0) throw new Error('nats.url names no server')
  if (auth === undefined) return { servers }
  return auth.pass === undefined ? { servers, token: auth.user } : { servers, user: auth.user, pass: auth.pass }
}

/** The renewal failed because the key is not ours any more (expired, or another instance's): not an outage. */
function leaseTaken(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string }
  return e.api_error?.err_code === 10071 || /wrong last sequence/i.test(e.message ?? '')
}

/** A failed JetStream publish that is known not to have been stored: no stream took it, or it never left. */
function publishNotStored(err: unknown): boolean {
  const e = err as { code?: string; message?: string }
  return e.code === '503' || /no responders|disconnect|closed|CONNECTION_CLOSED/i.test(`${e.code ?? ''} ${e.message ?? ''}`)
}

/**
 * NATS JetStream ingest. Every instance publishes (POST /messages); exactly one instance at a time,
 * the holder of a lease in a JetStream KV bucket, consumes the stream into the store (nats-writer.ts).
 */
export class NatsIngest {
  private nc: NatsConnection | undefined
  private js!: JetStreamClient
  private jsm!: JetStreamManager
  private kv!: KV
  private readonly me = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
  private leaseRevision = 0
  private leaseValidUntil = 0
  private leaseRenewedAt = 0
  private leaseTicking = false
  private leaseTimer: NodeJS.Timeout | undefined
  private closing = false
  private writer!: NatsWriter
  private readonly st: NatsState = {
    connected: false,
    server: null,
    writer: false,
    lastSequence: 0,
    written: 0,
    deadLettered: 0,
    redeliveriesSkipped: 0,
    lastError: null,
    writerFailures: 0,
  }

  /** `publishTimeoutMs`: a publish is answered (acknowledged or StoreUnavailableError) within it (`store.timeoutMs`). */
  constructor(private readonly cfg: NatsConfig, private readonly store: EventStore, private readonly log: Log, private readonly publishTimeoutMs = 5000) {}

  get state(): NatsState {
    return { ...this.st }
  }

  /** Bytes of NATS messages this instance holds on their way to the store (memory budget part `ingest`). */
  get heldBytes(): number {
    return (this.writer as NatsWriter | undefined)?.heldBytes ?? 0
  }

  /** Connect, ensure the streams and the lease bucket, and start competing for the writer lease. */
  async start(): Promise<void> {
    const nc = await connect({
      ...natsConnectOptions(this.cfg.url),
      name: `tailcast ${this.me}`,
      // Reconnect for ever, to whichever node of the cluster answers.
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // A node that vanished without closing the connection (a host down, a network cut) is noticed
      // after two missed pings rather than nats.js's default of 2 × 2 minutes.
      pingInterval: 10_000,
      maxPingOut: 2,
      waitOnFirstConnect: false,
    }).catch((err: Error) => {
      // The URL may hold credentials: never echo it.
      throw new Error(`cannot connect to NATS (nats.url): ${err.message}`)
    })
    this.nc = nc
    this.st.connected = true
    this.st.server = nc.getServer()
    void this.watchStatus(nc)
    this.js = nc.jetstream()
    // The writer's requests are retried rather than waited for: a short timeout.
    const writerJs = nc.jetstream({ timeout: managerTimeoutMs })
    let writerJsm: JetStreamManager | undefined
    this.writer = new NatsWriter({
      cfg: this.cfg,
      store: this.store,
      log: this.log,
      st: this.st,
      js: () => writerJs,
      jsm: () => writerJsm ?? this.jsm,
      leaseHeld: () => this.leaseHeld(),
      closing: () => this.closing,
      maxPayload: () => this.nc?.info?.max_payload ?? Infinity,
      ensureDeadLetterStream: () => this.ensureStream(deadLetterStream(this.cfg), [this.cfg.deadLetterSubject]),
    })
    await this.untilJetStreamAnswers(async () => {
      writerJsm = await nc.jetstreamManager({ timeout: managerTimeoutMs, checkAPI: false })
      this.jsm = await nc.jetstreamManager()
      await this.ensureStream(this.cfg.stream, [this.cfg.subject])
      await this.ensureStream(deadLetterStream(this.cfg), [this.cfg.deadLetterSubject])
      this.kv = await this.js.views.kv(leaseBucket(this.cfg), { history: 1, ttl: this.cfg.leaseSeconds * 1000, replicas: this.cfg.replicas })
      // A bucket made before nats.replicas changed keeps its copies: scaled like the streams.
      await this.ensureStream(`KV_${leaseBucket(this.cfg)}`, [])
    }).catch(async (err: unknown) => {
      // No plugin close hook runs for a start that failed: the connection would keep the process up.
      await nc.close().catch(() => {})
      throw err
    })
    // At least every second: a renewal that failed (the bucket's leader being elected again) is
    // retried soon enough to keep a longer lease through the election.
    this.leaseTimer = setInterval(() => void this.leaseTick(), Math.min(1000, Math.max(200, (this.cfg.leaseSeconds * 1000) / 3)))
    await this.leaseTick()
  }

  /**
   * Publish one event (POST /messages); resolves with the id it will have: its stream sequence.
   * Every publish carries a message id, so a retry after a lost acknowledgement is recognised by
   * JetStream as the same message (within the stream's duplicate window) and answered with the
   * first sequence; an idempotency key is that id, and travels in a header to the store.
   */
  async publish(e: NewEvent): Promise<{ seq: number; duplicate: boolean }> {
    if (this.nc === undefined) throw new StoreUnavailableError([], true, new Error('not connected'), 'NATS')
    const { idempotencyKey, idempotencyDigest, ...wire } = e
    const h = natsHeaders()
    // POST's key, already scoped to its publisher, with its body's digest (see keyOfMessage).
    if (idempotencyKey !== undefined) h.set(SCOPED_KEY_HEADER, idempotencyKey)
    if (idempotencyDigest !== undefined) h.set(DIGEST_HEADER, idempotencyDigest)
    const msgID = idempotencyKey === undefined ? randomUUID() : `key:${idempotencyKey}`
    // A cluster electing a new stream leader (the node that led it died) answers "no responders"
    // for a second or two: retried with a backoff, within the deadline of every broker call.
    const until = Date.now() + this.publishTimeoutMs
    let sent = false
    for (let attempt = 1; ; attempt++) {
      try {
        const timeout = Math.max(100, Math.min(3000, until - Date.now()))
        const ack = await this.js.publish(subjectFor(this.cfg, e), Buffer.from(JSON.stringify(wire)), { timeout, msgID, headers: h })
        return { seq: ack.seq, duplicate: ack.duplicate }
      } catch (err) {
        // A publish that timed out may have been stored (its ack was lost).
        if (!publishNotStored(err)) sent = true
        if (attempt >= 5 || this.closing || Date.now() + 100 * 2 ** attempt > until) throw new StoreUnavailableError([], !sent, err, 'NATS')
        await new Promise((r) => setTimeout(r, 100 * 2 ** (attempt - 1)))
      }
    }
  }

  async close(): Promise<void> {
    this.closing = true
    if (this.leaseTimer) clearInterval(this.leaseTimer)
    this.writer?.stop()
    // Let an in-flight batch finish so that its acks go out before the connection closes.
    for (let i = 0; i < 50 && this.writer?.busy; i++) await new Promise((r) => setTimeout(r, 20))
    // Each step is bounded: after a NATS restart a request or a drain can wait on a server that
    // no longer knows it, and a shutdown must end within its deadline.
    if (this.st.writer) {
      this.st.writer = false
      // Hand the lease over now rather than after it expires.
      await bounded(this.kv.delete(LEASE_KEY, { previousSeq: this.leaseRevision }), 1000)
    }
    if (this.nc !== undefined && !(await bounded(this.nc.drain(), 2000))) await this.nc.close().catch(() => {})
    this.st.connected = false
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        this.st.connected = false
        this.log.warn({ nats: 'disconnected', server: this.st.server }, 'NATS connection lost; reconnecting')
        this.st.server = null
      } else if (s.type === 'reconnect') {
        this.st.connected = true
        this.st.server = nc.getServer()
        this.log.info({ nats: 'reconnected', server: this.st.server }, 'NATS reconnected')
        // The consumer is kept (nats.js pulls again through this node); until it delivers again the
        // writer reads the stream directly, so a leader election does not hold events.
        if (this.st.writer) this.writer.resume('NATS reconnected')
      }
    }
  }

  /**
   * Run the JetStream set-up again while JetStream cannot answer yet: a cluster that is still
   * electing its meta or stream leaders (nodes starting, one lost, a busy host) times out, is
   * "temporarily unavailable" or has too few peers for the replicas for a few seconds, and an instance starting then should wait, not exit. Bounded
   * well inside Fastify's plugin timeout; any other error (permissions, a conflicting stream) at once.
   */
  private async untilJetStreamAnswers(setUp: () => Promise<void>): Promise<void> {
    const deadline = Date.now() + JETSTREAM_SETUP_MS
    for (let wait = 250; ; wait = Math.min(wait * 2, 2000)) {
      try {
        return await setUp()
      } catch (err) {
        const e = err as { code?: string; message?: string }
        // "no suitable peers for placement": the cluster's nodes have not all joined its JetStream yet.
        const notYet = e.code === 'TIMEOUT' || /timeout|temporarily unavailable|leader|no suitable peers/i.test(`${e.code ?? ''} ${e.message ?? ''}`)
        if (e.code === '503') throw new Error('NATS (nats.url) has no JetStream: nothing answered its API (503 no responders); start nats-server with JetStream (-js)')
        if (!notYet || Date.now() + wait > deadline) throw err
        this.log.warn({ err: e.message, retryInMs: wait }, 'JetStream is not answering yet (a cluster electing its leaders?); retrying the set-up')
        await new Promise((r) => setTimeout(r, wait))
      }
    }
  }

  /**
   * Create the stream with `nats.replicas` copies, or add missing subjects to an existing one and
   * scale it to them. Direct access on: the writer reads messages by sequence from any replica
   * while a consumer's leader is being elected (nats-writer.ts).
   */
  private async ensureStream(name: string, subjects: string[]): Promise<void> {
    const replicas = this.cfg.replicas
    try {
      const info = await this.jsm.streams.info(name)
      const missing = subjects.filter((s) => !info.config.subjects?.includes(s))
      if (missing.length > 0 || info.config.num_replicas !== replicas || info.config.allow_direct !== true) {
        if (info.config.num_replicas !== replicas) this.log.info({ stream: name, from: info.config.num_replicas, to: replicas }, 'changing the JetStream stream replicas (nats.replicas)')
        await this.jsm.streams.update(name, { subjects: [...(info.config.subjects ?? []), ...missing], num_replicas: replicas, allow_direct: true })
      }
    } catch (err) {
      if (!/stream not found/i.test((err as Error).message)) throw err
      await this.jsm.streams
        .add({ name, subjects, num_replicas: replicas, storage: StorageType.File, retention: RetentionPolicy.Limits, duplicate_window: 120_000_000_000, allow_direct: true })
        .catch((e: Error) => {
          // Another instance created it first.
          if (!/already in use/i.test(e.message)) throw e
        })
    }
  }

  /** Win, renew or lose the writer lease (a KV key whose entries expire after leaseSeconds). */
  private async leaseTick(): Promise<void> {
    // A renewal still unanswered after a tick's interval is a bucket that cannot answer now (two
    // renewals in flight would also race each other's revision).
    if (this.closing || !this.st.connected || this.leaseTicking) {
      this.leaseUnreachable()
      return
    }
    this.leaseTicking = true
    try {
      await this.renewOrWinLease()
    } finally {
      this.leaseTicking = false
    }
  }

  private async renewOrWinLease(): Promise<void> {
    const started = Date.now()
    const lease = this.cfg.leaseSeconds * 1000
    try {
      if (this.st.writer) {
        try {
          this.leaseRevision = await this.kv.update(LEASE_KEY, new TextEncoder().encode(this.me), this.leaseRevision)
        } catch (err) {
          if (!leaseTaken(err)) throw err
          // Our entry is gone: it expired while the bucket could not be reached, or another
          // instance holds the key now. Win it back if nobody does; otherwise stop writing now.
          this.leaseRevision = await this.kv.create(LEASE_KEY, new TextEncoder().encode(this.me)).catch((e: Error) => {
            this.loseLease('the NATS writer lease is held by another instance; stopped writing')
            throw e
          })
          this.log.info({ nats: 'writer' }, 'won the NATS writer lease back after it expired')
        }
        this.leaseRenewedAt = started
        this.leaseValidUntil = started + lease
        // The supervisor: a writer that is not consuming (a failed batch, a reset that found the
        // lease too short) starts again here.
        if (!this.writer.running) this.writer.restart()
      } else {
        this.leaseRevision = await this.kv.create(LEASE_KEY, new TextEncoder().encode(this.me))
        this.leaseRenewedAt = started
        this.leaseValidUntil = started + lease
        this.st.writer = true
        this.log.info({ nats: 'writer' }, 'won the NATS writer lease; consuming the stream into the store')
        this.writer.restart()
      }
    } catch (err) {
      if (this.st.writer) {
        this.log.warn({ err: (err as Error).message }, 'could not renew the NATS writer lease')
        this.leaseUnreachable()
      }
      // Not the writer: the key exists, another instance holds the lease.
    }
  }

  /**
   * The lease bucket did not answer (its leader is being elected, or our node is gone and the client
   * reconnects): nobody can win the lease while the bucket cannot answer, so the holder goes on
   * writing for up to LEASE_GRACE_MS past its lease rather than hold every event through a 4-6 s
   * election. Should another instance still win it meanwhile (a partition that leaves this one
   * alone), both write for a moment; the store skips every id not above its newest, so each event
   * is still stored once, in order (README "Delivery guarantees").
   */
  private leaseUnreachable(): void {
    if (!this.st.writer) return
    if (this.closing) return this.loseLease('NATS writer lease given up: closing')
    const now = Date.now()
    const lease = this.cfg.leaseSeconds * 1000
    if (now >= this.leaseRenewedAt + lease + LEASE_GRACE_MS) return this.loseLease('NATS writer lease lost (the lease bucket did not answer); stopped writing')
    this.leaseValidUntil = Math.min(now + lease, this.leaseRenewedAt + lease + LEASE_GRACE_MS)
  }

  private loseLease(why: string): void {
    if (!this.st.writer) return
    this.st.writer = false
    this.leaseValidUntil = 0
    this.writer.stop()
    this.log.warn({ nats: 'follower' }, why)
  }

  /** The lease is still ours for long enough to finish a write. */
  private leaseHeld(): boolean {
    return this.st.writer && !this.closing && Date.now() < this.leaseValidUntil - 250
  }

  /** The stream's last sequence: the id of the newest event any instance has published (read-your-writes). */
  async lastSequence(): Promise<number> {
    if (this.nc === undefined) throw new StoreUnavailableError([], true, new Error('not connected'), 'NATS')
    return (await this.jsm.streams.info(this.cfg.stream)).state.last_seq
  }

  /** Every sequence up to this was stored or dead-lettered by the writer: the durable consumer's ack floor. */
  async settledThrough(): Promise<number> {
    if (this.nc === undefined) throw new StoreUnavailableError([], true, new Error('not connected'), 'NATS')
    return (await this.jsm.consumers.info(this.cfg.stream, this.cfg.durable)).ack_floor.stream_seq
  }
}
