import { readFileSync, existsSync } from 'node:fs'
import { Ajv } from 'ajv'
import { Type, type Static } from 'typebox'

/*
 * The configuration's JSON schema, written once with TypeBox: `Config` is derived from it, Ajv
 * validates against it (TypeBox schemas are plain JSON Schema).
 */

const PositiveInt = Type.Integer({ minimum: 1 })

const LogLevelSchema = Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
const HostSchema = Type.String({ minLength: 1 })
const PortSchema = Type.Integer({ minimum: 0, maximum: 65535 })

const StoreConfigSchema = Type.Object(
  {
    type: Type.Enum(['memory', 'mongodb']),
    capacity: PositiveInt,
    /** Deadline of every store and broker call (write, read behind a replay, ping, JetStream publish), in ms. */
    timeoutMs: Type.Integer({ minimum: 100, maximum: 60000 }),
    mongodb: Type.Object(
      {
        url: Type.String({ pattern: '^mongodb(\\+srv)?://' }),
        database: Type.String({ pattern: '^[A-Za-z0-9_-]{1,63}$' }),
        collection: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,120}$' }),
        cappedSize: Type.Integer({ minimum: 4096 }),
        cappedMax: PositiveInt,
        monitorCommands: Type.Boolean(),
        /** Replay reads (resumes older than the hot history) sent at once per process; the others queue, fairly per client. 0: by server (FerretDB 1, MongoDB 8). */
        replayConcurrency: Type.Integer({ minimum: 0 }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
)

const StreamsConfigSchema = Type.Object(
  {
    competitionsWindowHours: Type.Number({ exclusiveMinimum: 0 }),
    heartbeatSeconds: Type.Number({ minimum: 0.01 }),
    retryMs: Type.Integer({ minimum: 0 }),
    replayPageSize: PositiveInt,
    /** A replay page read from the store stops growing past these serialised bytes (at least one event). */
    replayPageBytes: Type.Integer({ minimum: 1024 }),
    /** How long `live` waits for this process to dispatch what was acknowledged before the request; then the gap is read from the store. */
    liveWaitMs: Type.Integer({ minimum: 0, maximum: 60000 }),
    maxPendingEvents: PositiveInt,
    maxBufferedBytes: Type.Integer({ minimum: 1024 }),
    /** A client whose socket does not take a replay chunk within this is slow (SSE end, WebSocket 1013). */
    drainTimeoutSeconds: Type.Number({ minimum: 0.1, maximum: 3600 }),
    /** Removed (frames are bounded in bytes by memory.budgetBytes); still accepted so old configs load, and ignored. */
    frameCacheSize: Type.Optional(PositiveInt),
    maxConnectionsPerAddress: Type.Integer({ minimum: 0 }),
    /** The hot history each process keeps (replays and resumes inside it never read the store). */
    historyMaxBytes: Type.Integer({ minimum: 0 }),
    historyMaxEvents: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
)

/** The process's memory budget (src/budget.ts): 0 derives it from the machine. */
const MemoryConfigSchema = Type.Object({ budgetBytes: Type.Integer({ minimum: 0 }) }, { additionalProperties: false })

const PostConfigSchema = Type.Object(
  {
    enabled: Type.Boolean(),
    token: Type.String(),
    /** Posting without a credential on a listener other than loopback is wanted (else serve refuses to start). */
    open: Type.Boolean(),
  },
  { additionalProperties: false },
)

const CorsConfigSchema = Type.Object(
  {
    origins: Type.Array(Type.String()),
    methods: Type.Array(Type.String()),
    /** Request headers a page on another origin may send (the preflight's Access-Control-Allow-Headers). */
    headers: Type.Array(Type.String()),
    /** Response headers such a page may read (Access-Control-Expose-Headers). */
    exposedHeaders: Type.Array(Type.String()),
  },
  { additionalProperties: false },
)

/**
 * HTTPS with HTTP/2: both files set (PEM) = TLS on `port`, ALPN h2 and http/1.1; both empty = plain
 * HTTP/1.1 as before.
 */
const TlsConfigSchema = Type.Object({ cert: Type.String(), key: Type.String() }, { additionalProperties: false })

/** Relay mode: follow this upstream tailcast stream instead of taking POSTs (url "" = off). */
export const UpstreamConfigSchema = Type.Object(
  {
    url: Type.String({ pattern: '^(|(wss?|https?)://.+)$' }),
    /** A JWT for a private upstream stream, sent as `Authorization: Bearer`. */
    token: Type.String(),
    /**
     * Serve a private upstream (token or credentials in the URL) to anyone: without this, such a
     * relay needs auth of its own (auth.jwt) or it refuses to start.
     */
    public: Type.Boolean(),
    reconnectMinMs: PositiveInt,
    reconnectMaxMs: PositiveInt,
    catchUpTimeoutMs: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
)

const NatsConfigSchema = Type.Object(
  {
    /** Empty: NATS off (POST /messages writes to the store directly). Comma-separated for a cluster's nodes. May carry a token or user:password. */
    url: Type.String({ pattern: '^$|^(nats|tls|ws|wss)://' }),
    stream: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
    // Tokens separated by dots; `>` only as the last token (POST /messages publishes under it).
    subject: Type.String({ pattern: '^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*(\\.>)?$' }),
    durable: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }),
    deadLetterSubject: Type.String({ pattern: '^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$' }),
    maxPayload: Type.Integer({ minimum: 256, maximum: 8388608 }),
    leaseSeconds: Type.Number({ minimum: 1, maximum: 60 }),
    ackWaitSeconds: Type.Number({ minimum: 0.5, maximum: 3600 }),
    batchSize: Type.Integer({ minimum: 1, maximum: 10000 }),
    /** Copies of the JetStream streams and the lease bucket (3 on a 3-node cluster). */
    replicas: Type.Integer({ minimum: 1, maximum: 5 }),
  },
  { additionalProperties: false },
)

/**
 * Subscriber (and publisher) authorization with JWTs: off while no key is set. One key source:
 * an HS256 secret, a PEM public key (RSA: RS256, EC P-256: ES256) or a JWKS file (RS256, ES256).
 */
const AuthConfigSchema = Type.Object(
  {
    jwt: Type.Object(
      {
        secret: Type.String(),
        publicKeyFile: Type.String(),
        jwksFile: Type.String(),
        /** When set, tokens must carry this `iss` / `aud`. */
        issuer: Type.String(),
        audience: Type.String(),
      },
      { additionalProperties: false },
    ),
    /** The cookie a browser's token may come in (besides `Authorization: Bearer` and `?access_token=`). */
    cookie: Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$" }),
    /**
     * Origins whose pages may use the cookie (besides this server's own pages and cors.origins
     * entries other than `*`): a cookie-authenticated stream from any other page is refused.
     */
    cookieOrigins: Type.Array(Type.String({ pattern: '^([a-z][a-z0-9+.-]*://[^/?#\\s]+)$' })),
  },
  { additionalProperties: false },
)

export const ConfigSchema = Type.Object(
  {
    host: HostSchema,
    port: PortSchema,
    workers: Type.Integer({ minimum: 1, maximum: 64 }),
    shutdownTimeoutSeconds: Type.Number({ minimum: 1, maximum: 600 }),
    /** How long a stopping instance waits for requests in flight and idle keep-alive connections before it ends its streams. */
    shutdownDrainSeconds: Type.Number({ minimum: 0, maximum: 300 }),
    /** How long receiving one request (headers and body) may take; streams, once open, are not cut. */
    requestTimeoutSeconds: Type.Number({ minimum: 1, maximum: 3600 }),
    logLevel: LogLevelSchema,
    bodyLimit: Type.Integer({ minimum: 256, maximum: 16777216 }),
    /**
     * Proxies whose X-Forwarded-For is believed (addresses, CIDRs, or proxy-addr's names loopback,
     * linklocal, uniquelocal): the client address of the per-address cap and the logs is then the
     * one the nearest trusted proxy saw. Empty: the peer's address, whatever the headers say.
     */
    trustProxy: Type.Array(Type.String({ pattern: '^(loopback|linklocal|uniquelocal|[0-9A-Fa-f.:]+(/[0-9]{1,3})?)$' }), { maxItems: 100 }),
    store: StoreConfigSchema,
    streams: StreamsConfigSchema,
    memory: MemoryConfigSchema,
    post: PostConfigSchema,
    cors: CorsConfigSchema,
    tls: TlsConfigSchema,
    upstream: UpstreamConfigSchema,
    nats: NatsConfigSchema,
    auth: AuthConfigSchema,
  },
  { additionalProperties: false },
)

export type Config = Static<typeof ConfigSchema>
export type LogLevel = Static<typeof LogLevelSchema>

const DEFAULTS_URL = new URL('../config/default.json', import.meta.url)
export const SYSTEM_CONFIG_PATH = '/etc/tailcast/config.json'

/** Environment variables and the config key each sets. */
export const ENV_KEYS: Record<string, string> = {
  PORT: 'port',
  HOST: 'host',
  TAILCAST_WORKERS: 'workers',
  TAILCAST_SHUTDOWN_TIMEOUT_SECONDS: 'shutdownTimeoutSeconds',
  TAILCAST_SHUTDOWN_DRAIN_SECONDS: 'shutdownDrainSeconds',
  TAILCAST_REQUEST_TIMEOUT_SECONDS: 'requestTimeoutSeconds',
  LOG_LEVEL: 'logLevel',
  MONGODB_URL: 'store.mongodb.url',
  TAILCAST_BODY_LIMIT: 'bodyLimit',
  TAILCAST_TRUST_PROXY: 'trustProxy',
  TAILCAST_STORE: 'store.type',
  TAILCAST_STORE_CAPACITY: 'store.capacity',
  TAILCAST_MONGODB_DATABASE: 'store.mongodb.database',
  TAILCAST_MONGODB_COLLECTION: 'store.mongodb.collection',
  TAILCAST_MONGODB_CAPPED_SIZE: 'store.mongodb.cappedSize',
  TAILCAST_MONGODB_CAPPED_MAX: 'store.mongodb.cappedMax',
  TAILCAST_MONGODB_MONITOR_COMMANDS: 'store.mongodb.monitorCommands',
  TAILCAST_MONGODB_REPLAY_CONCURRENCY: 'store.mongodb.replayConcurrency',
  TAILCAST_STORE_TIMEOUT_MS: 'store.timeoutMs',
  TAILCAST_COMPETITIONS_WINDOW_HOURS: 'streams.competitionsWindowHours',
  TAILCAST_HEARTBEAT_SECONDS: 'streams.heartbeatSeconds',
  TAILCAST_RETRY_MS: 'streams.retryMs',
  TAILCAST_MAX_BUFFERED_BYTES: 'streams.maxBufferedBytes',
  TAILCAST_DRAIN_TIMEOUT_SECONDS: 'streams.drainTimeoutSeconds',
  TAILCAST_MEMORY_BUDGET: 'memory.budgetBytes',
  TAILCAST_MAX_CONNECTIONS_PER_ADDRESS: 'streams.maxConnectionsPerAddress',
  TAILCAST_HISTORY_MAX_BYTES: 'streams.historyMaxBytes',
  TAILCAST_HISTORY_MAX_EVENTS: 'streams.historyMaxEvents',
  TAILCAST_REPLAY_PAGE_BYTES: 'streams.replayPageBytes',
  TAILCAST_LIVE_WAIT_MS: 'streams.liveWaitMs',
  TAILCAST_POST_ENABLED: 'post.enabled',
  TAILCAST_POST_TOKEN: 'post.token',
  TAILCAST_POST_OPEN: 'post.open',
  TAILCAST_CORS_ORIGINS: 'cors.origins',
  TAILCAST_CORS_METHODS: 'cors.methods',
  TAILCAST_CORS_HEADERS: 'cors.headers',
  TAILCAST_CORS_EXPOSED_HEADERS: 'cors.exposedHeaders',
  TAILCAST_TLS_CERT: 'tls.cert',
  TAILCAST_TLS_KEY: 'tls.key',
  TAILCAST_UPSTREAM: 'upstream.url',
  TAILCAST_UPSTREAM_TOKEN: 'upstream.token',
  TAILCAST_UPSTREAM_PUBLIC: 'upstream.public',
  NATS_URL: 'nats.url',
  TAILCAST_NATS_STREAM: 'nats.stream',
  TAILCAST_NATS_SUBJECT: 'nats.subject',
  TAILCAST_NATS_DURABLE: 'nats.durable',
  TAILCAST_NATS_DEAD_LETTER_SUBJECT: 'nats.deadLetterSubject',
  TAILCAST_NATS_MAX_PAYLOAD: 'nats.maxPayload',
  TAILCAST_NATS_LEASE_SECONDS: 'nats.leaseSeconds',
  TAILCAST_NATS_ACK_WAIT_SECONDS: 'nats.ackWaitSeconds',
  TAILCAST_NATS_REPLICAS: 'nats.replicas',
  TAILCAST_JWT_SECRET: 'auth.jwt.secret',
  TAILCAST_JWT_PUBLIC_KEY_FILE: 'auth.jwt.publicKeyFile',
  TAILCAST_JWT_JWKS_FILE: 'auth.jwt.jwksFile',
  TAILCAST_JWT_ISSUER: 'auth.jwt.issuer',
  TAILCAST_JWT_AUDIENCE: 'auth.jwt.audience',
  TAILCAST_AUTH_COOKIE: 'auth.cookie',
  TAILCAST_AUTH_COOKIE_ORIGINS: 'auth.cookieOrigins',
}

/** Keys whose values never appear in output. */
export const SECRET_KEYS = ['post.token', 'store.mongodb.url', 'upstream.url', 'upstream.token', 'nats.url', 'auth.jwt.secret']

/** Secret keys that are URLs: their host stays visible, their credentials do not. */
const URL_KEYS = ['store.mongodb.url', 'upstream.url', 'nats.url']

export class ConfigError extends Error {
  override name = 'ConfigError'
}

type Tree = Record<string, unknown>

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function merge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base }
  for (const [k, v] of Object.entries(over)) {
    if (k === '__proto__' || k === 'constructor' || k === 'prototype') continue
    out[k] = isTree(v) && isTree(out[k]) ? merge(out[k] as Tree, v) : v
  }
  return out
}

function getPath(t: Tree, path: string): unknown {
  return path.split('.').reduce<unknown>((v, k) => (isTree(v) ? v[k] : Array.isArray(v) ? v[Number(k)] : undefined), t)
}

function setPath(t: Tree, path: string, value: unknown): void {
  const keys = path.split('.')
  let node = t
  for (const k of keys.slice(0, -1)) {
    if (!isTree(node[k])) node[k] = {}
    node = node[k] as Tree
  }
  node[keys[keys.length - 1]] = value
}

/** Env values are text: read them as the type the default has. */
function fromEnv(name: string, raw: string, like: unknown): unknown {
  if (typeof like === 'number') {
    const n = Number(raw)
    if (raw.trim() === '' || Number.isNaN(n)) throw new ConfigError(`${name}=${JSON.stringify(raw)}: expected a number`)
    return n
  }
  if (typeof like === 'boolean') {
    if (/^(true|1|yes|on)$/i.test(raw)) return true
    if (/^(false|0|no|off)$/i.test(raw)) return false
    throw new ConfigError(`${name}=${JSON.stringify(raw)}: expected true or false`)
  }
  if (Array.isArray(like)) return raw.split(',').map((s) => s.trim()).filter((s) => s !== '')
  return raw
}

/**
 * JSON.parse's reason without the piece of the file V8 quotes in some of them
 * (`Unexpected token 'h', ..."token":hunter2}" is not valid JSON`): a config file holds secrets.
 */
function jsonError(message: string, text: string): string {
  const m = /^Unexpected token .*?, (?:\.\.\.)?"([\s\S]*?)"(?:\.\.\.)? is not valid JSON$/.exec(message)
  if (m === null) return message
  const at = text.indexOf(m[1])
  return at < 0 ? 'unexpected token' : `unexpected token near line ${text.slice(0, at).split('\n').length}`
}

function readJson(path: string | URL): Tree {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${String(path)}: ${(err as Error).message}`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`config file ${String(path)} is not valid JSON: ${jsonError((err as Error).message, text)}`)
  }
  if (!isTree(parsed)) throw new ConfigError(`config file ${String(path)} must hold a JSON object`)
  return parsed
}

function kindOf(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`
}

/**
 * A value as a config error shows it: never a secret, nor a value given where a secret's parent
 * goes (`"store": {"mongodb": "mongodb://bob:pw@h"}` holds the URL one level too high). A URL is
 * shown without its credentials, so a typo in its scheme, host or path can be seen.
 */
function shownValue(key: string, value: unknown): string {
  if (URL_KEYS.includes(key) && typeof value === 'string') return JSON.stringify(redactMalformedUrl(value))
  if (SECRET_KEYS.includes(key)) return '"[redacted]"'
  if (key === '' || SECRET_KEYS.some((secret) => secret.startsWith(key + '.'))) return `(${kindOf(value)}, value hidden)`
  return JSON.stringify(value)
}

const validate = new Ajv({ allErrors: true, strict: true }).compile<Config>(ConfigSchema)

export interface LoadOptions {
  /** A config file; when absent, /etc/tailcast/config.json is read if it exists. */
  file?: string
  env?: NodeJS.ProcessEnv
  /** Values that win over everything (used by tests and the CLI). */
  overrides?: Tree
}

/** config/default.json, validated: what every setting is when nothing sets it. */
export function defaultConfig(): Config {
  const tree = readJson(DEFAULTS_URL)
  if (!validate(tree)) throw new ConfigError(`config/default.json does not match the schema`)
  return tree
}

/** defaults (config/default.json) < file < environment < overrides; then validated. */
export function loadConfig(opts: LoadOptions = {}): Config {
  const defaults = readJson(DEFAULTS_URL)
  let tree = defaults
  const file = opts.file ?? (existsSync(SYSTEM_CONFIG_PATH) ? SYSTEM_CONFIG_PATH : undefined)
  if (file !== undefined) tree = merge(tree, readJson(file))
  const env = opts.env ?? process.env
  for (const [name, path] of Object.entries(ENV_KEYS)) {
    const raw = env[name]
    if (raw !== undefined) setPath(tree, path, fromEnv(name, raw, getPath(defaults, path)))
  }
  if (opts.overrides) tree = merge(tree, opts.overrides)
  if (!validate(tree)) {
    const lines = (validate.errors ?? []).map((e) => {
      const key = e.instancePath.slice(1).replaceAll('/', '.')
      if (e.keyword === 'additionalProperties') return `unknown key "${key ? key + '.' : ''}${(e.params as { additionalProperty: string }).additionalProperty}"`
      const shown = shownValue(key, getPath(tree, key))
      const allowed = e.keyword === 'enum' ? `: allowed ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}` : ''
      return `${key || '(top level)'} = ${shown}: ${e.message}${allowed}`
    })
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`)
  }
  const config: Config = tree
  if (config.upstream.url !== '' && config.nats.url !== '') {
    throw new ConfigError('invalid configuration:\n  upstream.url and nats.url are both set: a relay takes its events from its upstream only; set one of them')
  }
  const jwt = config.auth.jwt
  const keys = (['secret', 'publicKeyFile', 'jwksFile'] as const).filter((k) => jwt[k] !== '')
  if (keys.length > 1) {
    throw new ConfigError(`invalid configuration:\n  ${keys.map((k) => `auth.jwt.${k}`).join(' and ')} are set together: tokens are checked against one key source; set one of them`)
  }
  // A relay re-serves what its credentials read upstream: to everyone, unless it checks tokens itself.
  const up = config.upstream
  if (up.url !== '' && (up.token !== '' || redactUrl(up.url) !== up.url) && keys.length === 0 && !up.public) {
    throw new ConfigError(
      'invalid configuration:\n  upstream.token (or credentials in upstream.url) is set but this relay has no auth of its own: ' +
        'everyone could read the private upstream through it. Either set auth.jwt (TAILCAST_JWT_SECRET, ..._PUBLIC_KEY_FILE or ..._JWKS_FILE) ' +
        'so its readers need tokens, or set upstream.public (TAILCAST_UPSTREAM_PUBLIC=true) to serve it to anyone on purpose',
    )
  }
  if ((config.tls.cert === '') !== (config.tls.key === '')) {
    throw new ConfigError(`invalid configuration:\n  tls.${config.tls.cert === '' ? 'key' : 'cert'} is set without tls.${config.tls.cert === '' ? 'cert' : 'key'}: HTTPS needs both files (PEM); set both, or neither for plain HTTP`)
  }
  // HS256 with a short secret can be brute-forced offline from any one token.
  if (jwt.secret !== '' && Buffer.byteLength(jwt.secret) < 32) {
    throw new ConfigError('invalid configuration:\n  auth.jwt.secret = "[redacted]": must be at least 32 bytes (e.g. `openssl rand -base64 32`)')
  }
  return config
}

/** The effective config with secrets replaced, for --print-config and logs. */
export function redact(config: Config): Tree {
  const copy = JSON.parse(JSON.stringify(config)) as Tree
  for (const key of SECRET_KEYS) {
    const v = getPath(copy, key)
    if (typeof v === 'string' && v !== '') setPath(copy, key, URL_KEYS.includes(key) ? redactUrl(v) : '[redacted]')
  }
  return copy
}

/**
 * redactUrl, and for a URL too malformed to have its user info after `//` (`wss:/bob:pw@h`,
 * `bob:pw@h`), everything before its last `@` outside the query.
 */
function redactMalformedUrl(url: string): string {
  const shown = redactUrl(url)
  const authority = shown.split(/[?#]/, 1)[0]
  if (!/(?<!\[redacted\])@/.test(authority)) return shown
  return shown.replace(/^([a-z][a-z0-9+.-]*:\/{1,2})?[^?#]*@/i, (_all, scheme: string | undefined) => `${scheme ?? ''}[redacted]@`)
}

/** Query parameters whose values are credentials (`authSource`, `keyboard` are not). */
const SECRET_PARAM = /^(auth|key|apikey|api[_-]key|jwt|.*(token|secret|password))$/i

/**
 * Hide the credentials in a URL, a comma-separated list of them (NATS servers, a MongoDB seed list),
 * a request path, or a text that holds URLs (an error message): the user info of every URL and the
 * values of secret query parameters. Hosts, paths and other parameters stay, so a typo shows.
 * The user info runs to the last `@` before the path: a `,` or `@` in a password hides no host
 * wrongly, at worst one host too many.
 */
export function redactUrl(url: string): string {
  return url
    .replace(/\/\/[^/?#\s]*@/g, '//[redacted]@')
    .replace(/([?&])([^=&#\s]*)=[^&#\s]*/g, (param, sep: string, name: string) => (isSecretParam(name) ? `${sep}${name}=[redacted]` : param))
}

/**
 * Is the parameter named `raw` (as it appears in a URL) a credential? Judged on the name the server
 * reads, after percent-decoding (`access_toke%6E` is `access_token`) and `+` as a space; decoded
 * again while it changes, and a name that does not decode is taken for a secret (hiding too much
 * is the safe side).
 */
function isSecretParam(raw: string): boolean {
  let name = raw
  for (let i = 0; i < 4 && name.includes('%'); i++) {
    try {
      name = decodeURIComponent(name.replaceAll('+', ' '))
    } catch {
      return true
    }
  }
  return SECRET_PARAM.test(name)
}
