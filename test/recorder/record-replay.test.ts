import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { readRecording } from '../../src/recorder/file.js'
import { startRecording, type Recorder } from '../../src/recorder/record.js'
import { startReplay } from '../../src/recorder/replay.js'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import { dataEvents, isLive, openSse, openWs, type Received } from '../helpers/clients.js'
import { startServer, type TestServer } from '../helpers/server.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Collects what the recorder prints, as a non-TTY stderr would. */
function sink(): { lines: string[]; write(s: string): boolean } {
  const lines: string[] = []
  return { lines, write: (s: string) => (lines.push(s), true) }
}

async function waitUntil(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

t.test('record 500 events across a server restart and a recorder restart, replay at speed 20 over SSE and WS', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-rec-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'rec.jsonl')
  // The store outlives the server, so the restarted server still holds what the recorder missed.
  const store = new MemoryEventStore(10_000)
  let server: TestServer = await startServer({}, { store })
  const port = Number(new URL(server.url).port)
  const out = sink()
  let recorder: Recorder = await startRecording({ url: `${server.wsUrl}/messages?room=rec`, file, output: out, minBackoffMs: 50, maxBackoffMs: 200 })
  t.teardown(async () => {
    await recorder.stop()
    await server.close()
  })

  const posted: string[] = []
  const refusedPosts: number[] = []
  const post = async (i: number): Promise<void> => {
    const res = await server.post({ type: 'message', room: 'rec', data: { i } })
    if (res.status === 202) posted.push(res.body.id as string)
    else refusedPosts.push(res.status)
  }
  for (let burst = 0; burst < 10; burst++) {
    if (burst === 3) {
      // Forced disconnect: the server closes every stream (WS 1012) and comes back on the same port.
      await server.close()
      server = await startServer({ port }, { store })
      // Let fetch's pool see that its keep-alive socket to the old server is gone.
      await sleep(300)
    }
    if (burst === 7) {
      // The recorder itself restarts on the existing file, over SSE this time.
      await recorder.stop()
      recorder = await startRecording({ url: `${server.url}/messages?room=rec`, file, output: out, minBackoffMs: 50, maxBackoffMs: 200 })
    }
    for (let i = burst * 50; i < burst * 50 + 50; i++) await post(i)
    await sleep(600)
  }
  t.same(refusedPosts, [], 'every event was accepted')
  await waitUntil(() => recorder.lastId === Number(posted[posted.length - 1]), 10_000, 'the recorder to get the last event')
  await recorder.stop()
  t.ok(out.lines.some((l) => l.includes('disconnected')), 'the recorder reported the disconnect')

  const recording = readRecording(file)
  t.equal(recording.length, 500, 'no gap, no duplicate in the file')
  t.same(recording.map((r) => String(r.event.id)), posted, 'the recorded ids are the server ids, in order')
  t.same(recording.map((r) => r.event.data.i), Array.from({ length: 500 }, (_, i) => i))

  const replay = await startReplay({ file, speed: 20, port: 0, autoStart: false, logLevel: 'silent', output: sink() })
  t.teardown(() => replay.close())
  const sse = openSse(`${replay.url}/messages?room=rec`)
  const ws = openWs(`${replay.wsUrl}/messages?room=rec`)
  t.teardown(() => {
    sse.close()
    ws.close()
  })
  await sse.waitFor(isLive, 5000, 'sse live')
  await ws.waitFor(isLive, 5000, 'ws live')
  replay.start()
  await replay.done
  const all = (ev: Received[]): boolean => dataEvents(ev).length >= 500
  await sse.waitFor(all, 10_000, '500 events over SSE')
  await ws.waitFor(all, 10_000, '500 events over WS')

  const recordedSpan = recording[499].receivedAt - recording[0].receivedAt
  const bigGaps = recording.map((r, i) => (i === 0 ? 0 : r.receivedAt - recording[i - 1].receivedAt)).map((g, i) => [g, i]).filter(([g]) => g > 300)
  t.ok(bigGaps.length >= 8, `the recording has the pauses between bursts (${bigGaps.length})`)
  for (const [name, client] of [['SSE', sse], ['WS', ws]] as const) {
    const got = dataEvents(client.events)
    t.same(got.map((e) => e.id), posted, `${name}: same ids, same order`)
    t.same(
      got.map(({ id, type, room, time, data }) => ({ id, type, room, time, data })),
      recording.map(({ event: e }) => ({ id: String(e.id), type: e.type, room: e.room, time: e.time, data: e.data })),
      `${name}: same events`,
    )
    const span = (got[499].receivedAt as number) - (got[0].receivedAt as number)
    const ratio = span / (recordedSpan / 20)
    t.ok(ratio > 0.5 && ratio < 3, `${name}: replay span ${span.toFixed(0)} ms vs recorded ${recordedSpan} ms / 20 (ratio ${ratio.toFixed(2)})`)
    const ratios = bigGaps.map(([g, i]) => ((got[i].receivedAt as number) - (got[i - 1].receivedAt as number)) / (g / 20)).sort((a, b) => a - b)
    const median = ratios[Math.floor(ratios.length / 2)]
    t.ok(median > 0.5 && median < 2.5, `${name}: pauses replayed at about 1/20 (median ratio ${median.toFixed(2)})`)
  }

  // A client that resumes on the replay gets exactly the rest, as on the live server.
  const resumed = openWs(`${replay.wsUrl}/messages?room=rec&lastEventId=${posted[249]}`)
  t.teardown(() => resumed.close())
  await resumed.waitFor(isLive, 5000, 'resumed live')
  t.same(dataEvents(resumed.events).map((e) => e.id), posted.slice(250), 'resume on the replay is exact')
  const refused = await fetch(`${replay.url}/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"text":"x","room":"rec"}' })
  t.equal(refused.status, 403, 'a replay does not take posts')
})

t.test('replay --loop starts over with ids shifted above the previous pass', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-loop-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'loop.jsonl')
  const line = (id: number, ms: number, c: string): string =>
    JSON.stringify({ receivedAt: new Date(1_700_000_000_000 + ms).toISOString(), event: { id: String(id), type: 'CompetitionActivatedEvent', competitionId: c, time: '2020-01-01T00:00:00.000Z', data: {} } })
  writeFileSync(file, [line(100, 0, 'a'), line(105, 100, 'b'), line(110, 200, 'c')].join('\n') + '\n')
  const replay = await startReplay({ file, speed: 10, port: 0, loop: true, logLevel: 'silent', output: sink() })
  t.teardown(() => replay.close())
  // An old recording still shows its competitions: the window reaches back to them.
  const ws = openWs(`${replay.wsUrl}/v1/competitions`)
  t.teardown(() => ws.close())
  await ws.waitFor((ev) => dataEvents(ev).length >= 9, 10_000, 'three passes')
  const ids = dataEvents(ws.events).slice(0, 9).map((e) => Number(e.id))
  t.same(ids, [100, 105, 110, 111, 116, 121, 122, 127, 132], 'each pass continues above the previous one')
  t.same(dataEvents(ws.events).slice(0, 6).map((e) => e.competitionId), ['a', 'b', 'c', 'a', 'b', 'c'])
})
