import t from 'tap'
import { decodeEvent, frameOf, InvalidEventError, parseNewEvent } from '../src/event.js'

t.test('a room message becomes a `message` event', async (t) => {
  const e = parseNewEvent({ text: 'hi', room: 'developers' }, new Date('2026-11-22T18:00:00Z'))
  t.same(e, { type: 'message', room: 'developers', time: '2026-11-22T18:00:00.000Z', data: { text: 'hi' } })
})

t.test('one event serialises to the same JSON on both transports', async (t) => {
  const f = frameOf({ id: 42, type: 'T', competitionId: 'c', time: '2026-11-22T18:00:00.000Z', data: { a: 1 } })
  const json = '{"id":"42","type":"T","competitionId":"c","time":"2026-11-22T18:00:00.000Z","data":{"a":1}}'
  t.equal(f.json.toString(), json)
  t.equal(f.sse.toString(), `id: 42\nevent: T\ndata: ${json}\n\n`)
})

t.test('invalid UTF-8 and prototype keys are refused', async (t) => {
  t.throws(() => decodeEvent(Buffer.from([0x7b, 0xff, 0x7d])), InvalidEventError)
  t.throws(() => decodeEvent(Buffer.from('{"type":"x","data":{},"__proto__":{"p":1}}')), InvalidEventError)
  t.throws(() => decodeEvent(Buffer.from('{"type":"live","data":{}}')), /reserved/)
})
