import { createServer } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { postTo } from './clients.js'
import { loadConfig, type Config } from '../../src/config.js'
import type { EventStore } from '../../src/store/event-store.js'

export interface TestServer {
  app: FastifyInstance
  config: Config
  /** http://127.0.0.1:PORT */
  url: string
  /** ws://127.0.0.1:PORT */
  wsUrl: string
  /** POST /messages with a JSON body (or raw text); returns status and parsed body. */
  post(body: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any }>
  close(): Promise<void>
}

type Overrides = Record<string, unknown>

/** The store every test server uses unless a test says otherwise; set by the test-services script. */
export function storeOverrides(): Overrides {
  return { store: { type: 'memory' } }
}

function deepMerge(a: Overrides, b: Overrides): Overrides {
  const out: Overrides = { ...a }
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k]
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev)
        ? deepMerge(prev as Overrides, v as Overrides)
        : v
  }
  return out
}

/** Start the real server on a free loopback port (or `overrides.port`), optionally on a given store. */
export async function startServer(overrides: Overrides = {}, opts: { store?: EventStore } = {}): Promise<TestServer> {
  const config = loadConfig({
    env: {},
    overrides: deepMerge(deepMerge({ host: '127.0.0.1', port: 0, logLevel: 'silent' }, storeOverrides()), overrides),
  })
  const app = await buildApp(config, { store: opts.store })
  await app.listen({ host: config.host, port: config.port })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address')
  const url = `http://127.0.0.1:${address.port}`
  return {
    app,
    config,
    url,
    wsUrl: `ws://127.0.0.1:${address.port}`,
    post: (body, headers) => postTo(url, body, headers),
    close: () => app.close(),
  }
}

/** A loopback port that is free now, for tests that stop a server and start another on the same port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => (address !== null && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}
