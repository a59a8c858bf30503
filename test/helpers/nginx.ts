import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { freePort } from './server.js'
import { waitForPort, waitUntil } from './wait.js'

const LOCAL_SH = fileURLToPath(new URL('../../deploy/local.sh', import.meta.url))
export const NGINX_BIN = process.env.NGINX_BIN ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx')

export interface Nginx {
  port: number
  url: string
  wsUrl: string
  /** With `tls`: https://127.0.0.1:PORT of the HTTPS (HTTP/2) listener. */
  httpsUrl?: string
  /** nginx -s reload, resolved once the new workers run (the old ones finish their streams meanwhile). */
  reload(): Promise<void>
  /** What nginx logged (error.log at notice). */
  errorLog(): string
  stop(): Promise<void>
}

/**
 * nginx running deploy/nginx/tailcast.conf (rendered by `deploy/local.sh nginx-conf`: the shipped
 * site file with its listen address and upstream servers replaced) on a free loopback port, as the
 * current user, with its own prefix, pid file and logs. `shutdownTimeout` is how long a reload lets
 * old workers keep their streams (nginx's worker_shutdown_timeout).
 */
export async function startNginx(upstreams: string[], opts: { shutdownTimeout?: string; tls?: { certFile: string; keyFile: string } } = {}): Promise<Nginx> {
  if (!existsSync(NGINX_BIN)) {
    throw new Error(`${NGINX_BIN} is missing: install it with \`bash scripts/test-services.sh install\` (apt-get install -y nginx), or set NGINX_BIN`)
  }
  const prefix = mkdtempSync(join(tmpdir(), 'tailcast-nginx-'))
  const port = await freePort()
  const tlsPort = opts.tls === undefined ? undefined : await freePort()
  const tls = opts.tls === undefined ? {} : { TAILCAST_NGINX_TLS_LISTEN: `127.0.0.1:${tlsPort}`, TAILCAST_NGINX_CERT: opts.tls.certFile, TAILCAST_NGINX_KEY: opts.tls.keyFile }
  await promisify(execFile)('bash', [LOCAL_SH, 'nginx-conf', prefix, `127.0.0.1:${port}`, ...upstreams], {
    env: { ...process.env, TAILCAST_NGINX_SHUTDOWN_TIMEOUT: opts.shutdownTimeout ?? '10s', ...tls },
  })
  const args = ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-e', join(prefix, 'error.log')]
  const child: ChildProcess = spawn(NGINX_BIN, [...args, '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const errorLog = (): string => {
    try {
      return readFileSync(join(prefix, 'error.log'), 'utf8')
    } catch {
      return ''
    }
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
    rmSync(prefix, { recursive: true, force: true })
  }
  try {
    await waitForPort(port, 15_000, 'nginx', () => (child.exitCode === null ? null : `it exited:\n${out}\n${errorLog()}`))
  } catch (err) {
    await stop()
    throw err
  }
  const workersStarted = (): number => errorLog().split('start worker process').length - 1
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    ...(tlsPort === undefined ? {} : { httpsUrl: `https://127.0.0.1:${tlsPort}` }),
    async reload() {
      const before = workersStarted()
      await promisify(execFile)(NGINX_BIN, [...args, '-s', 'reload'])
      await waitUntil(() => (workersStarted() > before ? true : undefined), 15_000, 'nginx to start new workers after the reload')
    },
    errorLog,
    stop,
  }
}
