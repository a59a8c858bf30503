import t from 'tap'
import { type Msg } from 'nats'
import { DEAD_LETTER_HEADERS } from '../../src/ingest/nats-ingest.js'
import { dataEvents, isLive, openSse } from '../helpers/clients.js'
import { natsClient, natsOverrides, natsUrl, removeNatsStreams } from '../helpers/nats.js'
import { startServer } from '../helpers/server.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/** Payloads that are not events, each with a word the dead-letter reason must contain. */
const INVALID: { name: string; payload: Uint8Array; reason: RegExp }[] = [
  { name: 'empty payload', payload: new Uint8Array(0), reason: /not valid JSON/ },
  { name: 'plain text', payload: enc('hello'), reason: /not valid JSON/ },
  { name: 'truncated JSON', payload: enc('{"type":"X","data":{'), reason: /not valid JSON/ },
  { name: 'trailing garbage', payload: enc('{"type":"X","data":{}} x'), reason: /not valid JSON/ },
  { name: 'JSON array', payload: enc('[{"type":"X","data":{}}]'), reason: /JSON object/ },
  { name: 'JSON string', payload: enc('"event"'), reason: /JSON object/ },
  { name: 'JSON null', payload: enc('null'), reason: /JSON object/ },
  { name: 'JSON number', payload: enc('42'), reason: /JSON object/ },
  { name: 'missing type', payload: enc('{"data":{}}'), reason: /missing field "type"/ },
  { name: 'missing data', payload: enc('{"type":"X"}'), reason: /missing field "data"/ },
  { name: 'type is a number', payload: enc('{"type":5,"data":{}}'), reason: /type must be a string/ },
  { name: 'type with a space', payload: enc('{"type":"Bad Type","data":{}}'), reason: /type must be 1-128 letters, digits or "_.:-", starting with a letter \(got "Bad Type"\)/ },
  { name: 'data is a string', payload: enc('{"type":"X","data":"text"}'), reason: /data must be an object/ },
  { name: 'data is an array', payload: enc('{"type":"X","data":[1]}'), reason: /data must be an object/ },
  { name: 'unknown field', payload: enc('{"type":"X","data":{},"extra":1}'), reason: /unknown field "extra"/ },
  { name: 'client-chosen id', payload: enc('{"id":"99","type":"X","data":{}}'), reason: /unknown field "id"/ },
  { name: 'reserved type live', payload: enc('{"type":"live","data":{}}'), reason: /reserved for control events/ },
  { name: 'reserved type reset', payload: enc('{"type":"reset","data":{}}'), reason: /reserved for control events/ },
  { name: 'competitionId with a slash', payload: enc('{"type":"X","competitionId":"a/b","data":{}}'), reason: /competitionId must be 1-128 letters, digits or "_.:-", starting with a letter or digit \(got "a\/b"\)/ },
  { name: 'room is a number', payload: enc('{"type":"X","room":7,"data":{}}'), reason: /room must be a string/ },
  { name: 'time is not a date', payload: enc('{"type":"X","time":"yesterday noon","data":{}}'), reason: /time must be an ISO-8601/ },
  { name: 'invalid UTF-8', payload: new Uint8Array([0x7b, 0x22, 0x74, 0xff, 0xfe, 0x22, 0x7d]), reason: /not valid UTF-8/ },
  { name: '__proto__ key', payload: enc('{"type":"X","data":{"__proto__":{"admin":true}}}'), reason: /prototype pollution/ },
  { name: 'constructor.prototype key', payload: enc('{"type":"X","data":{"constructor":{"prototype":{"admin":true}}}}'), reason: /prototype pollution/ },
  { name: 'room message with empty text', payload: enc('{"text":"","room":"lobby"}'), reason: /text must be at least 1 character/ },
  { name: 'room message without room', payload: enc('{"text":"hi"}'), reason: /missing field "room"/ },
  { name: 'over nats.maxPayload', payload: enc(JSON.stringify({ type: 'X', data: { pad: 'x'.repeat(2000) } })), reason: /over the limit of 1024/ },
]

t.test('every invalid NATS payload goes to the dead-letter subject with its reason; none is stored', async (t) => {
  t.ok(INVALID.length >= 20, `${INVALID.length} kinds of invalid payload`)
  const url = natsUrl()
  const overrides = natsOverrides(url, { maxPayload: 1024 })
  const server = await startServer(overrides)
  t.teardown(() => server.close())
  const nc = await natsClient(url)
  t.teardown(() => nc.close())
  const cfg = server.config.nats
  const prefix = cfg.subject.slice(0, -1)

  const dead: Msg[] = []
  const sub = nc.subscribe(cfg.deadLetterSubject)
  void (async () => {
    for await (const m of sub) dead.push(m)
  })()
  await nc.flush()

  const sse = openSse(`${server.url}/messages?room=ok`)
  t.teardown(() => sse.close())
  await sse.waitFor(isLive, 5000, 'live')

  const js = nc.jetstream()
  const validSeqs: number[] = []
  const invalidBySeq = new Map<number, (typeof INVALID)[number] & { subject: string }>()
  for (const [i, bad] of INVALID.entries()) {
    const subject = `${prefix}bad.${i}`
    const ack = await js.publish(subject, bad.payload)
    invalidBySeq.set(ack.seq, { ...bad, subject })
    // A valid event after each invalid one: ingest goes on past every dead letter.
    const ok = await js.publish(`${prefix}room.ok`, enc(JSON.stringify({ text: `after ${bad.name}`, room: 'ok' })))
    validSeqs.push(ok.seq)
  }

  await sse.waitFor((ev) => dataEvents(ev).length >= validSeqs.length, 20_000, 'every valid event')
  const until = Date.now() + 20_000
  while (dead.length < INVALID.length && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
  t.equal(dead.length, INVALID.length, 'one dead letter per invalid payload')

  for (const m of dead) {
    const seq = Number(m.headers?.get(DEAD_LETTER_HEADERS.sequence))
    const bad = invalidBySeq.get(seq)
    if (bad === undefined) {
      t.fail(`dead letter for unexpected sequence ${seq}`)
      continue
    }
    const reason = m.headers?.get(DEAD_LETTER_HEADERS.reason) ?? ''
    t.match(reason, bad.reason, `${bad.name}: reason "${reason}"`)
    t.equal(m.headers?.get(DEAD_LETTER_HEADERS.subject), bad.subject, `${bad.name}: original subject`)
    t.equal(m.headers?.get(DEAD_LETTER_HEADERS.stream), cfg.stream, `${bad.name}: stream`)
    t.same(Buffer.from(m.data), Buffer.from(bad.payload), `${bad.name}: original bytes`)
  }
  t.equal(new Set(dead.map((m) => m.headers?.get(DEAD_LETTER_HEADERS.sequence))).size, INVALID.length, 'each invalid payload once')

  // The store holds exactly the valid events, with their stream sequences as ids.
  const got = dataEvents(sse.events)
  t.same(got.map((e) => Number(e.id)), validSeqs, 'the stream delivered the valid events, ids = stream sequences')
  t.same(got.map((e) => e.data.text), INVALID.map((b) => `after ${b.name}`), 'in publish order')
  const stored = await server.app.store.read({ kind: 'room', room: null }, 0, 1000)
  t.same(stored.map((e) => e.id), validSeqs, 'the store holds only the valid events')
  const bounds = await server.app.store.bounds()
  t.same(bounds, { oldest: validSeqs[0], newest: validSeqs[validSeqs.length - 1] }, 'nothing else in the store')
  for (const seq of invalidBySeq.keys()) t.notOk(stored.some((e) => e.id === seq), `sequence ${seq} not stored`)

  // The dead letters are kept in their own stream too.
  const jsm = await nc.jetstreamManager()
  const dl = await jsm.streams.info(`${cfg.stream}_DEADLETTER`)
  t.equal(dl.state.messages, INVALID.length, 'the dead-letter stream keeps them')

  // The process is up and still ingesting.
  const health = await fetch(`${server.url}/health`)
  t.equal(health.status, 200, 'still alive')
  const ready = (await (await fetch(`${server.url}/ready`)).json()) as { nats: { connected: boolean; writer: boolean; deadLettered: number } }
  t.equal(ready.nats.connected, true, '/ready reports NATS connected')
  t.equal(ready.nats.writer, true, 'this instance is the writer')
  t.equal(ready.nats.deadLettered, INVALID.length, 'dead letters counted')
  sub.unsubscribe()
  await server.close()
  await removeNatsStreams(nc, cfg.stream)
})
