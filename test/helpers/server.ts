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

let storeCounter = 0

export type StoreKind = 'memory' | 'mongodb'

/**
 * The store every test server uses unless a test says otherwise: the embedded one, or with
 * TAILCAST_TEST_STORE=mongodb a fresh capped collection on MONGODB_URL (set by scripts/test-services.sh).
 * A test that runs on each store names the kind.
 */
export function storeOverrides(kind: string = process.env.TAILCAST_TEST_STORE ?? 'memory'): Overrides {
  if (kind === 'memory') return { store: { type: 'memory' } }
  if (kind !== 'mongodb') throw new Error(`TAILCAST_TEST_STORE=${kind}: expected memory or mongodb`)
  const url = process.env.MONGODB_URL
  if (url === undefined || url === '') {
    throw new Error('TAILCAST_TEST_STORE=mongodb but MONGODB_URL is not set: run the tests through `npm test` (scripts/test-services.sh) or set MONGODB_URL')
  }
  storeCounter++
  const collection = `s_${process.pid}_${Date.now().toString(36)}_${storeCounter}`
  return { store: { type: 'mongodb', mongodb: { url, database: 'tailcast_test', collection } } }
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
export async function startServer(overrides: Overrides = {}, opts: { store?: EventStore; logStream?: { write(line: string): void } } = {}): Promise<TestServer> {
  const config = loadConfig({
    env: {},
    overrides: deepMerge(deepMerge({ host: '127.0.0.1', port: 0, logLevel: 'silent' }, storeOverrides()), overrides),
  })
  const app = await buildApp(config, opts)
  await app.listen({ host: config.host, port: config.port })
  // Ready as /ready means it: tests that count store reads want the hot history warm.
  await app.hub.warmed
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
