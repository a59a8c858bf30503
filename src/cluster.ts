import cluster from 'node:cluster'
import type { Config } from './config.js'
import { serve } from './server.js'

/** The exit code of a configuration error (cli.ts). */
const CONFIG_EXIT = 2

/**
 * Several server processes on one port. Each worker is a whole tailcast with its own tailing cursor
 * on the shared store, so a client resumes on any of them. node:cluster only starts and restarts them.
 */
export async function serveWorkers(config: Config): Promise<void> {
  if (cluster.isWorker) {
    // On Linux each worker binds the port itself (SO_REUSEPORT; `exclusive` keeps the primary out)
    // and the kernel spreads new connections over the workers' sockets. Otherwise node:cluster's
    // primary accepts every connection and passes it over: one process for a whole reconnect storm
    // (BENCHMARKS.md "Workers: connecting").
    await serve(config, process.platform === 'linux' ? { reusePort: true, exclusive: true } : {})
    return
  }
  // checkServe (startup.ts) has refused workers > 1 on the embedded store.
  let stopping = false
  const fork = (): void => {
    cluster.fork()
  }
  for (let i = 0; i < config.workers; i++) fork()
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(process.exitCode ?? 0)
      return
    }
    if (code === CONFIG_EXIT) {
      // A configuration error (exit 2) is the same in every worker: restarting cannot fix it.
      process.stderr.write(`tailcast: worker ${worker.process.pid} exited (2: a configuration error, above); stopping\n`)
      stopping = true
      process.exitCode = CONFIG_EXIT
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM')
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(CONFIG_EXIT)
      return
    }
    process.stderr.write(`tailcast: worker ${worker.process.pid} exited (${signal ?? code}); starting another\n`)
    setTimeout(fork, 500)
  })
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal)
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGTERM'))
}
