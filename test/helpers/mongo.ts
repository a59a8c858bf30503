import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MongoEventStore, type MongoStoreConfig, type MongoStoreOptions } from '../../src/store/mongo-store.js'
import { freePort } from './server.js'
import { waitForPort, waitUntil } from './wait.js'

const HOW = 'run the tests through `npm test` (scripts/test-services.sh) or set MONGODB_URL'

/** The MongoDB-wire server of this test run; throws (a test failure, never a skip) when there is none. */
export function mongoUrl(): string {
  const url = process.env.MONGODB_URL
  if (url === undefined || url === '') throw new Error(`MONGODB_URL is not set: ${HOW}`)
  return url
}

export const TEST_DATABASE = 'tailcast_test'

let counter = 0
/** A collection name no other test (or test process) uses. */
export function freshCollection(prefix = 't'): string {
  counter++
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter}`
}

/** Store config for a fresh collection on the test server. */
export function mongoConfig(over: Partial<MongoStoreConfig> = {}): MongoStoreConfig {
  return { url: mongoUrl(), database: TEST_DATABASE, collection: freshCollection(), cappedSize: 16 * 1024 * 1024, cappedMax: 10_000, ...over }
}

/** An opened MongoEventStore on a fresh collection (the caller closes it). */
export async function openMongoStore(over: Partial<MongoStoreConfig> = {}, opts: MongoStoreOptions = {}): Promise<MongoEventStore> {
  // A store the test makes itself checks behaviour, not the deadline (mongo-frozen.test.ts does,
  // with the product's 5 s): on a busy machine a FerretDB insert can take longer than that.
  const store = new MongoEventStore({ timeoutMs: 60_000, ...mongoConfig(over) }, opts)
  await store.open()
  return store
}

/**
 * A FerretDB of the test's own (SQLite in a temp dir, a free port) that it can stop and start again
 * on the same port and data: restart tests must not restart the server other test files share.
 */
export interface OwnFerretDb {
  url: string
  port: number
  dir: string
  start(): Promise<void>
  /** SIGTERM, or SIGKILL with `hard`; resolves when the process is gone. */
  stop(hard?: boolean): Promise<void>
  /** Stop and remove the data dir. */
  destroy(): Promise<void>
  /** SIGSTOP: the process keeps its sockets open and answers nothing (a frozen store, or a partition). */
  freeze(): Promise<void>
  /** SIGCONT after freeze(). */
  thaw(): void
}

export async function ownFerretDb(): Promise<OwnFerretDb> {
  const bin = process.env.TAILCAST_TEST_FERRETDB_BIN
  if (bin === undefined || bin === '') {
    throw new Error(`TAILCAST_TEST_FERRETDB_BIN is not set: ${HOW}; \`bash scripts/test-services.sh install\` installs FerretDB`)
  }
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-ferretdb-'))
  const port = await freePort()
  let child: ChildProcess | undefined
  let log = ''
  const self: OwnFerretDb = {
    url: `mongodb://127.0.0.1:${port}/`,
    port,
    dir,
    async start() {
      if (child !== undefined) throw new Error('FerretDB already running')
      const p = spawn(
        bin,
        [
          '--handler=sqlite',
          `--sqlite-url=file:${dir}/`,
          `--state-dir=${dir}`,
          `--listen-addr=127.0.0.1:${port}`,
          '--debug-addr=-',
          '--telemetry=disable',
          '--log-level=warn',
          `--test-capped-cleanup-interval=${process.env.TAILCAST_TEST_FERRETDB_CLEANUP_INTERVAL || '1s'}`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      )
      child = p
      p.stdout?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)))
      p.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)))
      await waitForPort(port, 30_000, 'FerretDB', () => (p.exitCode !== null || p.signalCode !== null ? `it exited: ${log}` : null))
    },
    async stop(hard = false) {
      const p = child
      if (p === undefined) return
      child = undefined
      if (p.exitCode !== null || p.signalCode !== null) return
      const gone = new Promise<void>((r) => p.once('exit', () => r()))
      p.kill(hard ? 'SIGKILL' : 'SIGTERM')
      await gone
    },
    async freeze() {
      if (child === undefined) throw new Error('FerretDB is not running')
      child.kill('SIGSTOP')
      // Stopped only once the kernel says so: a busy machine can let it answer a request or two first.
      const stat = `/proc/${child.pid}/stat`
      await waitUntil(() => (/^\d+ \(.*\) [tT] /.test(readFileSync(stat, 'utf8')) ? true : undefined), 5000, 'FerretDB to be stopped', 5)
    },
    thaw() {
      child?.kill('SIGCONT')
    },
    async destroy() {
      // A frozen process ignores SIGTERM until it runs again.
      child?.kill('SIGCONT')
      await self.stop(true)
      rmSync(dir, { recursive: true, force: true })
    },
  }
  await self.start()
  return self
}
