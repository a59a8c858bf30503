/**
 * Whether `p` settled within `ms` (a rejection counts as settled). Shutdown steps are bounded with
 * it: after a NATS or store restart a request can wait on a server that no longer knows it, and a
 * shutdown must end within its deadline.
 */
export async function bounded(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))
  try {
    return await Promise.race([p.then(() => true, () => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** One step of a shutdown: waited for at most `ms`, and logged either way. */
export async function closeStep(log: { info(msg: string): void; warn(msg: string): void }, what: string, close: () => Promise<unknown>, ms = 5000): Promise<void> {
  if (await bounded(close(), ms)) log.info(`shutdown: ${what} closed`)
  else log.warn(`shutdown: gave up waiting for ${what} to close after ${ms} ms`)
}
