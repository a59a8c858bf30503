/** How long a store or broker call may take unless configured (`store.timeoutMs`): SPEC "at most 5 s". */
export const DEFAULT_TIMEOUT_MS = 5000

/** A store or broker call that got no answer in time. It may still complete (or have completed) on the server. */
export class DeadlineError extends Error {
  override name = 'DeadlineError'
  constructor(readonly what: string, readonly ms: number) {
    super(`${what}: no answer within ${ms} ms`)
  }
}

/**
 * `p`, or a DeadlineError once `ms` pass without it settling. The call itself is not stopped (give
 * it the driver's own `timeoutMS` too, so its connection is given up): this bounds the wait of whoever
 * asked, even when the server is frozen and the socket stays open.
 */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(what, ms)), ms)
    timer.unref()
  })
  // The loser's rejection is handled: a call that fails after the deadline is no unhandled rejection.
  p.catch(() => {})
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}
