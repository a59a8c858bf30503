import { MongoClient } from 'mongodb'
import { headers as natsHeaders, type Msg, type NatsConnection } from 'nats'
import t, { type Test } from 'tap'
import { DEAD_LETTER_HEADERS } from '../src/ingest/nats-ingest.js'
import { isLive, openSse } from './helpers/clients.js'
import {
  Followers,
  HOSTILE,
  ISSUE_DEEP_ARRAYS,
  ISSUE_DEEP_OBJECTS,
  LARGE_LIMITS,
  LARGE_NATS,
  STORES,
  healthStatus,
  logSink,
  markerEvent,
  runRows,
  storedAfter,
  until,
  type IngestPath,
} from './helpers/hostile.js'
import { freshCollection, mongoUrl, TEST_DATABASE } from './helpers/mongo.js'
import { natsClient, natsOverrides, natsUrl, removeNatsStreams } from './helpers/nats.js'
import { startServer, storeOverrides, type StoreKind, type TestServer } from './helpers/server.js'

/**
 * Issue #13 on the NATS path: payloads published straight to the stream subject. The writer stores
 * what the decoder accepts and dead-letters (with Tailcast-Reason) and acks what it refuses, and
 * ingest goes on past every one of them.
 */

const enc = (s: string): Buffer => Buffer.from(s, 'utf8')

/** A server with NATS on its own stream, its dead letters as they arrive, and a way to start afresh. */
class NatsRig {
  server!: TestServer
  dead: Msg[] = []
  log = logSink()
  private sub: ReturnType<NatsConnection['subscribe']> | undefined

  private constructor(readonly nc: NatsConnection, private readonly overrides: () => Record<string, unknown>, private readonly nats: Record<string, unknown>) {}

  /** `overrides`: the store (called again for a fresh one on each start); `nats`: nats.* settings. */
  static async start(t: Test, overrides: () => Record<string, unknown>, nats: Record<string, unknown> = LARGE_NATS): Promise<NatsRig> {
    const rig = new NatsRig(await natsClient(natsUrl()), overrides, nats)
    await rig.open()
    t.teardown(async () => {
      await rig.stop()
      await rig.nc.close()
    })
    return rig
  }

  get prefix(): string {
    return this.server.config.nats.subject.slice(0, -1)
  }

  async open(): Promise<void> {
    this.log = logSink()
    this.server = await startServer({ ...natsOverrides(natsUrl(), this.nats), ...LARGE_LIMITS, ...this.overrides(), logLevel: 'info' }, { logStream: this.log.stream })
    const dead: Msg[] = []
    this.dead = dead
    const sub = this.nc.subscribe(this.server.config.nats.deadLetterSubject)
    this.sub = sub
    void (async () => {
      for await (const m of sub) dead.push(m)
    })()
    await this.nc.flush()
  }

  /** Stop watching the dead-letter subject (a core subscriber there would answer nothing to the writer's publish). */
  unwatch(): void {
    this.sub?.unsubscribe()
  }

  async stop(): Promise<void> {
    this.unwatch()
    await this.server.close()
    await removeNatsStreams(this.nc, this.server.config.nats.stream)
  }

  async publish(subject: string, payload: Uint8Array): Promise<number> {
    return (await this.nc.jetstream().publish(`${this.prefix}${subject}`, payload, { timeout: 10_000 })).seq
  }

  deadLetter(seq: number): Msg | undefined {
    return this.dead.find((m) => m.headers?.get(DEAD_LETTER_HEADERS.sequence) === String(seq))
  }

  async ready(): Promise<{ status: number; body: Record<string, unknown> }> {
    const r = await fetch(`${this.server.url}/ready`)
    return { status: r.status, body: (await r.json()) as Record<string, unknown> }
  }
}

function natsPath(rig: NatsRig): IngestPath {
  let rowSeq = 0
  let logMark = 0
  return {
    get server() {
      return rig.server
    },
    async send(row) {
      const seq = await rig.publish('hostile', row.payload)
      rowSeq = seq
      logMark = rig.log.lines.length
      return {
        settle: () =>
          until(
            async () => {
              if ((await storedAfter(rig.server, seq - 1)).some((e) => e.id === seq)) return { accepted: seq }
              const d = rig.deadLetter(seq)
              return d === undefined ? undefined : { refused: d.headers?.get(DEAD_LETTER_HEADERS.reason) ?? '(a dead letter without Tailcast-Reason)' }
            },
            5000,
            `sequence ${seq} to be stored or dead-lettered`,
          ).catch((err: Error) => ({ other: err.message })),
      }
    },
    sendMarker: (text) => rig.publish('room.hostile', enc(markerEvent(text))),
    async recover() {
      const warnings = [...new Set(rig.log.lines.slice(logMark).filter((l) => Number(l.level) >= 40).map((l) => `${l.msg} (${JSON.stringify(l.err ?? l.reason ?? '').slice(0, 200)})`))]
      await rig.stop()
      await rig.open()
      return warnings.join('; ')
    },
    async check(t, row, verdict) {
      if (!('refused' in verdict)) return
      const d = rig.deadLetter(rowSeq)
      t.equal(d?.headers?.get(DEAD_LETTER_HEADERS.stream), rig.server.config.nats.stream, `${row.name}: the dead letter names the stream`)
      const cut = d?.headers?.get(DEAD_LETTER_HEADERS.truncated)
      if (cut) {
        // Payload and headers together past the server's max_payload: the start, and the full length.
        t.equal(Number(cut), row.payload.length, `${row.name}: the dead letter says how long the payload was`)
        t.ok(d !== undefined && d.data.length > 0 && Buffer.from(d.data).equals(row.payload.subarray(0, d.data.length)), `${row.name}: and carries its start`)
      } else t.ok(d !== undefined && Buffer.from(d.data).equals(row.payload), `${row.name}: the dead letter carries the original bytes`)
    },
  }
}

for (const kind of STORES) {
  t.test(`NATS on the ${kind} store: every hostile payload published to the stream`, async (t) => {
    const rig = await NatsRig.start(t, () => storeOverrides(kind))
    await runRows(t, natsPath(rig))
    const ready = await rig.ready()
    t.equal(ready.status, 200, '/ready after all of them')
  })
}

for (const kind of STORES) {
  t.test(`issue #13 row 2 on the ${kind} store: the 4,300-level payload straight to JetStream is dead-lettered, ingest goes on`, async (t) => {
    const rig = await NatsRig.start(t, () => storeOverrides(kind))
    const curl = openSse(`${rig.server.url}/v1/competitions`, { accept: '*/*' })
    t.teardown(() => curl.close())
    await curl.waitFor(isLive, 10_000, 'the competitions stream to be live')
    const seqs = [await rig.publish('competition.c1', ISSUE_DEEP_ARRAYS), await rig.publish('competition.c1', ISSUE_DEEP_OBJECTS)]
    const next = await rig.publish('competition.c2', enc(JSON.stringify({ type: 'CompetitionActivatedEvent', competitionId: 'c2', data: { name: 'Final' } })))
    await curl.waitFor((es) => es.some((e) => e.id === String(next)), 10_000, 'the next CompetitionActivatedEvent')
    for (const seq of seqs) {
      const d = await until(() => rig.deadLetter(seq), 5000, `the dead letter of ${seq}`).catch(() => undefined)
      t.match(d?.headers?.get(DEAD_LETTER_HEADERS.reason), /data\.a.*(array directly inside an array|nested deeper than 64 levels)/, `sequence ${seq} dead-lettered with the rule`)
    }
    t.same((await storedAfter(rig.server, 0)).map((e) => e.id), [next], 'only the next event is stored')
    t.equal(await healthStatus(rig.server), 200, 'the process is up')
    t.equal((await rig.ready()).status, 200, 'and ready')
  })
}

for (const kind of STORES) {
  t.test(`issue #21 row 6 on the ${kind} store: a NATS key follows POST's rule, is scoped to NATS publishers, and a reuse with another body is dead-lettered`, async (t) => {
    const rig = await NatsRig.start(t, () => storeOverrides(kind))
    const live = await Followers.open(rig.server)
    t.teardown(() => live.close())
    const keyed = async (key: string, text: string): Promise<number> => {
      const h = natsHeaders()
      h.set('Tailcast-Idempotency-Key', key)
      return (await rig.nc.jetstream().publish(`${rig.prefix}room.hostile`, enc(markerEvent(text)), { headers: h, timeout: 10_000 })).seq
    }
    const bad = [await keyed('a b', 'space'), await keyed('x'.repeat(201), 'long'), await keyed('ключ', 'utf8')]
    const first = await keyed('raw-1', 'first')
    const other = await keyed('raw-1', 'another body')
    const again = await keyed('raw-1', 'first')
    // A NATS publisher cannot squat a POST publisher's key: the same key by POST is another key.
    const squat = await keyed('post-key', 'squat')
    await live.waitFor(squat, 10_000)
    const posted = await rig.server.post({ text: 'posted', room: 'hostile' }, { 'idempotency-key': 'post-key' })
    t.equal(posted.status, 202)
    t.not(Number(posted.body.id), squat, 'the POST is stored as its own event')
    await live.waitFor(Number(posted.body.id), 10_000)
    for (const seq of bad) {
      const d = await until(() => rig.deadLetter(seq), 5000, `the dead letter of ${seq}`).catch(() => undefined)
      t.match(d?.headers?.get(DEAD_LETTER_HEADERS.reason), /Tailcast-Idempotency-Key header must be 1-200 visible ASCII characters/, `sequence ${seq}: the key's rule`)
    }
    const d = await until(() => rig.deadLetter(other), 5000, 'the dead letter of the other body').catch(() => undefined)
    t.match(d?.headers?.get(DEAD_LETTER_HEADERS.reason), /idempotency key was already used for another event/, 'another body under a held key is dead-lettered')
    t.equal(rig.deadLetter(again), undefined, 'a repeat of the same body is no dead letter')
    t.same((await storedAfter(rig.server, 0)).map((e) => e.id), [first, squat, Number(posted.body.id)], 'stored: the first, the NATS key, the POST')
    const info = await (await rig.nc.jetstreamManager()).consumers.info(rig.server.config.nats.stream, rig.server.config.nats.durable).catch(() => null)
    t.equal(info?.num_ack_pending, 0, 'every message acked')
  })
}

t.test('with the default nats.maxPayload, a payload near the NATS server limit is dead-lettered and ingest goes on', async (t) => {
  // 64 KiB is the default limit; the dead letter of a 1 MiB payload must still fit in a NATS message with its headers.
  const rig = await NatsRig.start(t, () => storeOverrides('memory'), { maxPayload: 65_536 })
  const live = await Followers.open(rig.server)
  t.teardown(() => live.close())
  const big = await rig.publish('hostile', HOSTILE.find((r) => r.name === 'an event 1 byte over 1 MiB as JSON')!.payload)
  const next = await rig.publish('room.hostile', enc(markerEvent('after the big one')))
  await live.waitFor(next, 5000).then(
    () => t.pass('the next event got through'),
    (err: Error) => t.fail(`ingest stopped at the big payload: ${err.message}; logged: ${rig.log.since(0).filter((s) => /MAX_PAYLOAD|failed/.test(s)).slice(0, 3).join('; ')}`),
  )
  const d = await until(() => rig.deadLetter(big), 2000, 'its dead letter').catch(() => undefined)
  t.match(d?.headers?.get(DEAD_LETTER_HEADERS.reason), /nats\.maxPayload/, 'dead-lettered with the reason')
})

t.test('a message the store refuses (a unique index on the collection) is dead-lettered and acked; the next ones are stored', async (t) => {
  // The memory store refuses nothing; an operator's unique index makes MongoDB (FerretDB) refuse a document.
  const url = mongoUrl()
  const collection = freshCollection('uniq')
  const mongo = new MongoClient(url)
  await mongo.connect()
  t.teardown(() => mongo.close())
  const db = mongo.db(TEST_DATABASE)
  await db.createCollection(collection, { capped: true, size: 16 * 1024 * 1024, max: 10_000 })
  await db.collection(collection).createIndex({ 'data.uniq': 1 }, { unique: true, name: 'operator_uniq' })
  const rig = await NatsRig.start(t, () => ({ store: { type: 'mongodb', mongodb: { url, database: TEST_DATABASE, collection } } }))
  const live = await Followers.open(rig.server)
  t.teardown(() => live.close())
  const ev = (uniq: number, n: number): Buffer => enc(JSON.stringify({ type: 'T', room: 'hostile', data: { uniq, n } }))
  const a = await rig.publish('room.hostile', ev(1, 1))
  const refused = await rig.publish('room.hostile', ev(1, 2))
  const after = [await rig.publish('room.hostile', ev(2, 3)), await rig.publish('room.hostile', ev(3, 4))]
  await live.waitFor(after[1], 8000).then(
    () => t.pass('ingest went on past the refused message'),
    (err: Error) => t.fail(`ingest stopped at the refused message: ${err.message}`),
  )
  const d = await until(() => rig.deadLetter(refused), 1000, 'its dead letter').catch(() => undefined)
  t.ok(d !== undefined, 'the refused message is a dead letter')
  t.ok((d?.headers?.get(DEAD_LETTER_HEADERS.reason) ?? '') !== '', `with a reason: ${d?.headers?.get(DEAD_LETTER_HEADERS.reason)}`)
  t.same((await storedAfter(rig.server, 0)).map((e) => e.id), [a, ...after], 'the store holds the others, in order')
  const info = await (await rig.nc.jetstreamManager()).consumers.info(rig.server.config.nats.stream, rig.server.config.nats.durable).catch(() => null)
  t.equal(info?.num_ack_pending, 0, 'every message acked, the refused one too')
  t.equal(await healthStatus(rig.server), 200, 'the process is up')
})

t.test('a writer whose dead-letter stream was deleted creates it again: the bad message is dead-lettered, the next one stored', async (t) => {
  const rig = await NatsRig.start(t, () => storeOverrides('memory'))
  rig.unwatch()
  const jsm = await rig.nc.jetstreamManager()
  const dlStream = `${rig.server.config.nats.stream}_DEADLETTER`
  await jsm.streams.delete(dlStream)
  const bad = await rig.publish('hostile', ISSUE_DEEP_ARRAYS)
  const good = await rig.publish('room.hostile', enc(markerEvent('after the bad one')))
  const stored = await until(async () => ((await storedAfter(rig.server, 0)).length > 0 ? true : undefined), 15_000, 'the next event stored').catch(() => false)
  t.ok(stored, 'ingest goes on')
  const dl = await jsm.streams.getMessage(dlStream, { last_by_subj: rig.server.config.nats.deadLetterSubject }).catch(() => null)
  t.equal(dl?.header.get(DEAD_LETTER_HEADERS.sequence), String(bad), 'the bad message is dead-lettered in the re-created stream')
  t.same((await storedAfter(rig.server, 0)).map((e) => e.id), [good], 'and the next one stored')
  t.equal((await rig.ready()).status, 200)
})
