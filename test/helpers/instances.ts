import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { freePort } from './nats.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** Compile src/ to dist/ so that child instances run the code under test (`node dist/cli.js`). */
export function buildDist(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' })
}

/** A tailcast server in its own process, so that kill -9 is real. */
export interface Instance {
  name: string
  url: string
  wsUrl: string
  child: ChildProcess
  /** stderr and stdout, for failure messages. */
  output(): string
  ready(): Promise<{ status: number; body: any }>
  kill(signal?: NodeJS.Signals): Promise<void>
}

export async function startInstance(name: string, env: Record<string, string>): Promise<Instance> {
  const port = await freePort()
  let out = ''
  const child = spawn(process.execPath, ['dist/cli.js', 'serve'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)))
  child.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)))
  const url = `http://127.0.0.1:${port}`
  const inst: Instance = {
    name,
    url,
    wsUrl: `ws://127.0.0.1:${port}`,
    child,
    output: () => out,
    async ready() {
      const res = await fetch(`${url}/ready`)
      return { status: res.status, body: await res.json() }
    },
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      return new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        child.once('exit', () => resolve())
        child.kill(signal)
      })
    },
  }
  const until = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`instance ${name} exited with ${child.exitCode}:\n${out}`)
    try {
      if ((await inst.ready()).status === 200) return inst
    } catch {}
    if (Date.now() > until) {
      await inst.kill('SIGKILL')
      throw new Error(`instance ${name} was not ready within 30 s:\n${out}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
}
