/**
 * The yardstick: a minimal SSE fan-out on raw node:http, written only for the benchmark.
 * GET /messages holds an SSE response; POST /messages assigns an id, serialises the event once and
 * writes the same bytes to every client. No store, no replay, no backpressure, no WebSocket.
 */
import http from 'node:http'

const clients = new Set<http.ServerResponse>()
let nextId = Date.now() * 1000

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url?.startsWith('/messages')) {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' })
    res.write('retry: 2000\n\n')
    clients.add(res)
    res.on('close', () => clients.delete(res))
  } else if (req.method === 'POST' && req.url === '/messages') {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const e = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type: string; room?: string; data: unknown }
      const id = ++nextId
      const json = JSON.stringify({ id: String(id), type: e.type, room: e.room, time: new Date().toISOString(), data: e.data })
      const frame = Buffer.from(`id: ${id}\nevent: ${e.type}\ndata: ${json}\n\n`)
      for (const c of clients) c.write(frame)
      res.writeHead(202, { 'content-type': 'application/json' }).end(`{"id":"${id}"}`)
    })
  } else if (req.url === '/health') {
    res.end('{"status":"ok"}')
  } else {
    res.writeHead(404).end()
  }
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.env.PORT ?? 8090), process.env.HOST ?? '127.0.0.1')
process.on('SIGTERM', () => process.exit(0))
