/**
 * The same SSE fan-out as baseline.ts, built the way fastify-sse-v2 (the plugin the design card
 * names) is meant to be used, written only for the benchmark: GET /messages opens a stream with
 * reply.sse(), POST /messages assigns an id, serialises the event's JSON once and hands it to every
 * client with reply.sse({ id, event, data }); the plugin frames it per client and pipes it through
 * an async iterator and a Readable into the response. No store, no replay, no WebSocket.
 */
import Fastify, { type FastifyReply } from 'fastify'
import { FastifySSEPlugin } from 'fastify-sse-v2'

const clients = new Set<FastifyReply>()
let nextId = Date.now() * 1000

const app = Fastify({ logger: false, keepAliveTimeout: 60_000 })
await app.register(FastifySSEPlugin, { retryDelay: 2000 })

app.get('/messages', (req, reply) => {
  reply.sse({ comment: ' open' })
  clients.add(reply)
  req.raw.on('close', () => {
    clients.delete(reply)
    reply.sseContext.source.end()
  })
})

app.post<{ Body: { type: string; room?: string; data: unknown } }>('/messages', async (req, reply) => {
  const e = req.body
  const id = String(++nextId)
  const json = JSON.stringify({ id, type: e.type, room: e.room, time: new Date().toISOString(), data: e.data })
  for (const c of clients) c.sse({ id, event: e.type, data: json })
  return reply.code(202).send({ id })
})

app.get('/health', async () => ({ status: 'ok' }))

await app.listen({ port: Number(process.env.PORT ?? 8091), host: process.env.HOST ?? '127.0.0.1' })
process.on('SIGTERM', () => process.exit(0))
