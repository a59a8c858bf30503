import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { dataEvents, openSse } from '../helpers/clients.js'

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

/** `tailcast replay` as a child process (the built CLI), with its stderr to wait on. */
function replay(args: string[]): { stderr(): string; waitFor(line: RegExp, timeoutMs?: number): Promise<RegExpExecArray>; kill(): Promise<void> } {
  const child = spawn(process.execPath, [CLI, 'replay', '--port', '0', ...args], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  return {
    stderr: () => stderr,
    async waitFor(line, timeoutMs = 15_000) {
      const end = Date.now() + timeoutMs
      for (;;) {
        const m = line.exec(stderr)
        if (m !== null) return m
        if (child.exitCode !== null || Date.now() > end) throw new Error(`no line ${line} from replay ${args.join(' ')}:\n${stderr}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    },
    async kill() {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

t.test('replay --start-on-connect: a client that connects late still gets the recorded gaps; without it, one burst', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-start-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'gaps.jsonl')
  const GAP = 300
  const lines = Array.from({ length: 6 }, (_, i) =>
    JSON.stringify({ receivedAt: new Date(1_700_000_000_000 + i * GAP).toISOString(), event: { id: String(100 + i), type: 'message', room: 'r', time: '2026-11-24T10:00:00.000Z', data: { i } } }),
  )
  writeFileSync(file, lines.join('\n') + '\n')

  // Both start together; the plain one has played its whole schedule before anyone connects.
  const plain = replay(['--file', file])
  const onConnect = replay(['--file', file, '--start-on-connect'])
  t.teardown(async () => {
    await plain.kill()
    await onConnect.kill()
  })
  const [, plainPort] = await plain.waitFor(/replay: serving .* on http:\/\/127\.0\.0\.1:(\d+) and ws:/)
  // Its own line, written after the listen line: wait for it rather than expect it already there.
  await plain.waitFor(/replay: schedule started at \d{4}-\d\d-\d\dT[\d:.]+Z: 6 events over 1\.5 s at speed 1\n/)
  t.pass('the plain replay says when its schedule starts')
  const [, port] = await onConnect.waitFor(/replay: serving .* on http:\/\/127\.0\.0\.1:(\d+) and ws:.*; the schedule starts when the first client connects\n/)
  await plain.waitFor(/replay finished: 6 events served/)
  t.notMatch(onConnect.stderr(), /schedule started/, 'no client yet: the schedule waits')

  // /health and other requests are not clients of a stream.
  t.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200)
  const late = openSse(`http://127.0.0.1:${port}/messages?room=r`)
  const burst = openSse(`http://127.0.0.1:${plainPort}/messages?room=r`)
  t.teardown(() => {
    late.close()
    burst.close()
  })
  const all = (ev: Parameters<Parameters<typeof late.waitFor>[0]>[0]): boolean => dataEvents(ev).length >= 6
  await burst.waitFor(all, 10_000, 'the plain replay\'s 6 events')
  await late.waitFor(all, 10_000, 'the 6 events of the replay started on connect')
  await onConnect.waitFor(/replay: schedule started at \S+ \(the first client connected: \/messages\?room=r\): 6 events over 1\.5 s at speed 1\n/)

  const arrivals = (c: typeof late): number[] => dataEvents(c.events).map((e) => e.receivedAt as number)
  const gaps = (a: number[]): number[] => a.slice(1).map((x, i) => x - a[i])
  const burstSpan = arrivals(burst).at(-1)! - arrivals(burst)[0]
  t.ok(burstSpan < 250, `without the option a late client gets the events as one burst (${burstSpan.toFixed(0)} ms for 6)`)
  const lateGaps = gaps(arrivals(late))
  const sorted = [...lateGaps].sort((a, b) => a - b)
  const median = sorted[Math.floor(sorted.length / 2)]
  const span = arrivals(late).at(-1)! - arrivals(late)[0]
  t.ok(median > GAP * 0.6 && median < GAP * 3, `with --start-on-connect the recorded ${GAP} ms gaps are kept (median ${median.toFixed(0)} ms; gaps ${lateGaps.map((g) => g.toFixed(0)).join(', ')})`)
  t.ok(span > 5 * GAP * 0.7 && span < 5 * GAP * 3, `the schedule's span is kept (${span.toFixed(0)} ms for ${5 * GAP})`)
  t.same(dataEvents(late.events).map((e) => e.id), ['100', '101', '102', '103', '104', '105'], 'every event once, with its recorded id')
})
