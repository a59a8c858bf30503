import fc from 'fast-check'
import t from 'tap'
import { decodeEvent, frameOf, InvalidEventError, parseNewEvent, toJson } from '../src/event.js'
import { isLive, openSse, postTo, type Received } from './helpers/clients.js'
import {
  Followers,
  HOSTILE,
  ISSUE_DEEP_ARRAYS,
  ISSUE_DEEP_OBJECTS,
  LARGE_LIMITS,
  MAX_EVENT_BYTES,
  ROOM,
  STORES,
  difference,
  healthStatus,
  markerEvent,
  replayMatches,
  runRows,
  storedAfter,
  type IngestPath,
  type Verdict,
} from './helpers/hostile.js'
import { startServer, storeOverrides, type StoreKind, type TestServer } from './helpers/server.js'

/**
 * Issue #13, "Exact and always up under hostile input": the hostile payloads through POST /messages
 * on each store, generated hostile events through the decoder and through POST, and the issue's row 1.
 * The other ingest paths: hostile-input-{nats,relay,recording}.test.ts, on the same table.
 */

t.test('the table agrees with the decoder itself', async (t) => {
  t.ok(HOSTILE.filter((r) => r.rule).length >= 25 && HOSTILE.filter((r) => !r.rule).length >= 15, `${HOSTILE.length} rows`)
  for (const row of HOSTILE) {
    if (row.rule === undefined) {
      const e = decodeEvent(row.payload, new Date('2026-11-22T18:00:00Z'))
      if (row.time !== undefined) t.equal(e.time, row.time, `${row.name}: time`)
      t.ok(Buffer.byteLength(toJson({ id: Number.MAX_SAFE_INTEGER, ...e })) <= MAX_EVENT_BYTES, `${row.name}: accepted`)
    } else {
      t.throws(() => decodeEvent(row.payload), row.rule, `${row.name}: refused with ${row.rule}`)
      t.throws(() => decodeEvent(row.payload), InvalidEventError, `${row.name}: as InvalidEventError`)
    }
  }
})

/** POST /messages as an ingest path: the answer itself says accepted (202 {id}) or refused (400 JSON). */
async function postPath(kind: StoreKind): Promise<IngestPath> {
  const start = (): Promise<TestServer> => startServer({ ...storeOverrides(kind), ...LARGE_LIMITS })
  let server = await start()
  return {
    get server() {
      return server
    },
    async send(row) {
      const r = await server.post(row.payload)
      const verdict = (): Verdict => {
        if (r.status === 202 && /^[1-9][0-9]*$/.test(r.body?.id)) return { accepted: Number(r.body.id) }
        const b = r.body as { statusCode?: unknown; error?: unknown; message?: unknown }
        if (r.status === 400 && b.statusCode === 400 && b.error === 'Bad Request' && typeof b.message === 'string') return { refused: b.message }
        return { other: `${r.status} ${JSON.stringify(r.body).slice(0, 300)}` }
      }
      return { settle: async () => verdict() }
    },
    async sendMarker(text) {
      const r = await server.post(markerEvent(text))
      if (r.status !== 202) throw new Error(`a normal event got ${r.status}: ${JSON.stringify(r.body)}`)
      return Number(r.body.id)
    },
    async recover() {
      await server.close()
      server = await start()
    },
  }
}

for (const kind of STORES) {
  t.test(`POST /messages on the ${kind} store: every hostile payload`, async (t) => {
    const path = await postPath(kind)
    t.teardown(() => path.server.close())
    await runRows(t, path)
  })
}

/** What the decoder must refuse, said independently of it: null when `v` is fine as `data` content at `depth`. */
function violation(v: unknown, depth: number, inArray: boolean): string | null {
  if (v === null || typeof v === 'boolean') return null
  if (typeof v === 'string') return v.isWellFormed() ? null : 'ill-formed string'
  if (typeof v === 'number') return Number.isFinite(v) ? null : 'non-finite number'
  if (typeof v !== 'object') return `a ${typeof v}`
  if (depth > 64) return 'too deep'
  if (Array.isArray(v)) {
    if (inArray) return 'array in array'
    for (const x of v) {
      const why = violation(x, depth + 1, true)
      if (why !== null) return why
    }
    return null
  }
  for (const k of Object.keys(v)) {
    if (k === '' || k.length > 256 || k === '__proto__' || k === '_id' || k.startsWith('$') || k.includes('.') || k.includes('\0') || !k.isWellFormed()) return `key ${JSON.stringify(k)}`
    const x = (v as Record<string, unknown>)[k]
    if (k === 'constructor' && x !== null && typeof x === 'object' && Object.hasOwn(x, 'prototype')) return 'constructor.prototype'
    if (Array.isArray(x) && Object.hasOwn(Object.prototype, k)) return `an array under ${k}`
    const why = violation(x, depth + 1, false)
    if (why !== null) return why
  }
  return null
}

/** JSON equality: same keys in the same order, numbers by value (-0 is 0 in JSON). */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' || typeof b === 'number') return a === b
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length || ka.some((k, i) => k !== kb[i])) return false
  return ka.every((k) => jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

/** An object with these own keys, `__proto__` included (as JSON.parse makes it), never a polluted prototype. */
function objectOf(entries: [string, unknown][]): Record<string, unknown> {
  const o: Record<string, unknown> = {}
  for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })
  return o
}

const hostileChar = fc.oneof(
  { weight: 8, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.constantFrom('\ud800', '\udfff', '.', '$', '\0', '\u2028', '\n', '"', '\\') },
)
const hostileString = fc.string({ unit: hostileChar, maxLength: 8 })
const hostileKey = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 6 }) },
  { weight: 3, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 4 }) },
  { weight: 2, arbitrary: fc.constantFrom('', '__proto__', 'constructor', 'prototype', 'toString', 'valueOf', '_id', '$', '$gt', 'a.b', '0', 'k'.repeat(256), 'k'.repeat(257)) },
)
const leaf = fc.oneof(
  { weight: 3, arbitrary: fc.double() },
  { weight: 2, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.constantFrom(-0, 5e-324, Number.MAX_VALUE, -Number.MAX_VALUE, 2 ** 53 + 2, Infinity, -Infinity, NaN) },
  { weight: 3, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false) },
  { weight: 1, arbitrary: fc.constantFrom(undefined, 10n) },
)
/** Nested objects and arrays with hostile keys and leaves (letrec keeps the depth small but unbounded). */
const { value: hostileValue } = fc.letrec<{ value: unknown; object: Record<string, unknown>; array: unknown[] }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('object'), tie('array')),
  object: fc.array(fc.tuple(hostileKey, tie('value')), { maxLength: 5 }).map(objectOf),
  array: fc.array(tie('value'), { maxLength: 5 }),
}))
/** Chains around the depth limit: objects, and arrays of objects, 60-70 levels deep. */
const deepChain = fc.tuple(fc.integer({ min: 58, max: 70 }), fc.boolean(), hostileValue).map(([n, viaArrays, inner]) => {
  let v: unknown = inner
  for (let i = 0; i < n; i++) v = viaArrays && i % 2 === 1 ? [v] : { a: v }
  return { deep: v }
})
const hostileData = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.tuple(hostileKey, hostileValue), { maxLength: 6 }).map(objectOf) },
  { weight: 1, arbitrary: deepChain },
  { weight: 1, arbitrary: fc.jsonValue().map((v) => ({ v })) },
)

/** The envelope's size rule, measured as the decoder documents it (with the largest id). */
function overSize(data: unknown): boolean {
  return Buffer.byteLength(toJson({ id: Number.MAX_SAFE_INTEGER, type: 'T', room: ROOM, time: '2026-11-22T18:00:00.000Z', data: data as Record<string, unknown> })) > MAX_EVENT_BYTES
}

t.test('decoder property: hostile values are refused with InvalidEventError, or serialise and round-trip exactly', async (t) => {
  let accepted = 0
  let refused = 0
  const result = fc.check(
    fc.property(hostileData, (data) => {
      const why = violation(data, 1, false)
      let e
      try {
        e = parseNewEvent({ type: 'T', room: ROOM, data }, new Date('2026-11-22T18:00:00Z'))
      } catch (err) {
        if (!(err instanceof InvalidEventError)) throw new Error(`threw ${(err as Error).name}, not InvalidEventError: ${(err as Error).message}`)
        if (why === null && !overSize(data)) throw new Error(`refused a valid event: ${err.message}`)
        refused++
        return true
      }
      if (why !== null) throw new Error(`accepted an event with ${why}`)
      const frame = frameOf({ id: 42, ...e })
      const back = JSON.parse(frame.json.toString('utf8')) as { data: unknown }
      if (!jsonEqual(back.data, data)) throw new Error('the frame does not round-trip to the same data')
      if (!frame.sse.toString('utf8').endsWith(`data: ${frame.json.toString('utf8')}\n\n`)) throw new Error('the SSE record does not carry the JSON on one data line')
      accepted++
      return true
    }),
    { numRuns: 200, seed: 1313 },
  )
  t.notOk(result.failed, result.failed ? fc.defaultReportMessage(result) ?? 'failed' : 'every generated value')
  t.ok(accepted > 20 && refused > 20, `both outcomes generated: ${accepted} accepted, ${refused} refused`)
})

/** JSON text that keeps what JSON.stringify would lose: Infinity as 1e400, NaN as 1e400 too, a bigint as its digits. */
function hostileJson(v: unknown): string {
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : v < 0 ? '-1e400' : '1e400'
  if (typeof v === 'bigint') return v.toString()
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : hostileJson(x))).join(',')}]`
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${hostileJson(o[k])}`)
      .join(',')}}`
  }
  return JSON.stringify(v)
}

const TIMES: [string, boolean][] = [
  ['2026-02-30T00:00:00Z', false],
  ['2026-11-22T18:00:00', false],
  ['9999-12-31T23:59:59-23:59', false],
  ['0000-01-01T00:00:00+00:01', false],
  ['2024-02-29T12:00:00.5+02:00', true],
  ['0000-01-01T00:00:00Z', true],
  ['2026-11-22T18:00:00.123456789-09:30', true],
]
/** Data that is mostly valid (so that both answers come up): plain keys, finite numbers, no array directly in an array. */
const plainKey = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }).filter((k) => !k.includes('.') && !k.startsWith('$') && k !== '__proto__' && k !== 'constructor')
const { object: plainObject } = fc.letrec<{ object: Record<string, unknown>; value: unknown }>((tie) => ({
  object: fc.array(fc.tuple(plainKey, tie('value')), { maxLength: 4 }).map(objectOf),
  value: fc.oneof(
    { depthSize: 'small' },
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.string({ unit: 'grapheme', maxLength: 8 }),
    fc.string({ unit: 'binary', maxLength: 4 }),
    fc.constantFrom(null, true, false, -0, 5e-324),
    tie('object'),
    fc.array(fc.oneof(fc.integer(), fc.string(), tie('object')), { maxLength: 3 }),
  ),
}))
const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.oneof({ weight: 7, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb })
const bodyArb = fc
  .record({ data: fc.oneof(hostileData, plainObject), time: rarely(fc.constantFrom(...TIMES)), badByte: rarely(fc.nat()) })
  .map(({ data, time, badByte }) => {
    const text = `{"type":"T","room":"${ROOM}"${time ? `,"time":${JSON.stringify(time[0])}` : ''},"data":${hostileJson(data)}}`
    let body = Buffer.from(text, 'utf8')
    if (badByte !== undefined) body = Buffer.concat([body.subarray(0, 20 + (badByte % (body.length - 21))), Buffer.from([0xff]), body.subarray(20 + (badByte % (body.length - 21)))])
    let valid = badByte === undefined && (time === undefined || time[1])
    if (valid) {
      const parsed = JSON.parse(text) as { data: unknown }
      valid = violation(parsed.data, 1, false) === null && !overSize(parsed.data)
    }
    return { body, valid }
  })

for (const kind of STORES) {
  t.test(`POST property on the ${kind} store: 202 iff stored and valid, 400 iff unchanged, never 5xx, replay = live`, async (t) => {
    const server = await startServer({ ...storeOverrides(kind), ...LARGE_LIMITS })
    t.teardown(() => server.close())
    const live = await Followers.open(server)
    t.teardown(() => live.close())
    const expected = new Map<number, string>()
    let lastMarker = 0
    const result = await fc.check(
      fc.asyncProperty(fc.array(bodyArb, { minLength: 1, maxLength: 3 }), async (bodies) => {
        const before = (await server.app.store.bounds()).newest ?? 0
        // Concurrent posts: a refused one must not take the others with it.
        const answers = await Promise.all(bodies.map((b) => postTo(server.url, b.body)))
        const ids: number[] = []
        for (const [i, r] of answers.entries()) {
          if (r.status === 202) {
            if (!bodies[i].valid) throw new Error(`202 for an invalid body ${bodies[i].body.toString('utf8').slice(0, 200)}`)
            ids.push(Number(r.body.id))
          } else if (r.status === 400) {
            if (bodies[i].valid) throw new Error(`400 for a valid body: ${r.body.message}`)
            if (r.body?.statusCode !== 400 || typeof r.body.message !== 'string') throw new Error(`400 without a JSON message: ${JSON.stringify(r.body)}`)
          } else {
            throw new Error(`status ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`)
          }
        }
        const marker = await server.post(markerEvent('after a generated batch'))
        if (marker.status !== 202) throw new Error(`the normal event after it got ${marker.status}`)
        lastMarker = Number(marker.body.id)
        await live.waitFor(lastMarker, 8000)
        const stored = await storedAfter(server, before)
        const want = [...ids, lastMarker].sort((a, b) => a - b)
        if (JSON.stringify(stored.map((e) => e.id)) !== JSON.stringify(want)) throw new Error(`the store holds ${JSON.stringify(stored.map((e) => e.id))}, not the 202 ids and the marker ${JSON.stringify(want)}`)
        for (const id of ids) {
          const i = answers.findIndex((r) => r.status === 202 && Number(r.body.id) === id)
          const got = live.raw(id)
          const time = (JSON.parse(got.sse ?? '{}') as Received).time
          const exact = toJson({ id, ...parseNewEvent(JSON.parse(bodies[i].body.toString('utf8')), new Date(time)) })
          const stored1 = stored.find((e) => e.id === id)
          for (const [where, json] of [['SSE', got.sse], ['WebSocket', got.ws], ['the store', stored1 && toJson(stored1)]] as const) {
            const d = difference(json, exact)
            if (d !== null) throw new Error(`event ${id} via ${where} is not what was posted: ${d}`)
          }
          expected.set(id, exact)
        }
        if ((await healthStatus(server)) !== 200) throw new Error('the server stopped answering /health')
        return true
      }),
      { numRuns: 40, seed: 4242 },
    )
    t.notOk(result.failed, result.failed ? fc.defaultReportMessage(result) ?? 'failed' : 'every generated batch')
    t.ok(expected.size > 3, `${expected.size} generated events were accepted`)
    await replayMatches(t, server, expected)
  })
}

for (const kind of STORES) {
  t.test(`issue #13 row 1 on the ${kind} store: a 4,300-level POST is a 400, the competitions stream goes on`, async (t) => {
    const server = await startServer(storeOverrides(kind))
    t.teardown(() => server.close())
    // As `curl -N http://host/v1/competitions` asks: a plain GET, Accept: */*.
    const curl = openSse(`${server.url}/v1/competitions`, { accept: '*/*' })
    t.teardown(() => curl.close())
    await curl.waitFor(isLive, 10_000, 'the competitions stream to be live')
    for (const payload of [ISSUE_DEEP_ARRAYS, ISSUE_DEEP_OBJECTS]) {
      const r = await server.post(payload)
      t.equal(r.status, 400, 'refused, not 202')
      t.match(r.body, { statusCode: 400, error: 'Bad Request', message: /data\.a.*(array directly inside an array|nested deeper than 64 levels)/ }, 'a JSON message naming the field and the rule')
    }
    t.same(await storedAfter(server, 0), [], 'nothing stored')
    t.equal(await healthStatus(server), 200, 'the process is up')
    const later = await server.post({ type: 'CompetitionActivatedEvent', competitionId: 'c2', data: { name: 'Final' } })
    t.equal(later.status, 202, 'the next event is taken')
    await curl.waitFor((es) => es.some((e) => e.id === later.body.id), 10_000, 'the later CompetitionActivatedEvent')
    t.notOk(curl.events.some((e) => e.type === 'reset'), 'the stream never reset')
    const ended = await Promise.race([curl.ended.then(() => true), Promise.resolve(false)])
    t.notOk(ended, 'the stream is still open')
  })
}
