import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { Server as NetServer, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'

declare module 'fastify' {
  interface FastifyInstance {
    /** How a stopping instance lets go of its traffic without refusing any (see Shutdown). */
    shutdown: Shutdown
  }
  interface FastifyContextConfig {
    /** The route holds its connection open (SSE, WebSocket): a drain does not wait for it to end. */
    stream?: boolean
  }
}

/**
 * The first half of a graceful stop, before the streams end and NATS and the store close (the
 * plugins' close hooks). In order:
 * 1. `stopping`: `/ready` answers 503 at once, so a balancer that checks it stops choosing us;
 * 2. the listening socket closes: a proxy's new connection is refused, and nginx tries the request
 *    on another instance (`proxy_next_upstream error`, safe for a POST: nothing was sent);
 * 3. every request in flight is answered normally, and every response from now on says
 *    `Connection: close`; an idle keep-alive connection is left for its client to close (nginx
 *    after its upstream `keepalive_timeout`), or to use once more: closing it ourselves could cross
 *    a request on its way in, which the proxy could then neither retry (a POST may have been
 *    stored) nor answer but with a 502.
 * It ends when only stream connections are left, or at the drain deadline.
 */
export class Shutdown {
  stopping = false
  private readonly sockets = new Set<Socket>()
  /** Sockets carrying an SSE stream or an upgraded WebSocket. */
  private readonly streams = new WeakSet<Socket>()
  /** Responses not yet finished. */
  private readonly inFlight = new Set<ServerResponse>()

  constructor(private readonly server: Server) {
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket)
      socket.once('close', () => this.sockets.delete(socket))
    })
    // Before Fastify's own listener: the response is fresh, nothing written yet.
    server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
      if (this.stopping) res.shouldKeepAlive = false
      this.inFlight.add(res)
      res.once('close', () => this.inFlight.delete(res))
    })
  }

  /** Mark the stream routes' sockets (an onRequest hook; routes say `config: { stream: true }`). */
  markStream(socket: Socket): void {
    this.streams.add(socket)
  }

  /** Every connection still open, upgraded WebSockets included (the HTTP server stops tracking those). */
  openSockets(): Set<Socket> {
    return this.sockets
  }

  /** Sockets that are not streams: requests in flight and idle keep-alive connections. */
  private others(): number {
    let n = 0
    for (const s of this.sockets) if (!this.streams.has(s) && !s.destroyed) n++
    return n
  }

  /** Steps 1-3 above; resolves once only streams are left or after `ms`, saying which. */
  async drain(ms: number): Promise<{ left: number; elapsedMs: number }> {
    const started = performance.now()
    this.stopping = true
    // net.Server's close only: http.Server's would also close idle keep-alive connections.
    NetServer.prototype.close.call(this.server)
    for (const res of this.inFlight) if (!res.headersSent) res.shouldKeepAlive = false
    const deadline = started + ms
    while (this.others() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 25))
    return { left: this.others(), elapsedMs: Math.round(performance.now() - started) }
  }
}

/** Decorate `app.shutdown` and mark the stream routes' sockets. Before the app is ready. */
export function shutdownPlugin(app: FastifyInstance): Shutdown {
  const shutdown = new Shutdown(app.server)
  app.decorate('shutdown', shutdown)
  app.addHook('onRequest', (req, reply, done) => {
    // A HEAD is answered at once, like any request.
    if (req.routeOptions.config.stream === true && req.method === 'GET') {
      // Its connection ends with it (a refused stream request's too): a socket marked here never
      // carries another request, which a drain that does not wait for streams would cut, and
      // which a proxy that kept it (nginx's upstream keepalive) could send a POST on just as a
      // stopping instance closes it.
      reply.raw.shouldKeepAlive = false
      shutdown.markStream(req.raw.socket)
    }
    done()
  })
  return shutdown
}
