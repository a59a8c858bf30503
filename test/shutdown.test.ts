import t from 'tap'
import net from 'node:net'
import { openSse, postTo } from './helpers/clients.js'
import { spawnServer } from './helpers/process.js'
import { waitUntil } from './helpers/wait.js'

/** One kept-alive HTTP/1.1 connection, as a proxy holds it: requests written by hand, answers read by their content-length. */
class KeptAlive {
  private buf = Buffer.alloc(0)
  closed = false
  private waiters: (() => void)[] = []
  readonly socket: net.Socket

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1')
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d])
      this.wake()
    })
    this.socket.on('close', () => {
      this.closed = true
      this.wake()
    })
    this.socket.on('error', () => {})
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once('connect', resolve)
      this.socket.once('error', reject)
    })
  }

  /** Write the head and the first `sendNow` bytes of the body; `rest()` sends the others. */
  start(method: string, path: string, body = '', sendNow = body.length): { rest(): void } {
    const head = `${method} ${path} HTTP/1.1\r\nHost: tailcast\r\n${body === '' ? '' : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`}\r\n`
    this.socket.write(head + body.slice(0, sendNow))
    return { rest: () => void this.socket.write(body.slice(sendNow)) }
  }

  /** The next whole answer on this connection, within `ms`. */
  async answer(ms: number): Promise<{ status: number; headers: Record<string, string>; body: any }> {
    const deadline = Date.now() + ms
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n')
      if (end >= 0) {
        const [statusLine, ...lines] = this.buf.subarray(0, end).toString('latin1').split('\r\n')
        const headers: Record<string, string> = {}
        for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim()
        const length = Number(headers['content-length'] ?? 0)
        if (this.buf.length >= end + 4 + length) {
          const body = this.buf.subarray(end + 4, end + 4 + length).toString()
          this.buf = this.buf.subarray(end + 4 + length)
          return { status: Number(statusLine.split(' ')[1]), headers, body: body === '' ? null : JSON.parse(body) }
        }
      }
      if (this.closed) throw new Error('the connection closed before a whole answer')
      if (Date.now() > deadline) throw new Error(`no whole answer within ${ms} ms`)
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve)
        setTimeout(resolve, 50)
      })
    }
  }

  close(): void {
    this.socket.end()
  }
}

const refused = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })

t.test('SIGTERM: /ready 503 at once, no new connections, every request in flight and on a kept-alive connection answered, then the streams end, exit 0', async (t) => {
  const server = await spawnServer({ LOG_LEVEL: 'info', TAILCAST_SHUTDOWN_DRAIN_SECONDS: '8' })
  t.teardown(() => server.kill('SIGKILL'))
  const room = 'drain'
  const stream = openSse(`${server.url}/messages?room=${room}`)
  t.teardown(() => stream.close())
  await waitUntil(() => (stream.events.some((e) => e.type === 'live') ? true : undefined), 10_000, 'the stream to be live')

  // Three kept-alive connections, as nginx holds them: one for a POST whose body is still coming,
  // one idle that will carry a POST after the signal, one idle that will ask /ready.
  const slow = new KeptAlive(server.port)
  const idle = new KeptAlive(server.port)
  const probe = new KeptAlive(server.port)
  await Promise.all([slow.connected(), idle.connected(), probe.connected()])
  for (const c of [idle, probe]) {
    c.start('GET', '/health')
    t.equal((await c.answer(5000)).status, 200, 'a kept-alive connection answers before the signal')
  }
  const slowBody = JSON.stringify({ text: 'in flight', room })
  const inFlight = slow.start('POST', '/messages', slowBody, 5)

  const exited = server.kill('SIGTERM')
  await waitUntil(() => (server.output().includes('shutting down') ? true : undefined), 10_000, 'the shutdown to start')

  probe.start('GET', '/ready')
  const ready = await probe.answer(5000)
  t.equal(ready.status, 503, '/ready answers 503 at once')
  t.equal(ready.body?.status, 'stopping', '/ready says the instance is stopping')
  t.equal(ready.headers.connection, 'close', 'and closes the connection it came on')
  t.ok(await refused(server.port), 'a new connection is refused (a proxy tries the next instance)')

  idle.start('POST', '/messages', JSON.stringify({ text: 'on a kept-alive connection', room }))
  const late = await idle.answer(5000)
  t.equal(late.status, 202, 'a POST on a connection kept alive from before the signal is stored, not refused')
  t.equal(late.headers.connection, 'close', 'with Connection: close')

  inFlight.rest()
  const finished = await slow.answer(5000)
  t.equal(finished.status, 202, 'the POST in flight when the signal came is answered 202')
  t.equal(finished.headers.connection, 'close', 'with Connection: close')
  await waitUntil(() => (slow.closed && idle.closed && probe.closed ? true : undefined), 5000, 'the server to close each connection after its answer')

  // Both stored events reach the stream, which ends only now.
  await waitUntil(() => (stream.events.filter((e) => e.type === 'message').length >= 2 ? true : undefined), 5000, 'the stream to receive both events')
  const ids = stream.events.filter((e) => e.type === 'message').map((e) => e.id)
  t.same(ids, [String(finished.body.id), String(late.body.id)].sort((a, b) => Number(a) - Number(b)), 'the stream received both accepted events, in order')
  t.same(await exited, { code: 0, signal: null }, 'the process exits 0')
  let ended = false
  void stream.ended.then(() => (ended = true))
  await waitUntil(() => (ended ? true : undefined), 5000, 'the stream to end')

  const lines = server
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l).msg as string)
  const at = (re: RegExp): number => lines.findIndex((m) => re.test(m))
  const order = [/^shutting down/, /requests in flight answered/, /the hub .* closed/, /NATS closed|the store closed/, /^shutdown: done/].map(at).filter((i, k) => k !== 3 || i >= 0)
  t.ok(order.every((i) => i >= 0), `every shutdown step is logged (${order.join(', ')})`) || t.comment(lines.join('\n'))
  t.ok(order.every((i, k) => k === 0 || i > order[k - 1]), 'in the order they happen: signal, requests answered, streams ended, store closed, done') || t.comment(lines.join('\n'))
})

t.test('SIGTERM without kept-alive connections does not wait for the drain deadline', async (t) => {
  const server = await spawnServer({ LOG_LEVEL: 'info', TAILCAST_SHUTDOWN_DRAIN_SECONDS: '30' })
  t.teardown(() => server.kill('SIGKILL'))
  const stream = openSse(`${server.url}/messages?room=quick`)
  t.teardown(() => stream.close())
  await waitUntil(() => (stream.events.some((e) => e.type === 'live') ? true : undefined), 10_000, 'the stream to be live')
  t.equal((await postTo(server.url, { text: 'x', room: 'quick' }, { connection: 'close' })).status, 202, 'a post (its connection closed after the answer)')
  const started = performance.now()
  t.same(await server.kill('SIGTERM'), { code: 0, signal: null }, 'exit 0')
  const ms = performance.now() - started
  t.ok(ms < 10_000, `stopped in ${Math.round(ms)} ms with a stream open (drain deadline 30 s: only streams were left)`)
})
