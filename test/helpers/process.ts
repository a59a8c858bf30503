import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort } from './server.js'

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))

export interface ServerProcess {
  child: ChildProcess
  url: string
  wsUrl: string
  port: number
  /** Everything the process wrote, stdout and stderr. */
  output(): string
  /** Resident set size in bytes, from /proc. */
  rss(): number
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** GET /ready: status and body. */
  ready(): Promise<{ status: number; body: any }>
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/**
 * The built server (`node dist/cli.js serve`) as a child process, for what an in-process server
 * cannot show: kill -9, signals, its own memory. `npm test` builds dist/ first.
 */
export async function spawnServer(env: Record<string, string> = {}, args: string[] = [], opts: { until?: '/ready' | '/health' } = {}): Promise<ServerProcess> {
  // `serve --port N` wins over env PORT: then the server is awaited on N.
  const portArg = args.indexOf('--port')
  const port = portArg >= 0 ? Number(args[portArg + 1]) : env.PORT !== undefined ? Number(env.PORT) : await freePort()
  const child = spawn(process.execPath, [CLI, 'serve', ...args], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env, PORT: env.PORT ?? String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  const onData = (d: Buffer): void => {
    out += d.toString()
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  let gone = false
  void exited.then(() => (gone = true))
  const deadline = Date.now() + 30_000
  for (;;) {
    if (gone) throw new Error(`server exited before answering:\n${out}`)
    if (Date.now() > deadline) {
      // Not left running: its pipes would hold the test file open until tap's timeout.
      child.kill('SIGKILL')
      throw new Error(`server did not answer ${opts.until ?? '/ready'} in 30 s:\n${out}`)
    }
    try {
      // '/health': up, even if not ready (a relay whose upstream is wrong).
      // Connection: close: a kept-alive connection would hold a SIGTERM's drain (src/shutdown.ts).
      if ((await fetch(`http://127.0.0.1:${port}${opts.until ?? '/ready'}`, { headers: { connection: 'close' } })).ok) break
    } catch {}
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    output: () => out,
    rss() {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))
      return m ? Number(m[1]) * 1024 : 0
    },
    exited,
    async ready() {
      const res = await fetch(`http://127.0.0.1:${port}/ready`, { headers: { connection: 'close' } })
      return { status: res.status, body: await res.json() }
    },
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}
