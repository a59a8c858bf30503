import net from 'node:net'

/**
 * Until 127.0.0.1:`port` accepts a connection, bounded. `gone` says why waiting is pointless (the
 * process exited, with its log) or null to keep waiting.
 */
export function waitForPort(port: number, timeoutMs: number, what: string, gone: () => string | null = () => null): Promise<void> {
  const until = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve()
      })
      s.once('error', () => {
        s.destroy()
        const why = gone()
        if (why !== null) reject(new Error(`${what} did not start: ${why}`))
        else if (Date.now() > until) reject(new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`))
        else setTimeout(attempt, 50)
      })
    }
    attempt()
  })
}

/** Until `check` returns a value other than undefined (polled every `everyMs`), bounded; `what` names it in the error. */
export async function waitUntil<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string, everyMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v !== undefined) return v
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
