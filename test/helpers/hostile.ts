import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { parseNewEvent, toJson, type StoredEvent } from '../../src/event.js'
import type { StreamFilter } from '../../src/stream.js'
import { isLive, openSse, openWs, type Received, type StreamClient } from './clients.js'
import type { StoreKind, TestServer } from './server.js'
import { waitUntil } from './wait.js'

/**
 * The hostile-input suite (issue #13): one table of payloads, driven through every ingest path
 * (POST, NATS, a relay's upstream, a recording) on every store by one harness, so that each path
 * file only says how its path sends a payload and how it reports a refusal.
 */

export const STORES: StoreKind[] = ['memory', 'mongodb']

/** The room every accepted row and every marker event goes to. */
export const ROOM = 'hostile'

/** The decoder's size limit (EVENT_LIMITS.maxBytes), in bytes of the envelope with the largest id. */
export const MAX_EVENT_BYTES = 1024 * 1024

/** Servers of this suite take bodies and NATS payloads past 1 MiB, so the decoder's own limit is what answers. */
export const LARGE_LIMITS = { bodyLimit: 2 * MAX_EVENT_BYTES }
export const LARGE_NATS = { maxPayload: 2 * MAX_EVENT_BYTES }

export interface HostileRow {
  name: string
  /** The event as it enters (no id): a POST body, a NATS payload; relays and recordings add the id. */
  payload: Buffer
  /** Refused: what the reason must say (the field and the rule). Absent: accepted. */
  rule?: RegExp
  /** Accepted: the `time` it must be stored with. */
  time?: string
}

const enc = (s: string): Buffer => Buffer.from(s, 'utf8')

/** A full event of type T in the room, with `data` given as JSON text (so it can hold what JSON.stringify cannot write). */
export function eventText(data: string, extra = ''): string {
  return `{"type":"T","room":"${ROOM}"${extra},"data":${data}}`
}

/** `n` levels of objects, the outermost counting as level 1: {"a":{"a":...{}}}. */
export function nestedObjects(n: number): string {
  return '{"a":'.repeat(n - 1) + '{}' + '}'.repeat(n - 1)
}

/** An event whose envelope (with the largest id, as the decoder measures it) is exactly `bytes` long. */
function sized(bytes: number): Buffer {
  const time = '2026-11-22T18:00:00.000Z'
  const shell = (pad: string): string => eventText(`{"pad":"${pad}"}`, `,"time":"${time}"`)
  const envelope = (pad: string): number => Buffer.byteLength(toJson({ id: Number.MAX_SAFE_INTEGER, type: 'T', room: ROOM, time, data: { pad } }))
  const pad = 'x'.repeat(bytes - envelope(''))
  const out = enc(shell(pad))
  if (envelope(pad) !== bytes) throw new Error(`sized(${bytes}) came out as ${envelope(pad)} bytes`)
  return out
}

/** An event whose data.s holds these bytes between "a" and "b": valid JSON, but for the bytes. */
function withBytes(bytes: number[]): Buffer {
  return Buffer.concat([enc(`{"type":"T","room":"${ROOM}","data":{"s":"a`), Buffer.from(bytes), enc('b"}}')])
}

/** The issue's row 1: a CompetitionActivatedEvent whose data holds 4,300 levels of arrays. */
export const ISSUE_DEEP_ARRAYS = enc(`{"type":"CompetitionActivatedEvent","competitionId":"c1","data":{"a":${'['.repeat(4300)}${']'.repeat(4300)}}}`)
/** The same depth made of objects, so the depth rule itself answers (the array rule answers the one above). */
export const ISSUE_DEEP_OBJECTS = enc(`{"type":"CompetitionActivatedEvent","competitionId":"c1","data":${nestedObjects(4300)}}`)

const DEPTH = /nested deeper than 64 levels/
const PROTO = /prototype pollution/
const FINITE = /numbers must be finite/
const YEARS = /years 0000-9999/

/** Every hostile payload: refused ones with the rule their reason must name, accepted ones exactly as they must come back. */
export const HOSTILE: HostileRow[] = [
  { name: 'issue #13: 4,300 levels of arrays in data', payload: ISSUE_DEEP_ARRAYS, rule: /data\.a\[0\]: an array directly inside an array/ },
  { name: '4,300 levels of objects in data', payload: ISSUE_DEEP_OBJECTS, rule: DEPTH },
  { name: '65 levels of objects in data', payload: enc(eventText(nestedObjects(65))), rule: DEPTH },
  { name: '65 levels through arrays of objects', payload: enc(eventText(`{"a":${'[{"a":'.repeat(32)}1${'}]'.repeat(32)}}`)), rule: DEPTH },
  { name: 'an array directly inside an array', payload: enc(eventText('{"a":[1,[2]]}')), rule: /data\.a\[1\]: an array directly inside an array/ },
  { name: 'NUL in a key', payload: enc(eventText('{"a\\u0000b":1}')), rule: /key names must not contain NUL/ },
  { name: 'a dotted key', payload: enc(eventText('{"a.b":1}')), rule: /key names must not contain "\."/ },
  { name: 'a key starting with $', payload: enc(eventText('{"$x":1}')), rule: /key names must not start with "\$"/ },
  { name: 'a $ operator key deeper down', payload: enc(eventText('{"q":[{"$where":"sleep(1000)"}]}')), rule: /data\.q\[0\]: key "\$where": key names must not start with "\$"/ },
  { name: '1e400', payload: enc(eventText('{"n":1e400}')), rule: FINITE },
  { name: '-1e400', payload: enc(eventText('{"n":[-1e400]}')), rule: FINITE },
  { name: 'a lone surrogate in a value', payload: enc(eventText('{"s":"\\ud800"}')), rule: /data\.s: strings must be well-formed Unicode/ },
  { name: 'a lone low surrogate inside a value', payload: enc(eventText('{"s":"a\\udc00b"}')), rule: /strings must be well-formed Unicode/ },
  { name: 'a lone surrogate in a key', payload: enc(eventText('{"\\ud800":1}')), rule: /key names must be well-formed Unicode/ },
  { name: 'a lone surrogate in a room message', payload: enc(`{"text":"hi \\udbff","room":"${ROOM}"}`), rule: /text: strings must be well-formed Unicode/ },
  { name: '__proto__ key in data', payload: enc(eventText('{"__proto__":{"admin":true}}')), rule: PROTO },
  { name: 'constructor.prototype key in data', payload: enc(eventText('{"o":{"constructor":{"prototype":{"admin":true}}}}')), rule: PROTO },
  { name: 'invalid UTF-8 bytes (FF FE)', payload: withBytes([0xff, 0xfe]), rule: /UTF-8/ },
  { name: 'a UTF-8-encoded surrogate (ED A0 80)', payload: withBytes([0xed, 0xa0, 0x80]), rule: /UTF-8/ },
  { name: 'an over-long UTF-8 encoding (C0 AF)', payload: withBytes([0xc0, 0xaf]), rule: /UTF-8/ },
  { name: 'time 2026-02-30 (no such day)', payload: enc(eventText('{}', ',"time":"2026-02-30T00:00:00Z"')), rule: /time must be a real calendar date/ },
  { name: 'time without a zone', payload: enc(eventText('{}', ',"time":"2026-11-22T18:00:00"')), rule: /time must be an ISO-8601 date-time with a zone/ },
  { name: 'time 9999-12-31T23:59:59-23:59 (year 10000 in UTC)', payload: enc(eventText('{}', ',"time":"9999-12-31T23:59:59-23:59"')), rule: YEARS },
  { name: 'time 0000-01-01T00:00:00+00:01 (year -1 in UTC)', payload: enc(eventText('{}', ',"time":"0000-01-01T00:00:00+00:01"')), rule: YEARS },
  { name: 'a key of 257 characters', payload: enc(eventText(`{"${'k'.repeat(257)}":1}`)), rule: /key names are at most 256 characters/ },
  { name: 'an empty key', payload: enc(eventText('{"o":{"":1}}')), rule: /data\.o: empty key names are not allowed/ },
  { name: 'an event 1 byte over 1 MiB as JSON', payload: sized(MAX_EVENT_BYTES + 1), rule: /over the limit of 1048576/ },

  { name: 'unicode keys and values, emoji, bidi controls', payload: enc(eventText('{"ключ":"значение","键🔑":"值🎉","👩‍👩‍👧‍👦":"\u202egnp.exe","ﬀ":"e\u0301"}')) },
  { name: '-0', payload: enc(eventText('{"z":-0,"zs":[-0.0,0]}')) },
  { name: '5e-324 (the smallest double)', payload: enc(eventText('{"n":5e-324}')) },
  { name: '1.7976931348623157e308 (the largest double)', payload: enc(eventText('{"n":1.7976931348623157e308,"m":-1.7976931348623157e308}')) },
  { name: '12345678901234567890 (past 2^53)', payload: enc(eventText('{"n":12345678901234567890,"big":9007199254740993}')) },
  { name: 'NUL inside a string value', payload: enc(eventText('{"s":"a\\u0000b"}')) },
  { name: 'SSE line breaks and separators inside a value', payload: enc(eventText('{"s":"a\\r\\nb\\n\\ndata: {}\\n\\u2028\\u2029\\u0085id: 1"}')) },
  { name: 'a key named constructor with a string value', payload: enc(eventText('{"constructor":"x","prototype":"y","o":{"constructor":{"name":"z"}}}')) },
  { name: 'a key named toString holding objects in an array', payload: enc(eventText('{"toString":[{"a":1}],"valueOf":[{"b":[2]}]}')), rule: /array under the key "toString" is not supported/ },
  { name: 'an _id key that is not first', payload: enc(eventText('{"a":1,"_id":2,"o":{"b":1,"_id":"x"}}')), rule: /"_id" is reserved/ },
  { name: 'integer-like keys', payload: enc(eventText('{"b":1,"10":2,"9":3,"-1":4}')) },
  { name: '$ inside a key (not leading)', payload: enc(eventText('{"price$":1,"a$b":2}')) },
  { name: '64 levels of objects in data', payload: enc(eventText(nestedObjects(64))) },
  { name: 'arrays of objects of arrays', payload: enc(eventText('{"a":[{"b":[{"c":[1,"x",null,true,{}]}]},{"d":[]}]}')) },
  { name: 'a key of 256 characters', payload: enc(eventText(`{"${'k'.repeat(256)}":1}`)) },
  { name: 'a room message with NUL and emoji', payload: enc(`{"text":"\\u0000👋 hi","room":"${ROOM}"}`) },
  { name: 'time 2024-02-29T12:00:00.5+02:00', payload: enc(eventText('{}', ',"time":"2024-02-29T12:00:00.5+02:00"')), time: '2024-02-29T10:00:00.500Z' },
  { name: 'time 0000-01-01T00:00:00Z', payload: enc(eventText('{}', ',"time":"0000-01-01T00:00:00Z"')), time: '0000-01-01T00:00:00.000Z' },
  { name: 'time 9999-12-31T23:59:59.999999Z', payload: enc(eventText('{}', ',"time":"9999-12-31T23:59:59.999999Z"')), time: '9999-12-31T23:59:59.999Z' },
  { name: 'an event of exactly 1 MiB as JSON', payload: sized(MAX_EVENT_BYTES) },
]

/** The wire message of a row (a relay's upstream, a recording): the payload with `"id"` in front. */
export function withId(payload: Buffer, id: number): Buffer {
  return Buffer.concat([enc(`{"id":"${id}",`), payload.subarray(1)])
}

/** The envelope an accepted row must be delivered and stored as, byte for byte; `time` from delivery when the row has none. */
export function expectedJson(row: HostileRow, id: number, deliveredTime: string): string {
  return toJson({ id, ...parseNewEvent(JSON.parse(row.payload.toString('utf8')), new Date(deliveredTime)) })
}

/** A short description of where two long strings differ (a 1 MiB diff helps no one). */
export function difference(got: string | undefined, want: string): string | null {
  if (got === want) return null
  if (got === undefined) return 'nothing was received'
  let i = 0
  while (i < got.length && i < want.length && got[i] === want[i]) i++
  const at = (s: string): string => JSON.stringify(s.slice(Math.max(0, i - 40), i + 80))
  return `${got.length} vs ${want.length} chars, first difference at ${i}: got ${at(got)}, want ${at(want)}`
}

/** Every stream a row can reach: rooms, the competitions window, competition c1 (the issue's rows). */
const FILTERS: StreamFilter[] = [
  { kind: 'room', room: null },
  { kind: 'competitions', windowMs: 1e13 },
  { kind: 'competition', competitionId: 'c1' },
]

/** What the store holds after `afterId`, on every stream, in id order. */
export async function storedAfter(server: { app: FastifyInstance }, afterId: number): Promise<StoredEvent[]> {
  const byId = new Map<number, StoredEvent>()
  for (const f of FILTERS) for (const e of await server.app.store.read(f, afterId, 10_000)) byId.set(e.id, e)
  return [...byId.values()].sort((a, b) => a.id - b.id)
}

/** Poll `check` every 20 ms until it returns a value (not undefined), at most `timeoutMs`: a bounded wait, never a fixed sleep. */
export function until<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string): Promise<T> {
  return waitUntil(check, timeoutMs, what, 20)
}

export async function healthStatus(server: { url: string }): Promise<number> {
  return fetch(`${server.url}/health`).then(
    (r) => r.status,
    () => 0,
  )
}

/** The value of `tailcast_events_dropped_total{reason="invalid"}`. */
export async function droppedInvalid(server: { url: string }): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  const m = /^tailcast_events_dropped_total\{reason="invalid"\} (\d+)/m.exec(text)
  return m === null ? 0 : Number(m[1])
}

/** Log lines of a server, as parsed pino objects, for `startServer({ logLevel: 'info' }, { logStream: sink.stream })`. */
export function logSink(): { lines: Record<string, unknown>[]; stream: { write(s: string): void }; since(n: number): string[] } {
  const lines: Record<string, unknown>[] = []
  const strings = (v: unknown, out: string[]): string[] => {
    if (typeof v === 'string') out.push(v)
    else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) strings(x, out)
    return out
  }
  return {
    lines,
    stream: {
      write: (s: string) => {
        try {
          lines.push(JSON.parse(s) as Record<string, unknown>)
        } catch {
          lines.push({ msg: s })
        }
      },
    },
    /** Every string of every line logged from index `n` on (messages, reasons, error messages). */
    since: (n) => lines.slice(n).flatMap((l) => strings(l, [])),
  }
}

/** The SSE and WebSocket followers of the hostile room on one server, opened before anything is sent. */
export class Followers {
  constructor(readonly sse: StreamClient, readonly ws: StreamClient) {}

  static async open(server: { url: string; wsUrl: string }, path = `/messages?room=${ROOM}`): Promise<Followers> {
    const f = new Followers(openSse(server.url + path), openWs(server.wsUrl + path))
    await f.sse.waitFor(isLive, 10_000, 'the SSE follower to be live')
    await f.ws.waitFor(isLive, 10_000, 'the WebSocket follower to be live')
    return f
  }

  /** Both got event `id` (bounded); rejects when either did not, or its stream ended. */
  async waitFor(id: number, timeoutMs: number): Promise<void> {
    const has = (es: Received[]): boolean => es.some((e) => e.id === String(id))
    await Promise.all([this.sse.waitFor(has, timeoutMs, `event ${id} over SSE`), this.ws.waitFor(has, timeoutMs, `event ${id} over WebSocket`)])
  }

  raw(id: number): { sse?: string; ws?: string } {
    const find = (c: StreamClient): string | undefined => c.events.find((e) => e.id === String(id))?.raw
    return { sse: find(this.sse), ws: find(this.ws) }
  }

  close(): void {
    this.sse.close()
    this.ws.close()
  }
}

/** What an ingest path said about one row. */
export type Verdict = { accepted: number } | { refused: string } | { other: string }

/** One ingest path, as the harness drives it: one server shared by every row. */
export interface IngestPath {
  /** The server whose store the rows must reach (or not) and whose clients follow. */
  readonly server: TestServer
  /** Send a row; `settle` is called once a later event got through, and says what became of it. */
  send(row: HostileRow): Promise<{ settle(): Promise<Verdict> }>
  /** Send a normal room message; resolves with the id it gets. */
  sendMarker(text: string): Promise<number>
  /** Resolves (with why) when the path cannot get past the row: the harness stops waiting. */
  stalled?(): Promise<string>
  /** After a stalled row: make the path usable again (drop the row, or start a fresh server); may say what the server logged. */
  recover(): Promise<string | void>
  /** Checks of the path's own (a counted drop, no reconnect, ...) after each row. */
  check?(t: Test, row: HostileRow, verdict: Verdict): Promise<void>
}

const MARKER_WAIT_MS = 5000

/**
 * Every row through one path: before each row the store's newest id; then the row and a normal
 * event after it, which both followers must get. A refused row leaves the store unchanged (only the
 * marker is new) and is reported with its rule; an accepted one is stored and delivered exactly as
 * expectedJson says, on both transports; the server answers /health after every row. At the end a
 * fresh client's replay carries the same bytes for every accepted row.
 */
export async function runRows(t: Test, path: IngestPath, rows: HostileRow[] = HOSTILE): Promise<void> {
  let followers = await Followers.open(path.server)
  const accepted = new Map<number, string>()
  t.teardown(() => followers.close())
  for (const [i, row] of rows.entries()) {
    const label = `${row.name}`
    const server = path.server
    const before = (await server.app.store.bounds()).newest ?? 0
    const sent = await path.send(row)
    const marker = await path.sendMarker(`after row ${i}`)
    const through = followers.waitFor(marker, MARKER_WAIT_MS).then(() => null)
    const stall = path.stalled ? path.stalled().then((why) => why) : new Promise<never>(() => {})
    const stuck = await Promise.race([through, stall]).catch((err: Error) => err.message)
    if (stuck !== null) {
      const note = await path.recover()
      t.fail(`${label}: the event after it did not get through (${stuck})${note ? `; the server logged: ${note}` : ''}`)
      followers.close()
      followers = await Followers.open(path.server)
      continue
    }
    t.equal(await healthStatus(server), 200, `${label}: the server still answers /health`)
    const verdict = await sent.settle()
    const after = (await storedAfter(server, before)).map((e) => e.id)
    if (row.rule !== undefined) {
      if ('refused' in verdict) t.match(verdict.refused, row.rule, `${label}: refused, naming the rule`)
      else t.fail(`${label}: should be refused (${row.rule}), got ${JSON.stringify(verdict).slice(0, 300)}`)
      t.same(after, [marker], `${label}: the store is unchanged (only the event after it is new)`)
    } else if (!('accepted' in verdict)) {
      t.fail(`${label}: should be accepted, got ${JSON.stringify(verdict).slice(0, 300)}`)
    } else {
      const id = verdict.accepted
      t.same(after, [id, marker], `${label}: stored, then the event after it`)
      const live = followers.raw(id)
      const time = followers.sse.events.find((e) => e.id === String(id))?.time ?? ''
      if (row.time !== undefined) t.equal(time, row.time, `${label}: time stored as ${row.time}`)
      const want = expectedJson(row, id, time)
      accepted.set(id, live.sse ?? want)
      t.equal(difference(live.sse, want), null, `${label}: the SSE follower got exactly the event`)
      t.equal(difference(live.ws, want), null, `${label}: the WebSocket follower got exactly the event`)
      const [stored] = (await storedAfter(server, id - 1)).filter((e) => e.id === id)
      t.equal(difference(stored === undefined ? undefined : toJson(stored), want), null, `${label}: the store gives back exactly the event`)
    }
    if (path.check) await path.check(t, row, verdict)
  }
  await replayMatches(t, path.server, accepted)
}

/** A fresh client of each transport replays every accepted event with exactly the bytes the followers got (`live`: id -> JSON). */
export async function replayMatches(t: Test, server: { url: string; wsUrl: string }, live: Map<number, string>): Promise<void> {
  const fresh = await Followers.open(server)
  try {
    for (const [id, want] of live) {
      const got = fresh.raw(id)
      t.equal(difference(got.sse, want), null, `replay over SSE of ${id} carries exactly the live bytes`)
      t.equal(difference(got.ws, want), null, `replay over WebSocket of ${id} carries exactly the live bytes`)
    }
  } finally {
    fresh.close()
  }
}

/**
 * A hostile upstream for a relay: a raw node:http SSE server that serves a log of (id, data line)
 * after the Last-Event-ID it is asked for, then `live`, then whatever is pushed. The data lines are
 * bytes as the test wrote them (invalid UTF-8, 1 MiB, refused events): a peer, not a tailcast.
 */
export class HostileUpstream {
  readonly log: { id: number; data: Buffer }[] = []
  /** The Last-Event-ID of every connection the relay made, in order. */
  readonly connections: (string | undefined)[] = []
  private readonly open = new Set<http.ServerResponse>()
  private readonly server: http.Server
  private onConnect: (() => void)[] = []

  private constructor() {
    this.server = http.createServer((req, res) => {
      const last = req.headers['last-event-id'] as string | undefined
      this.connections.push(last)
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      const after = Number(last ?? 0)
      const replay = this.log.filter((e) => e.id > after)
      for (const e of replay) res.write(this.record(e))
      const position = Math.max(after, ...this.log.map((e) => e.id))
      res.write(`data: ${JSON.stringify({ id: String(position), type: 'live', time: new Date().toISOString(), data: {} })}\n\n`)
      this.open.add(res)
      res.on('close', () => this.open.delete(res))
      for (const f of this.onConnect.splice(0)) f()
    })
  }

  static async start(): Promise<HostileUpstream> {
    const u = new HostileUpstream()
    await new Promise<void>((r) => u.server.listen(0, '127.0.0.1', r))
    return u
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/messages`
  }

  private record(e: { id: number; data: Buffer }): Buffer {
    return Buffer.concat([Buffer.from(`id: ${e.id}\nevent: T\ndata: `), e.data, Buffer.from('\n\n')])
  }

  push(id: number, data: Buffer): void {
    const e = { id, data }
    this.log.push(e)
    for (const res of this.open) res.write(this.record(e))
  }

  remove(id: number): void {
    const i = this.log.findIndex((e) => e.id === id)
    if (i >= 0) this.log.splice(i, 1)
  }

  /** Resolves at the next connection the relay makes. */
  nextConnection(): Promise<void> {
    return new Promise((r) => this.onConnect.push(r))
  }

  async close(): Promise<void> {
    for (const res of this.open) res.destroy()
    this.server.closeAllConnections()
    await new Promise<void>((r) => this.server.close(() => r()))
  }
}

/** A room message as the normal event after a row. */
export function markerEvent(text: string): string {
  return JSON.stringify({ text, room: ROOM })
}
