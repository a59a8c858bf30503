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
    mongodb: Type.Object(
      {
        url: Type.String({ pattern: '^mongodb(\\+srv)?://' }),
        database: Type.String({ pattern: '^[A-Za-z0-9_-]{1,63}$' }),
        collection: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,120}$' }),
        cappedSize: Type.Integer({ minimum: 4096 }),
        cappedMax: PositiveInt,
        monitorCommands: Type.Boolean(),
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
    maxPendingEvents: PositiveInt,
    maxBufferedBytes: Type.Integer({ minimum: 1024 }),
    frameCacheSize: PositiveInt,
    maxConnectionsPerAddress: Type.Integer({ minimum: 0 }),
    /** The hot history each process keeps (replays and resumes inside it never read the store). */
    historyMaxBytes: Type.Integer({ minimum: 0 }),
    historyMaxEvents: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
)

const PostConfigSchema = Type.Object({ enabled: Type.Boolean(), token: Type.String() }, { additionalProperties: false })

const CorsConfigSchema = Type.Object(
  { origins: Type.Array(Type.String()), methods: Type.Array(Type.String()), headers: Type.Array(Type.String()) },
  { additionalProperties: false },
)

/** Relay mode: follow this upstream tailcast stream instead of taking POSTs (url "" = off). */
export const UpstreamConfigSchema = Type.Object(
  {
    url: Type.String({ pattern: '^(|(wss?|https?)://.+)$' }),
    /** A JWT for a private upstream stream, sent as `Authorization: Bearer`. */
    token: Type.String(),
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
    store: StoreConfigSchema,
    streams: StreamsConfigSchema,
    post: PostConfigSchema,
    cors: CorsConfigSchema,
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
  TAILCAST_STORE: 'store.type',
  TAILCAST_STORE_CAPACITY: 'store.capacity',
  TAILCAST_MONGODB_DATABASE: 'store.mongodb.database',
  TAILCAST_MONGODB_COLLECTION: 'store.mongodb.collection',
  TAILCAST_MONGODB_CAPPED_SIZE: 'store.mongodb.cappedSize',
  TAILCAST_MONGODB_CAPPED_MAX: 'store.mongodb.cappedMax',
  TAILCAST_MONGODB_MONITOR_COMMANDS: 'store.mongodb.monitorCommands',
  TAILCAST_COMPETITIONS_WINDOW_HOURS: 'streams.competitionsWindowHours',
  TAILCAST_HEARTBEAT_SECONDS: 'streams.heartbeatSeconds',
  TAILCAST_RETRY_MS: 'streams.retryMs',
  TAILCAST_MAX_BUFFERED_BYTES: 'streams.maxBufferedBytes',
  TAILCAST_MAX_CONNECTIONS_PER_ADDRESS: 'streams.maxConnectionsPerAddress',
  TAILCAST_HISTORY_MAX_BYTES: 'streams.historyMaxBytes',
  TAILCAST_HISTORY_MAX_EVENTS: 'streams.historyMaxEvents',
  TAILCAST_POST_ENABLED: 'post.enabled',
  TAILCAST_POST_TOKEN: 'post.token',
  TAILCAST_CORS_ORIGINS: 'cors.origins',
  TAILCAST_UPSTREAM: 'upstream.url',
  TAILCAST_UPSTREAM_TOKEN: 'upstream.token',
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
  return path.split('.').reduce<unknown>((v, k) => (isTree(v) ? v[k] : undefined), t)
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
    .replace(/([?&])([^=&#\s]*)=[^&#\s]*/g, (param, sep: string, name: string) => (SECRET_PARAM.test(name) ? `${sep}${name}=[redacted]` : param))
}
