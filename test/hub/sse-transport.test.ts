import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { controlFrame, frameOf, unnamedSse } from '../../src/event.js'
import { Batch } from '../../src/hub/frames.js'
import { SseTransport } from '../../src/hub/sse-transport.js'

// The prebuilt SSE chunk goes straight to the socket, around the response: backpressure must still
// be seen (buffered(), drained()) and the body must stay valid chunked HTTP to its end.
t.test('direct socket writes: a reader that stops is seen, drained() waits for it, the stream ends cleanly', async (t) => {
  let transport!: SseTransport
  let serverRes!: http.ServerResponse
  const opened = new Promise<void>((resolve) => {
    const server = http.createServer((_req, res) => {
      serverRes = res
      transport = new SseTransport(res, { unnamed: false, retryMs: 1000 })
      transport.open({})
      resolve()
    })
    server.listen(0, '127.0.0.1', () => {
      const req = http.get({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: '/' }, (res) => {
        res.pause()
        clientRes = res
      })
      req.on('error', () => {})
    })
    t.teardown(() => server.close())
  })
  let clientRes: http.IncomingMessage | undefined
  await opened
  for (let waited = 0; clientRes === undefined && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10))
  t.ok(clientRes, 'the client got the response head')

  const pad = 'x'.repeat(60_000)
  let id = 0
  const send = (): void => {
    id++
    transport.send(new Batch([frameOf({ id, type: 'message', room: 'r', time: new Date().toISOString(), data: { pad } })]))
  }
  // More than the kernel can take in for a stopped reader (tcp_wmem + tcp_rmem autotuning reach
  // 36 MB on loopback here): with less, the socket drains into the kernel and drained() rightly resolves.
  while (serverRes.socket!.writableLength < 64 * 1024 * 1024 && id < 5000) send()
  t.ok(serverRes.socket!.writableNeedDrain, `the socket filled up after ${id} events of 60 KB`)
  t.equal((serverRes as unknown as { outputSize: number }).outputSize, 0, 'the bytes went around the response (direct path)')
  t.ok(transport.buffered() > 0, `buffered() sees the socket's queue (${transport.buffered()} bytes)`)
  t.notOk(serverRes.writableNeedDrain, "the response's own drain flag is not set by direct writes")

  let drained = false
  const wait = transport.drained().then(() => {
    drained = true
  })
  await new Promise((r) => setTimeout(r, 300))
  t.notOk(drained, 'drained() waits while the reader is stopped')

  let body = ''
  const ended = new Promise<void>((resolve, reject) => {
    clientRes!.setEncoding('utf8')
    clientRes!.on('data', (d: string) => (body += d))
    clientRes!.on('end', resolve)
    clientRes!.on('error', reject)
  })
  clientRes!.resume()
  await wait
  t.ok(drained, 'drained() resolves once the reader reads again')
  send()
  transport.close('shutdown')
  await ended
  const ids = [...body.matchAll(/^id: ?(\d+)$/gm)].map((m) => Number(m[1]))
  t.same(ids, Array.from({ length: id }, (_, i) => i + 1), 'every event arrived once, in order, and the chunked body ended cleanly')
  const end = /event: end\ndata: (.*)\n\n$/.exec(body)
  t.ok(end, 'the last record is the end event')
  t.match(JSON.parse(end![1]), { id: String(id), type: 'end', data: { reason: 'shutdown', reconnect: true, retryMs: 1000, freshToken: false, message: /server restarting/ } })
})

t.test('Batch: the unnamed SSE variant is the named record without its event: line, built lazily once per batch and shared', async (t) => {
  const time = '2026-11-22T18:00:00.000Z'
  const frames = [
    frameOf({ id: 7, type: 'LapCompleted', competitionId: 'c1', time, data: { lap: 1 } }),
    frameOf({ id: 8, type: 'ScoreEvent', competitionId: 'c1', time, data: { home: 2 } }),
  ]
  const json = frames.map((f) => f.json.toString())
  const batch = new Batch(frames)
  t.equal(batch.sse().toString(), `id: 7\nevent: LapCompleted\ndata: ${json[0]}\n\nid: 8\nevent: ScoreEvent\ndata: ${json[1]}\n\n`)
  const unnamed = batch.sse(true)
  t.equal(unnamed.toString(), `id: 7\ndata: ${json[0]}\n\nid: 8\ndata: ${json[1]}\n\n`)
  t.equal(batch.sse(true), unnamed, 'the same buffer for every client')
  const chunk = batch.sseChunk(true)
  t.equal(chunk.toString(), `${unnamed.length.toString(16)}\r\n${unnamed.toString()}\r\n`)
  t.equal(batch.sseChunk(true), chunk, 'the same chunk for every client')
  t.not(batch.sseChunk(false), chunk, 'named and unnamed chunks are distinct')
  // Per event nothing is copied: the slices are views of the record built once per process.
  for (const f of frames) for (const part of unnamedSse(f.sse)) t.equal(part.buffer, f.sse.buffer, 'a view of the shared record')
  const one = new Batch([frames[0]])
  t.equal(one.sse(), frames[0].sse, 'named, one event: the record itself')
  // Control frames: live keeps its id: line, reset has none.
  const live = controlFrame('live', 8)
  t.equal(Buffer.concat(unnamedSse(live.sse)).toString(), `id: 8\ndata: ${live.json.toString()}\n\n`)
  const reset = controlFrame('reset', 0, { lastEventId: '99', reason: 'test' })
  t.equal(Buffer.concat(unnamedSse(reset.sse)).toString(), `data: ${reset.json.toString()}\n\n`)
})

// A stream that ends before it sent anything (a replay read that failed, shutdown during the
// replay) must not tell the client position 0: a client resuming from the end event's id would get
// the whole replay again (seen: +201 duplicate events after a writer was killed under load).
t.test('the end event of a stream that sent nothing carries the position the client came with', async (t) => {
  const server = http.createServer((_req, res) => {
    const transport = new SseTransport(res, { unnamed: false, retryMs: 1000, position: 42 })
    transport.open({})
    transport.close('error')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const body = await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)).text()
  const end = /event: end\ndata: (.*)\n\n$/.exec(body)
  t.ok(end, 'the stream ends with the end event')
  t.match(JSON.parse(end![1]), { id: '42', type: 'end', data: { reason: 'error', reconnect: true } })
})
