import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { connect, type NatsConnection } from 'nats'
import type { Test } from 'tap'
import type { EventStore } from '../../src/store/event-store.js'
import { freePort, startServer, type TestServer } from './server.js'
import { waitForPort } from './wait.js'

export const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server'

/** The harness's NATS (scripts/test-services.sh exports NATS_URL); a missing one is a failure. */
export function natsUrl(): string {
  const url = process.env.NATS_URL
  if (url === undefined || url === '') {
    throw new Error(
      'NATS_URL is not set: run the tests through `npm test` (scripts/test-services.sh starts `nats-server -js`), ' +
        'or start one yourself (`/usr/sbin/nats-server -js -a 127.0.0.1 -p PORT -sd $(mktemp -d)`) and export NATS_URL=nats://127.0.0.1:PORT',
    )
  }
  return url
}

/** Config overrides for an isolated stream, subject, dead-letter subject and durable on a shared NATS. */
export function natsOverrides(url: string, extra: Record<string, unknown> = {}): { nats: Record<string, unknown> } {
  const tag = randomBytes(4).toString('hex')
  return {
    nats: {
      url,
      stream: `T${tag}`,
      subject: `t${tag}.>`,
      durable: `w${tag}`,
      deadLetterSubject: `t${tag}dead.letters`,
      ...extra,
    },
  }
}

export async function natsClient(url: string): Promise<NatsConnection> {
  return connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100, waitOnFirstConnect: true })
}


/**
 * A nats-server of the test's own (for tests that stop and restart NATS): loopback, free port,
 * JetStream in a temporary store directory that survives restarts.
 */
export interface OwnNats {
  url: string
  start(): Promise<void>
  stop(): Promise<void>
  dispose(): Promise<void>
}

/** A nats-server of the test's own (JetStream on unless `jetstream: false`), to stop and start. */
export async function ownNatsServer({ jetstream = true } = {}): Promise<OwnNats> {
  if (!existsSync(NATS_SERVER_BIN)) {
    throw new Error(`${NATS_SERVER_BIN} is missing: install it with \`apt-get install nats-server\` (or set NATS_SERVER_BIN)`)
  }
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-nats-'))
  let child: ChildProcess | undefined
  const own: OwnNats = {
    url: `nats://127.0.0.1:${port}`,
    async start() {
      child = spawn(NATS_SERVER_BIN, [...(jetstream ? ['-js'] : []), '-a', '127.0.0.1', '-p', String(port), '-sd', dir], { stdio: 'ignore' })
      await waitForPort(port, 10_000, 'nats-server')
    },
    async stop() {
      const c = child
      child = undefined
      if (c === undefined || c.exitCode !== null) return
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve())
        c.kill('SIGTERM')
      })
    },
    async dispose() {
      await own.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
  await own.start()
  return own
}

/** Remove what a test's ingest created on a shared NATS: the stream, dead letters, lease bucket. */
export async function removeNatsStreams(nc: NatsConnection, stream: string): Promise<void> {
  const jsm = await nc.jetstreamManager()
  for (const name of [stream, `${stream}_DEADLETTER`, `KV_${stream}_LEASE`]) await jsm.streams.delete(name).catch(() => {})
}

/**
 * A server with NATS on its own stream and subjects, a NATS client for the test, and a teardown that
 * closes both and removes the streams.
 */
export async function natsTestServer(t: Test, extra: Record<string, unknown> = {}, opts: { store?: EventStore } = {}): Promise<{ server: TestServer; nc: NatsConnection }> {
  const url = natsUrl()
  const server = await startServer(natsOverrides(url, extra), opts)
  const nc = await natsClient(url)
  t.teardown(async () => {
    await server.close()
    await removeNatsStreams(nc, server.config.nats.stream)
    await nc.close()
  })
  return { server, nc }
}
