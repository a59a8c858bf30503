import fp from 'fastify-plugin'
import { StreamClient } from '../client/stream-client.js'
import { redactUrl } from '../config.js'
import { unavailable } from '../errors.js'
import { isStreamRequest } from '../stream.js'

/** What a relay knows about its upstream (for logs, tests, and later /ready and /metrics). */
export interface UpstreamStatus {
  url: string
  connected: boolean
  /** The upstream reached `live` at least once since this process started. */
  caughtUp: boolean
  /** Id of the last upstream event stored. */
  position: number
  /** Set when relaying stopped for good: the upstream refused (a wrong URL), or its history was replaced. */
  stopped: string | null
  /** Why the last connection to the upstream failed or ended (null while one is open). */
  error: string | null
}

/**
 * Why the relay does not serve streams now, or null when it does: it stopped relaying, or it has
 * not yet followed its upstream to `live` since it started. For /ready and stream requests.
 */
export function upstreamProblem(status: UpstreamStatus): string | null {
  if (status.stopped !== null) return `relaying stopped: ${status.stopped}`
  if (status.caughtUp) return null
  return `not yet following the upstream ${status.url} (upstream.url, env TAILCAST_UPSTREAM): ${status.error ?? (status.connected ? 'connected, catching up' : 'connecting')}`
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Present when the server relays an upstream (config `upstream.url`). */
    upstream: UpstreamStatus | null
  }
}

/**
 * Relay mode: events come from an upstream tailcast stream (WS or SSE) through the shared stream
 * client, enter the store through the one ingest path with the upstream's ids, and are re-served
 * by this server's hub under the same resume rules. POST /messages is refused (409): a relay is
 * read-only. On startup it resumes after the store's newest id.
 *
 * Upstream `reset`:
 * - the relay's position is older than the upstream's oldest event (the relay was away longer than
 *   the upstream keeps events): the relay stores the upstream's live state, whose ids are all above
 *   its own, logs a warning naming the gap, and follows on. Downstream clients resuming inside the
 *   gap get `reset` by the normal rules.
 * - the upstream's store was replaced and now sends ids not above ones the relay already holds: the
 *   two histories cannot be merged under one increasing id order, so the relay stops relaying and
 *   logs an error saying how to fix it (restart the relay with an empty store); it never mixes them.
 *   An upstream restarted on an empty embedded store is not this case: its ids are clock-seeded
 *   and keep increasing, so the relay simply follows.
 * Until the upstream first reaches `live`, stream requests wait (up to `upstream.catchUpTimeoutMs`)
 * so that a restarted relay does not answer a resume id it is about to receive with `reset`; past
 * that they get 503 naming the problem (connection refused, a 404, not a stream URL), as does
 * /ready. Once followed, a passing upstream outage does not stop the relay serving what it holds.
 */
export default fp(
  async (app) => {
    const cfg = app.config.upstream
    if (cfg.url === '') {
      app.decorate('upstream', null)
      return
    }
    const shown = redactUrl(cfg.url)
    const status: UpstreamStatus = { url: shown, connected: false, caughtUp: false, position: 0, stopped: null, error: null }
    app.decorate('upstream', status)
    let markCaughtUp!: () => void
    const caughtUp = new Promise<void>((resolve) => (markCaughtUp = resolve))

    app.addHook('onRequest', async (req, reply) => {
      if (req.method === 'POST' && /^\/messages(\?|$)/.test(req.url)) {
        return reply.code(409).send({
          statusCode: 409,
          error: 'Conflict',
          message: `this server is a read-only relay of ${shown}: post events to the upstream`,
        })
      }
      if ((!status.caughtUp || status.stopped !== null) && isStreamRequest(req.method, req.url)) {
        if (status.stopped === null) {
          let timer: NodeJS.Timeout | undefined
          await Promise.race([caughtUp, new Promise<void>((resolve) => (timer = setTimeout(resolve, cfg.catchUpTimeoutMs)))])
          clearTimeout(timer)
        }
        // An empty stream would look like a quiet upstream: say that the relay does not follow one.
        const problem = upstreamProblem(status)
        if (problem !== null) {
          const retryAfter = status.stopped === null ? Math.max(1, Math.ceil(cfg.reconnectMaxMs / 1000)) : undefined
          return unavailable(reply, `this relay cannot serve streams: ${problem}`, retryAfter)
        }
      }
    })

    let client: StreamClient | undefined
    app.addHook('onReady', async () => {
      const { newest } = await app.store.bounds()
      status.position = newest ?? 0
      client = new StreamClient({
        url: cfg.url,
        token: cfg.token,
        lastEventId: newest,
        minBackoffMs: cfg.reconnectMinMs,
        maxBackoffMs: cfg.reconnectMaxMs,
        onEvent: async ({ id, ...event }) => {
          await app.ingest.submit([event], [id])
          status.position = id
        },
        onPosition: (position) => app.hub.followUpstream(position, status.position),
        onLive: (position) => {
          app.hub.followUpstream(position, status.position)
          if (!status.caughtUp) app.log.info({ upstream: shown, position }, 'relay caught up with the upstream')
          status.caughtUp = true
          markCaughtUp()
        },
        onReset: (c) => {
          app.log.warn(
            { upstream: shown, lastEventId: status.position, reason: c.data.reason },
            'upstream sent reset: it no longer holds the events after our last id; storing its live state from here (events in between are missing)',
          )
        },
        onBehind: (e) => {
          const msg = `upstream ${shown} replaced its history (it sends id ${e.id}, not above our id ${status.position}); relaying stopped. Restart this relay with an empty store to follow the new upstream.`
          status.stopped = msg
          app.log.error({ upstream: shown }, msg)
          markCaughtUp()
          void client?.close()
        },
        onStatus: (s) => {
          status.connected = s.state === 'open'
          if (s.state === 'open') status.error = null
          if (s.state === 'down') {
            // The stream client redacts what it reports (URLs, redirect targets).
            status.error = `${s.error} (retrying in ${s.retryInMs} ms)`
            app.log.warn({ upstream: shown, error: s.error, retryInMs: s.retryInMs }, 'upstream disconnected; reconnecting')
          }
        },
        onFatal: (err) => {
          status.stopped = err.message
          app.log.error({ upstream: shown }, `upstream refused: ${status.stopped}; relaying stopped`)
          markCaughtUp()
        },
        onError: (err) => app.log.error({ err, upstream: shown }, 'storing an upstream event failed; resuming from the last stored id'),
        onInvalid: (id, reason) => {
          app.metrics.dropped.inc({ reason: 'invalid' })
          app.log.warn({ upstream: shown, eventId: id, reason }, 'upstream sent an event tailcast does not accept; skipped')
        },
      })
      client.start()
    })
    app.addHook('preClose', async () => {
      await client?.close()
    })
  },
  { name: 'upstream', dependencies: ['config', 'store', 'hub', 'ingest', 'metrics'] },
)
