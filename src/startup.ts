import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { ConfigError, defaultConfig, ENV_KEYS, redactUrl, type Config } from './config.js'

/*
 * What an operator is told and checked at start: the banner (one block: what runs, where, on what,
 * who may post) and the checks a configuration passes before `serve` listens.
 */

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string; optionalDependencies?: { node?: string } }
export const VERSION = pkg.version
/** The Node the project pins (package.json optionalDependencies.node; README "Runtime"). */
export const PINNED_NODE = pkg.optionalDependencies?.node ?? ''

/** The environment variable that sets a config key, for messages that name both. */
export function envOf(key: string): string | undefined {
  return Object.entries(ENV_KEYS).find(([, k]) => k === key)?.[0]
}

/** `store.mongodb.url (env MONGODB_URL)`: how a message names a setting. */
export function settingName(key: string): string {
  const env = envOf(key)
  return env === undefined ? key : `${key} (env ${env})`
}

/** Only this machine can reach a listener on this address. A host name other than localhost is not assumed to be one. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  if (h === 'localhost' || h === '::1') return true
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h
  return isIP(v4) === 4 && v4.startsWith('127.')
}

/** The key source JWTs are checked with, or 'off'. */
export function authMode(config: Config): string {
  const jwt = config.auth.jwt
  if (jwt.secret !== '') return 'JWT (HS256 secret, auth.jwt.secret)'
  if (jwt.publicKeyFile !== '') return `JWT (public key ${jwt.publicKeyFile})`
  if (jwt.jwksFile !== '') return `JWT (JWKS ${jwt.jwksFile})`
  return 'off: every stream is public'
}

export type Posting = 'relay' | 'disabled' | 'token' | 'JWT' | 'token or JWT' | 'open'

/** Who may POST /messages. */
export function posting(config: Config): Posting {
  if (config.upstream.url !== '') return 'relay'
  if (!config.post.enabled) return 'disabled'
  const token = config.post.token !== ''
  const jwt = authMode(config).startsWith('JWT')
  if (token && jwt) return 'token or JWT'
  if (token) return 'token'
  if (jwt) return 'JWT'
  return 'open'
}

const POSTING_TEXT: Record<Posting, string> = {
  relay: 'none: a read-only relay (events come from the upstream)',
  disabled: 'disabled (post.enabled = false)',
  token: 'with the post token (Authorization: Bearer, post.token)',
  JWT: 'with a JWT whose "tailcast.publish" claim allows the target',
  'token or JWT': 'with the post token or a JWT whose "tailcast.publish" claim allows the target',
  open: 'open: anyone who reaches the port may post',
}

/**
 * The checks `serve` makes before it listens; a ConfigError (exit 2) names the way out.
 * Posting without any credential is open only on a loopback listener, unless post.open says it is wanted.
 */
export function checkServe(config: Config): void {
  if (posting(config) === 'open' && !isLoopback(config.host) && !config.post.open) {
    throw new ConfigError(
      `refusing to start: POST /messages would be open to anyone who reaches ${config.host}:${config.port} (no post.token, no JWT key).\n` +
        `  Either set a token: TAILCAST_POST_TOKEN=$(openssl rand -base64 32) (post.token), or TAILCAST_JWT_SECRET for JWTs with a "tailcast.publish" claim;\n` +
        `  or say that open posting is wanted: TAILCAST_POST_OPEN=true (post.open);\n` +
        `  or listen on a loopback address: HOST=127.0.0.1. (TAILCAST_POST_ENABLED=false turns posting off.)`,
    )
  }
  if (config.workers > 1 && config.store.type === 'memory') {
    throw new ConfigError('invalid configuration:\n  workers > 1 needs a shared store: set store.type to "mongodb" (env TAILCAST_STORE; the embedded store lives inside one process)')
  }
}

/** Settings given (not their defaults) that the rest of the configuration leaves unused: each a warning. */
export function unusedSettings(config: Config): string[] {
  const defaults = defaultConfig()
  const out: string[] = []
  if (config.store.type === 'memory') {
    const given = (Object.keys(config.store.mongodb) as (keyof Config['store']['mongodb'])[]).filter((k) => config.store.mongodb[k] !== defaults.store.mongodb[k])
    if (given.length > 0) {
      out.push(`${given.map((k) => settingName(`store.mongodb.${k}`)).join(', ')} ${given.length > 1 ? 'are' : 'is'} set but store.type is "memory": not used; set TAILCAST_STORE=mongodb to use MongoDB`)
    }
  }
  if (config.upstream.url !== '') {
    if (config.post.token !== '') out.push('post.token (env TAILCAST_POST_TOKEN) is set but this is a relay (upstream.url): it takes no posts')
  } else if (config.upstream.token !== '') {
    out.push('upstream.token (env TAILCAST_UPSTREAM_TOKEN) is set but upstream.url is not: not used')
  }
  if (!config.post.enabled && config.post.token !== '') out.push('post.token (env TAILCAST_POST_TOKEN) is set but post.enabled is false: not used')
  const jwt = config.auth.jwt
  if (authMode(config).startsWith('off') && (jwt.issuer !== '' || jwt.audience !== '')) {
    out.push('auth.jwt.issuer/audience are set but no key is (auth.jwt.secret, publicKeyFile or jwksFile): tokens are not checked at all')
  }
  if (config.nats.url === '' && config.nats.replicas !== defaults.nats.replicas) out.push(`${settingName('nats.replicas')} is set but nats.url is not: not used`)
  return out
}

/** A listener's address as a URL host: IPv6 in brackets. */
function urlHost(address: string): string {
  return address.includes(':') ? `[${address}]` : address
}

export interface Banner {
  /** Label and value, in the order shown. */
  lines: [string, string][]
  warnings: string[]
}

/**
 * The startup banner. `listening`: the addresses bound (after listen); without them (--print-config)
 * the configured host and port are shown.
 */
export function banner(config: Config, listening?: { address: string; port: number }[]): Banner {
  const lines: [string, string][] = []
  lines.push(['version', `tailcast ${VERSION}`])
  const pinned = process.versions.node === PINNED_NODE
  lines.push(['runtime', `Node ${process.version}${pinned ? ' (the pinned runtime)' : PINNED_NODE === '' ? '' : ` (not the pinned ${PINNED_NODE})`}`])
  const where = listening ?? [{ address: config.host, port: config.port }]
  lines.push(['listening', where.map((l) => `http://${urlHost(l.address)}:${l.port}`).join(', ')])
  const first = where[0]
  const pageHost = first === undefined || first.address === '0.0.0.0' || first.address === '::' ? 'localhost' : urlHost(first.address)
  lines.push(['page', `http://${pageHost}:${first?.port ?? config.port}/`])
  if (config.workers > 1) lines.push(['workers', `${config.workers} processes sharing the port`])
  lines.push([
    'store',
    config.store.type === 'memory'
      ? `embedded: not persistent, ${config.store.capacity} events (store.capacity); everything is lost on restart`
      : `MongoDB ${redactUrl(config.store.mongodb.url)}, ${config.store.mongodb.database}.${config.store.mongodb.collection}`,
  ])
  lines.push(['nats', config.nats.url === '' ? 'off: POST /messages writes to the store' : `${redactUrl(config.nats.url)}, stream ${config.nats.stream}`])
  lines.push(['upstream', config.upstream.url === '' ? 'off' : `relaying ${redactUrl(config.upstream.url)}`])
  lines.push(['auth', authMode(config)])
  const mode = posting(config)
  const exposed = mode === 'open' && !isLoopback(config.host)
  lines.push(['posting', exposed ? `${POSTING_TEXT.open} ${config.post.open ? '(post.open = true)' : '(not loopback, post.open = false: serve refuses to start)'}` : POSTING_TEXT[mode]])
  const warnings = unusedSettings(config)
  if (!pinned && PINNED_NODE !== '') warnings.push(`running on Node ${process.version}, not the pinned ${PINNED_NODE}: start with \`npm start\` or \`npx -y -p node@${PINNED_NODE} -- node dist/cli.js\` (README "Runtime")`)
  return { lines, warnings }
}

/** The banner as text, one `label: value` line each, for --print-config. */
export function bannerText(b: Banner): string {
  const width = Math.max(...b.lines.map(([label]) => label.length))
  return [...b.lines.map(([label, value]) => `${(label + ':').padEnd(width + 1)} ${value}`), ...b.warnings.map((w) => `warning: ${w}`)].join('\n') + '\n'
}

/** The banner as one `info` line (fields for machines, the block as its message), then a `warn` line per warning. */
export function logBanner(app: FastifyInstance, config: Config): void {
  const listening = app.addresses().flatMap((a) => (typeof a === 'string' ? [] : [{ address: a.address, port: a.port }]))
  const b = banner(config, listening)
  app.log.info({ startup: Object.fromEntries(b.lines) }, `tailcast started\n${bannerText({ lines: b.lines, warnings: [] }).trimEnd()}`)
  for (const w of b.warnings) app.log.warn(w)
}

/**
 * A backing service that cannot be used at start, named with its redacted URL and the setting
 * that points at it: `MongoDB at mongodb://db:27017 cannot be used: … (the address is store.mongodb.url, env MONGODB_URL)`.
 */
export function serviceError(component: string, url: string, key: string, err: unknown): Error {
  const reason = redactUrl(err instanceof Error ? err.message : String(err))
  const env = envOf(key)
  return new Error(`${component} at ${redactUrl(url)} cannot be used: ${reason} (the address is ${key}${env === undefined ? '' : `, env ${env}`})`, { cause: err })
}
