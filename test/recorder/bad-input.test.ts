import { spawn } from 'node:child_process'
import http from 'node:http'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { StreamClient } from '../../src/client/stream-client.js'
import { readRecording } from '../../src/recorder/file.js'
import { startRecording } from '../../src/recorder/record.js'
import { startReplay } from '../../src/recorder/replay.js'
import { freePort, startServer } from '../helpers/server.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const sink = (): { lines: string[]; write(s: string): boolean } => {
  const lines: string[] = []
  return { lines, write: (s: string) => (lines.push(s), true) }
}
const dir = mkdtempSync(join(tmpdir(), 'tailcast-bad-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const ok = (id: number, i = 0): string =>
  JSON.stringify({ receivedAt: new Date(1_700_000_000_000 + i * 10).toISOString(), event: { id: String(id), type: 'message', room: 'r', time: '2026-11-24T10:00:00.000Z', data: { i } } })

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

/** Run the built CLI (`npm test` builds dist/ first) and collect its error output. */
function cli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })))
}

t.test('recording files: missing, empty, corrupt line, ids out of order', async (t) => {
  t.throws(() => readRecording(join(dir, 'missing.jsonl')), /missing\.jsonl: no such file/)
  writeFileSync(join(dir, 'empty.jsonl'), '\n\n')
  t.throws(() => readRecording(join(dir, 'empty.jsonl')), /empty\.jsonl: the recording is empty/)
  t.same(readRecording(join(dir, 'empty.jsonl'), { allowEmpty: true }), [])
  writeFileSync(join(dir, 'corrupt.jsonl'), [ok(1), ok(2, 1), '{"receivedAt":"2026-11-24T10:00:00.000Z","event":{"id":"3","type":'].join('\n') + '\n')
  t.throws(() => readRecording(join(dir, 'corrupt.jsonl')), /corrupt\.jsonl:3: not valid JSON/)
  writeFileSync(join(dir, 'noid.jsonl'), ok(1) + '\n' + ok(2).replace('"id":"2"', '"id":"abc"') + '\n')
  t.throws(() => readRecording(join(dir, 'noid.jsonl')), /noid\.jsonl:2: event: id must be a positive integer/)
  writeFileSync(join(dir, 'order.jsonl'), [ok(5), ok(4, 1)].join('\n') + '\n')
  t.throws(() => readRecording(join(dir, 'order.jsonl')), /order\.jsonl:2: event id 4 is not above the previous id 5/)
  writeFileSync(join(dir, 'badevent.jsonl'), ok(1).replace('"data":{"i":0}', '"data":"text"') + '\n')
  t.throws(() => readRecording(join(dir, 'badevent.jsonl')), /badevent\.jsonl:1: event: data must be an object/)
  writeFileSync(join(dir, 'proto.jsonl'), ok(1).replace('"type":"message"', '"type":"message","__proto__":{"x":1}') + '\n')
  t.throws(() => readRecording(join(dir, 'proto.jsonl')), /proto\.jsonl:1: event: key "__proto__" is not allowed/)
  await t.rejects(startReplay({ file: join(dir, 'corrupt.jsonl'), port: 0, logLevel: 'silent', output: sink() }), /corrupt\.jsonl:3/)
  await t.rejects(startReplay({ file: join(dir, 'order.jsonl'), port: 0, speed: 0, logLevel: 'silent', output: sink() }), /--speed must be a positive number/)
  await t.rejects(startRecording({ url: 'ws://127.0.0.1:9/x', file: join(dir, 'corrupt.jsonl'), output: sink() }), /corrupt\.jsonl:3/, 'record does not append to a corrupt file')
})

t.test('the CLI reports bad files with the line and exits non-zero', async (t) => {
  const [missing, corrupt, speed, help] = await Promise.all([
    cli(['replay', '--file', join(dir, 'missing.jsonl'), '--port', '0']),
    cli(['replay', '--file', join(dir, 'corrupt.jsonl'), '--port', '0']),
    cli(['replay', '--file', join(dir, 'order.jsonl'), '--speed', 'fast']),
    cli(['record', '--help']),
  ])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /tailcast: .*missing\.jsonl: no such file/)
  t.equal(corrupt.code, 2)
  t.match(corrupt.stderr, /corrupt\.jsonl:3: not valid JSON/)
  t.not(speed.code, 0)
  t.match(speed.stderr, /--speed.*expected a positive number/)
  t.equal(help.code, 0)
  t.equal(help.stderr, '')
})

t.test('record from an upstream that refuses, then comes up; a 404 URL is fatal', async (t) => {
  const port = await freePort()
  const file = join(dir, 'late.jsonl')
  const out = sink()
  const recorder = await startRecording({ url: `ws://127.0.0.1:${port}/messages?room=late`, file, output: out, minBackoffMs: 50, maxBackoffMs: 200 })
  t.teardown(() => recorder.stop())
  await sleep(300)
  t.ok(out.lines.some((l) => /disconnected \(.*ECONNREFUSED/.test(l)), 'the refusal is reported, and retried')
  const server = await startServer({ port })
  t.teardown(() => server.close())
  const ids: string[] = []
  for (let i = 0; i < 3; i++) ids.push((await server.post({ text: `x${i}`, room: 'late' })).body.id)
  for (let i = 0; i < 100 && recorder.recorded < 3; i++) await sleep(30)
  await recorder.stop()
  t.same(readRecording(file).map((r) => String(r.event.id)), ids)

  const bad = await startRecording({ url: `${server.url}/nowhere`, file: join(dir, 'nowhere.jsonl'), output: sink() })
  await t.rejects(bad.failed, /answered 404/)
  await bad.stop()
  // A URL that answers, but not with a stream (the JSON of /health), is as wrong as a 404: not retried forever.
  for (const url of [`${server.url}/health`, `${server.wsUrl}/health`]) {
    const notStream = await startRecording({ url, file: join(dir, 'health.jsonl'), output: sink() })
    await t.rejects(notStream.failed, /\/health answered (200: application\/json|101: switched to WebSocket, then closed it \(1005\) before any message).*not a stream \(a tailcast stream URL is/, url)
    await notStream.stop()
  }
  const badResume = await startRecording({ url: `${server.wsUrl}/v1/competitions/bad%20id`, file: join(dir, 'bad.jsonl'), output: sink() })
  await t.rejects(badResume.failed, /answered 400: the competition id/)
  await badResume.stop()
  t.throws(() => new StreamClient({ url: 'ftp://x/y', onEvent() {} }), /unsupported URL scheme/)
})

t.test('an upstream that drops mid-stream and sends garbage: the client resumes from the last good id', async (t) => {
  const seen: (string | undefined)[] = []
  let n = 0
  const upstream = http.createServer((req, res) => {
    seen.push(req.headers['last-event-id'] as string | undefined)
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    const conn = n++
    const ev = (id: number): string => `id: ${id}\nevent: T\ndata: ${JSON.stringify({ id: String(id), type: 'T', time: '2026-11-24T10:00:00.000Z', data: { id } })}\n\n`
    if (conn === 0) {
      res.write(ev(1) + ev(2) + ': ping\n\n')
      setTimeout(() => res.destroy(), 50) // drops without a word
    } else if (conn === 1) {
      res.write(ev(3) + 'data: {not json\n\n' + ev(4)) // garbage: the client reconnects from 3
    } else {
      res.write(ev(4) + ev(5) + `data: ${JSON.stringify({ id: '5', type: 'live', time: '2026-11-24T10:00:00.000Z', data: {} })}\n\n`)
    }
  })
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    upstream.closeAllConnections()
    upstream.close()
  })
  const got: number[] = []
  const errors: string[] = []
  let live = false
  const client = new StreamClient({
    url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/messages`,
    minBackoffMs: 20,
    maxBackoffMs: 50,
    onEvent: (e) => void got.push(e.id),
    onLive: () => (live = true),
    onStatus: (s) => s.state === 'down' && errors.push(s.error),
  })
  client.start()
  t.teardown(() => client.close())
  for (let i = 0; i < 200 && !live; i++) await sleep(20)
  t.same(got, [1, 2, 3, 4, 5], 'every event once, in order')
  t.same(seen, [undefined, '2', '3'], 'each reconnect resumed from the last event handled')
  t.match(errors[1], /bad message from the server/)
})

t.test('record keeps the file line-complete when resumed on a file cut short', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const file = join(dir, 'cut.jsonl')
  const first = (await server.post({ text: 'a', room: 'cut' })).body.id as string
  const second = (await server.post({ text: 'b', room: 'cut' })).body.id as string
  // A file whose last complete line lacks its newline (e.g. written by hand or cut by a crash).
  writeFileSync(file, JSON.stringify({ receivedAt: new Date().toISOString(), event: { id: first, type: 'message', room: 'cut', time: new Date().toISOString(), data: { text: 'a' } } }))
  const recorder = await startRecording({ url: `${server.url}/messages?room=cut`, file, output: sink() })
  for (let i = 0; i < 100 && recorder.recorded < 1; i++) await sleep(20)
  await recorder.stop()
  t.same(readRecording(file).map((r) => String(r.event.id)), [first, second], 'resumed after the file\'s last id')
  t.ok(readFileSync(file, 'utf8').endsWith('\n'))
})

t.test('progress: redrawn in place on a terminal, plain lines otherwise', async (t) => {
  const { Progress } = await import('../../src/recorder/progress.js')
  const tty = { ...sink(), isTTY: true }
  const p = new Progress(tty, () => 'recorded 3 events')
  p.start()
  await sleep(600)
  p.note('record: disconnected')
  p.stop('done')
  t.ok(tty.lines.some((l) => l === '\r\x1b[Krecorded 3 events'), 'the status line is redrawn')
  t.ok(tty.lines.includes('record: disconnected\n'), 'notes get their own line')
  t.equal(tty.lines[tty.lines.length - 1], 'done\n')
  const plain = sink()
  const q = new Progress(plain, () => 'replayed 1/2 events', 100)
  q.start()
  await sleep(350)
  q.stop()
  t.ok(plain.lines.filter((l) => l === 'replayed 1/2 events\n').length >= 2, 'periodic plain lines')
  t.notOk(plain.lines.some((l) => l.includes('\r')), 'no terminal control characters in a log')
})

t.test('record on a file whose last id the server no longer holds: reset is reported, recording continues', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const ids = [(await server.post({ text: 'a', room: 'r' })).body.id as string, (await server.post({ text: 'b', room: 'r' })).body.id as string]
  const file = join(dir, 'old.jsonl')
  writeFileSync(file, ok(5) + '\n')
  const out = sink()
  const recorder = await startRecording({ url: `${server.wsUrl}/messages?room=r`, file, output: out })
  for (let i = 0; i < 100 && recorder.recorded < 2; i++) await sleep(20)
  await recorder.stop()
  t.ok(out.lines.some((l) => /server sent reset \(lastEventId 5 is older than the oldest stored event\).*after id 5.*missing/.test(l)), 'the reset is reported')
  t.same(readRecording(file).map((r) => String(r.event.id)), ['5', ...ids])
})
