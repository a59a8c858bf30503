import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'nats'
import { NATS_SERVER_BIN } from './nats.js'
import { freePort } from './server.js'
import { waitForPort } from './wait.js'

export interface ClusterNode {
  name: string
  /** Client port on 127.0.0.1. */
  port: number
  url: string
  running(): boolean
}

/**
 * A JetStream cluster of nats-server nodes on loopback free ports, each with its own store
 * directory (kept across restarts, so a restarted node catches up like a real one).
 */
export interface NatsCluster {
  nodes: ClusterNode[]
  /** Every node's URL, comma-separated: what NATS_URL holds for a cluster. */
  url: string
  /** (Re)start node i and wait until it accepts clients. */
  start(i: number): Promise<void>
  /** Signal node i (SIGKILL by default) and wait for it to exit. */
  kill(i: number, signal?: NodeJS.Signals): Promise<void>
  /** The node whose client port is `hostPort` (`127.0.0.1:4222`, as /ready's nats.server says). */
  indexOf(hostPort: string): number
  /** Until JetStream answers through every running node (a meta leader is elected), bounded. */
  waitForJetStream(timeoutMs?: number): Promise<void>
  /** What node i wrote (stdout and stderr), for failure messages. */
  log(i: number): string
  dispose(): Promise<void>
}

export async function natsCluster(size = 3): Promise<NatsCluster> {
  if (!existsSync(NATS_SERVER_BIN)) {
    throw new Error(`${NATS_SERVER_BIN} is missing: install it with \`bash scripts/test-services.sh install\` (apt-get install -y nats-server), or set NATS_SERVER_BIN`)
  }
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-nats-cluster-'))
  const ports = await distinctPorts(2 * size)
  const clientPorts = ports.slice(0, size)
  const routePorts = ports.slice(size)
  const children: (ChildProcess | undefined)[] = Array.from({ length: size }, () => undefined)
  const logs: string[] = Array.from({ length: size }, () => '')
  const alive = (c: ChildProcess | undefined): c is ChildProcess => c !== undefined && c.exitCode === null && c.signalCode === null

  const cluster: NatsCluster = {
    nodes: clientPorts.map((port, i) => ({ name: `n${i + 1}`, port, url: `nats://127.0.0.1:${port}`, running: () => alive(children[i]) })),
    url: clientPorts.map((p) => `nats://127.0.0.1:${p}`).join(','),
    async start(i) {
      if (alive(children[i])) return
      const routes = routePorts.filter((_, k) => k !== i).map((p) => `nats://127.0.0.1:${p}`).join(',')
      const args = ['-js', '-a', '127.0.0.1', '-p', String(clientPorts[i]), '-n', `n${i + 1}`, '-sd', join(dir, `n${i + 1}`),
        '--cluster_name', 'tailcast-test', '--cluster', `nats://127.0.0.1:${routePorts[i]}`, '--routes', routes]
      const child = spawn(NATS_SERVER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      children[i] = child
      const keep = (d: Buffer): void => {
        logs[i] = (logs[i] + d.toString()).slice(-20_000)
      }
      child.stdout?.on('data', keep)
      child.stderr?.on('data', keep)
      await waitForPort(clientPorts[i], 15_000, `nats-server n${i + 1}`, () => (alive(child) ? null : `it exited:\n${logs[i]}`))
    },
    async kill(i, signal = 'SIGKILL') {
      const c = children[i]
      if (!alive(c)) return
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve())
        c.kill(signal)
      })
    },
    indexOf(hostPort) {
      return clientPorts.findIndex((p) => hostPort.endsWith(`:${p}`))
    },
    async waitForJetStream(timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      for (const [i, node] of cluster.nodes.entries()) {
        if (!node.running()) continue
        // One node at a time, connected to it alone: each must reach the meta leader.
        const nc = await connect({ servers: node.url, ignoreClusterUpdates: true, noRandomize: true, timeout: 2000 })
        try {
          for (;;) {
            try {
              const jsm = await nc.jetstreamManager({ timeout: 2000 })
              await jsm.getAccountInfo()
              break
            } catch (err) {
              if (Date.now() > until) throw new Error(`JetStream did not answer through ${node.name} within ${timeoutMs} ms: ${(err as Error).message}\n${logs[i].slice(-3000)}`)
              await new Promise((r) => setTimeout(r, 200))
            }
          }
        } finally {
          await nc.close()
        }
      }
    },
    log: (i) => logs[i],
    async dispose() {
      for (let i = 0; i < size; i++) await cluster.kill(i, 'SIGTERM')
      rmSync(dir, { recursive: true, force: true })
    },
  }
  try {
    await Promise.all(cluster.nodes.map((_, i) => cluster.start(i)))
    await cluster.waitForJetStream()
  } catch (err) {
    await cluster.dispose()
    throw err
  }
  return cluster
}

/** `n` free loopback ports, all different (freePort may hand out a port twice once it is closed). */
export async function distinctPorts(n: number): Promise<number[]> {
  const out = new Set<number>()
  while (out.size < n) out.add(await freePort())
  return [...out]
}
