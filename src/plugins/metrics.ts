import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import { MongoEventStore } from '../store/mongo-store.js'
import { kindOfKey } from '../stream.js'

export interface Metrics {
  registry: Registry
  /** Events refused at the door, by reason (invalid input, dead-lettered, ...). */
  dropped: Counter<'reason'>
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

/**
 * Prometheus metrics (`app.metrics`). Counters the hub keeps anyway are read when scraped, so the
 * delivery path does no extra work per event.
 */
export default fp(
  async (app) => {
    const registry = new Registry()
    collectDefaultMetrics({ register: registry })
    const hub = app.hub
    new Gauge({
      name: 'tailcast_connections',
      help: 'Clients connected, by transport and stream kind',
      labelNames: ['transport', 'stream'],
      registers: [registry],
      collect() {
        this.reset()
        for (const [label, n] of hub.connections()) {
          const [transport, stream] = label.split(':')
          this.set({ transport, stream }, n)
        }
      },
    })
    const presence = app.presence
    new Gauge({
      name: 'tailcast_presence',
      help: 'Clients following streams of each kind, summed over every instance sharing the store (the same on each: take max, not sum)',
      labelNames: ['stream'],
      registers: [registry],
      async collect() {
        const byKind = new Map<string, number>([['competitions', 0], ['competition', 0], ['room', 0]])
        // The store unreachable: this instance's own counts, rather than no metrics at all.
        const counts = await presence.counts().catch(() => hub.presence())
        for (const [key, n] of counts) byKind.set(kindOfKey(key), (byKind.get(kindOfKey(key)) ?? 0) + n)
        this.reset()
        for (const [stream, n] of byKind) this.set({ stream }, n)
      },
    })
    const fromHub = (name: string, help: string, read: () => number): void => {
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset()
          this.inc(read())
        },
      })
    }
    fromHub('tailcast_events_ingested_total', 'Events that reached this process from the store (any ingest path, any instance)', () => hub.stats.ingested)
    fromHub('tailcast_events_delivered_total', 'Event deliveries to clients (one event to one client counts one)', () => hub.stats.delivered)
    fromHub('tailcast_event_errors_total', 'Events that could not be serialised or delivered to a client: each logged with its id, skipped, the rest kept flowing', () => hub.stats.eventErrors)
    fromHub('tailcast_slow_client_disconnects_total', 'Clients disconnected because their send buffer was full', () => hub.stats.slowDisconnects)
    fromHub('tailcast_replays_from_memory_total', 'Replays and resumes served from the hot history alone, without a store query', () => hub.stats.replaysFromMemory)
    fromHub('tailcast_position_queries_total', 'Queries of the newest acknowledged position (read-your-writes; shared by the stream requests that arrive together)', () => hub.stats.positionQueries)
    fromHub('tailcast_live_waits_expired_total', 'Streams whose live waited past streams.liveWaitMs for the dispatch to reach what was acknowledged before them: the gap was read from the store', () => hub.stats.liveWaitsExpired)
    fromHub('tailcast_replays_from_store_total', 'Replays and resumes that read the store (they reached back before the hot history)', () => hub.stats.replaysFromStore)
    const fromHubGauge = (name: string, help: string, read: () => number): void => {
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(read())
        },
      })
    }
    fromHubGauge('tailcast_history_bytes', 'Bytes held by the hot history (frames and bookkeeping)', () => hub.history.bytes)
    fromHubGauge('tailcast_history_events', 'Events held by the hot history', () => hub.history.events)
    fromHubGauge('tailcast_history_warmup_seconds', 'Time the hot history took to warm from the store at start', () => hub.stats.warmMs / 1000)
    const budget = app.budget
    new Gauge({
      name: 'tailcast_memory_bytes',
      help: 'Bytes held by each part that grows with traffic (store: the embedded ring; history: the hot history; frames: frames of replays read from the store; clients: bytes written to clients and not yet taken by their sockets; ingest: NATS messages on their way to the store; presence: presence documents), in serialised bytes plus bookkeeping',
      labelNames: ['part'],
      registers: [registry],
      collect() {
        this.reset()
        for (const [part, bytes] of budget.parts()) this.set({ part }, bytes)
      },
    })
    fromHubGauge('tailcast_memory_budget_bytes', 'The process memory budget the parts of tailcast_memory_bytes share (memory.budgetBytes)', () => budget.totalBytes)
    const store = app.store
    if (store instanceof MongoEventStore) {
      new Counter({
        name: 'tailcast_store_commands_total',
        help: 'Commands sent to MongoDB, by name (from the driver\'s command monitoring; getMore includes the tail\'s waits)',
        labelNames: ['command'],
        registers: [registry],
        collect() {
          this.reset()
          for (const [command, n] of store.commands) this.inc({ command }, n)
        },
      })
    }
    fromHubGauge('tailcast_tail_lag_seconds', 'Time from the store accepting the last event this process followed to its dispatch here (not the event\'s own `time`)', () => hub.stats.tailLagMs / 1000)
    const dropped = new Counter({
      name: 'tailcast_events_dropped_total',
      help: 'Events refused and not stored, by reason',
      labelNames: ['reason'],
      registers: [registry],
    })
    app.decorate('metrics', { registry, dropped })
  },
  { name: 'metrics', dependencies: ['hub', 'store', 'presence'] },
)
