import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { toJson } from '../src/event.js'
import { readRecording } from '../src/recorder/file.js'
import { startReplay, type Replay } from '../src/recorder/replay.js'
import {
  Followers,
  HOSTILE,
  ROOM,
  STORES,
  difference,
  expectedJson,
  healthStatus,
  replayMatches,
  storedAfter,
  withId,
  type HostileRow,
} from './helpers/hostile.js'
import { startServer, storeOverrides, type StoreKind, type TestServer } from './helpers/server.js'

/**
 * Issue #13 on the recording path: a recording is read whole before anything is served, so a file
 * with a hostile line is refused with file:line and the reason (the documented behaviour) and
 * nothing of it is served; a file of accepted tricky events is served (startReplay, on the embedded
 * store) or, on the MongoDB store, fed through the ingest as the replay feeds it, exactly.
 */

const dir = mkdtempSync(join(tmpdir(), 'tailcast-hostile-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const sink = { write: () => true }

const recordedLine = (event: Buffer): Buffer => Buffer.concat([Buffer.from('{"receivedAt":"2026-11-24T10:00:00.000Z","event":'), event, Buffer.from('}\n')])
const normalLine = (id: number): Buffer =>
  recordedLine(Buffer.from(JSON.stringify({ id: String(id), type: 'message', room: ROOM, time: '2026-11-24T10:00:00.000Z', data: { text: `normal ${id}` } })))

/** A recording: for each row, its line (id 100 + 2k) and a normal event after it. */
function recording(name: string, rows: HostileRow[]): { file: string; ids: number[] } {
  const file = join(dir, name)
  const ids = rows.map((_, k) => 100 + 2 * k)
  writeFileSync(file, Buffer.concat([normalLine(99), ...rows.flatMap((r, k) => [recordedLine(withId(r.payload, ids[k])), normalLine(ids[k] + 1)])]))
  return { file, ids }
}

const accepted = HOSTILE.filter((r) => r.rule === undefined)
const refused = HOSTILE.filter((r) => r.rule !== undefined)

/** The server a recording is served by on each store: startReplay itself, or a server on MongoDB fed as the replay feeds. */
async function serve(kind: StoreKind, file: string): Promise<{ server: Replay | TestServer; feed(): Promise<void> }> {
  if (kind === 'memory') {
    const replay = await startReplay({ file, port: 0, speed: 1000, autoStart: false, logLevel: 'silent', output: sink })
    return { server: replay, feed: async () => (replay.start(), await replay.done) }
  }
  const server = await startServer(storeOverrides(kind))
  return {
    server,
    async feed() {
      const rec = readRecording(file)
      await server.app.ingest.submit(
        rec.map(({ event: { id: _id, ...e } }) => e),
        rec.map((r) => r.event.id),
      )
    },
  }
}

for (const kind of STORES) {
  t.test(`recordings on the ${kind} store: a hostile line refuses the file with file:line and the rule; accepted lines are served exactly`, async (t) => {
    const good = recording(`accepted-${kind}.jsonl`, accepted)
    const { server, feed } = await serve(kind, good.file)
    t.teardown(() => server.close())
    const live = await Followers.open(server)
    t.teardown(() => live.close())

    for (const [k, row] of refused.entries()) {
      const { file } = recording(`refused-${kind}-${k}.jsonl`, [row])
      const where = new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: `)
      let error = ''
      try {
        readRecording(file)
        t.fail(`${row.name}: the file was read`)
      } catch (err) {
        error = (err as Error).message
      }
      t.match(error, where, `${row.name}: refused at file:line (${error.slice(0, 160)})`)
      t.match(error, row.rule!, `${row.name}: naming the rule`)
      const served = await startReplay({ file, port: 0, logLevel: 'silent', output: sink }).then(
        async (r) => (await r.close(), 'it was served'),
        (err: Error) => err.message,
      )
      t.match(served, where, `${row.name}: replay refuses the file`)
      t.equal(await healthStatus(server), 200, `${row.name}: the running server is not disturbed`)
    }
    t.same(await storedAfter(server, 0), [], 'nothing of a refused file was stored')

    await feed()
    const last = good.ids[good.ids.length - 1] + 1
    await live.waitFor(last, 10_000)
    const stored = await storedAfter(server, 0)
    t.same(stored.map((e) => e.id), [99, ...good.ids.flatMap((id) => [id, id + 1])], 'every line stored with its recorded id, in order')
    const got = new Map<number, string>()
    for (const [k, row] of accepted.entries()) {
      const id = good.ids[k]
      const raw = live.raw(id)
      const time = live.sse.events.find((e) => e.id === String(id))?.time ?? ''
      if (row.time !== undefined) t.equal(time, row.time, `${row.name}: time ${row.time}`)
      const want = expectedJson(row, id, time)
      t.equal(difference(raw.sse, want), null, `${row.name}: SSE carries exactly the recorded event`)
      t.equal(difference(raw.ws, want), null, `${row.name}: WebSocket carries exactly the recorded event`)
      const s = stored.find((e) => e.id === id)
      t.equal(difference(s && toJson(s), want), null, `${row.name}: the store gives back exactly the recorded event`)
      got.set(id, raw.sse ?? want)
    }
    t.equal(await healthStatus(server), 200, 'the server is up')
    await replayMatches(t, server, got)
  })
}
