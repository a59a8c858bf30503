import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from 'typebox'
import { createLocalJWKSet, errors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey, type JWTVerifyOptions, type JWTVerifyResult } from 'jose'
import { algorithmOf, ClaimError, grantOf, mayFollow, type Grant } from '../claims.js'
import { ConfigError, type Config } from '../config.js'
import { refuse } from '../errors.js'
import type { Transport } from '../hub/transport.js'

/** A verified token: what it allows, and when it expires (ms since the epoch; null: never). */
export interface Authorization {
  grant: Grant
  expiresAt: number | null
  /** The token's `sub`, when it has one: the publisher's identity for idempotency keys. */
  subject: string | null
}

/** The `access_token` query parameter (EventSource cannot set headers), for the routes' query schemas. */
export const ACCESS_TOKEN_PARAM = Type.Optional(Type.String({ minLength: 1, description: 'access_token must be a JWT' }))

export class TokenError extends Error {
  override name = 'TokenError'
}

export interface Auth {
  /** A key is configured: stream requests need a token. */
  readonly enabled: boolean
  /** The token of the `Authorization: Bearer` header (the only place a POST may carry one). */
  bearerOf(req: FastifyRequest): string | undefined
  /** The request's token: `Authorization: Bearer`, else `?access_token=`, else the cookie. */
  tokenOf(req: FastifyRequest): string | undefined
  /** Verify a token (signature, algorithm, exp, nbf, iss, aud, claim shape); throws TokenError. */
  verify(token: string): Promise<Authorization>
  /** Verify `token` into `req.authorization`, or answer 401 saying why; false when refused. */
  accept(req: FastifyRequest, reply: FastifyReply, token: string): Promise<boolean>
  /** onRequest hook of the stream routes: 401 unless a valid token came; sets `req.authorization`. */
  authenticate(req: FastifyRequest, reply: FastifyReply): Promise<void>
  /** 403 unless the request's token allows the stream at `path`; call before the stream starts. */
  authorize(req: FastifyRequest, reply: FastifyReply, path: string): FastifyReply | undefined
  /** End the stream when the request's token expires (WS 4401, SSE end): one timer per client. */
  endAtExpiry(req: FastifyRequest, transport: Transport): void
}

declare module 'fastify' {
  interface FastifyInstance {
    auth: Auth
  }
  interface FastifyRequest {
    /** The verified token of a request, once `authenticate` has run with auth on. */
    authorization: Authorization | null
  }
}

/** jwtVerify bound to the key (a key and a JWKS resolver are different overloads of it). */
type Key = { algorithms: string[]; verify(token: string, options: JWTVerifyOptions): Promise<JWTVerifyResult> }

/**
 * The key tokens are checked with and the only algorithms accepted with it, so that `none` and
 * HS/RS confusion (an RSA public key used as an HMAC secret) are refused. Null: auth is off.
 */
function keyOf(jwt: Config['auth']['jwt']): Key | null {
  const bound = (key: Uint8Array | KeyObject, algorithms: string[]): Key => ({ algorithms, verify: (token, options) => jwtVerify(token, key, options) })
  if (jwt.secret !== '') return bound(new TextEncoder().encode(jwt.secret), ['HS256'])
  if (jwt.publicKeyFile !== '') {
    let key: KeyObject
    try {
      key = createPublicKey(readFileSync(jwt.publicKeyFile, 'utf8'))
    } catch (err) {
      throw new ConfigError(`auth.jwt.publicKeyFile ${jwt.publicKeyFile}: not a readable PEM public key (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`)
    }
    const alg = algorithmOf(key)
    if (alg !== undefined) return bound(key, [alg])
    throw new ConfigError(`auth.jwt.publicKeyFile ${jwt.publicKeyFile}: an RSA (RS256) or EC P-256 (ES256) public key is needed, got ${key.asymmetricKeyType ?? 'another kind'}`)
  }
  if (jwt.jwksFile !== '') {
    let jwks: JSONWebKeySet
    try {
      jwks = JSON.parse(readFileSync(jwt.jwksFile, 'utf8')) as JSONWebKeySet
      if (!Array.isArray(jwks.keys)) throw new Error('no "keys" list')
      const keys: JWTVerifyGetKey = createLocalJWKSet(jwks)
      return { algorithms: ['RS256', 'ES256'], verify: (token, options) => jwtVerify(token, keys, options) }
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err instanceof SyntaxError ? 'not JSON' : (err as Error).message)
      throw new ConfigError(`auth.jwt.jwksFile ${jwt.jwksFile}: not a readable JWKS ({"keys": [...]}): ${reason}`)
    }
  }
  return null
}

/** Why a token was refused, in words for the client; jose's messages never quote the token. */
function tokenProblem(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'the token has expired: get a fresh one'
  if (err instanceof errors.JWTClaimValidationFailed) return err.claim === 'nbf' ? 'the token is not valid yet (nbf)' : `the token's "${err.claim}" claim is not accepted`
  if (err instanceof errors.JOSEAlgNotAllowed) return 'the token is signed with an algorithm this server does not accept'
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JWKSNoMatchingKey) return 'the token is not signed with a key this server trusts'
  if (err instanceof ClaimError) return `the token's claim is malformed: ${err.message}`
  if (err instanceof errors.JOSEError) return 'the token is not a valid JWT'
  throw err
}

/** setTimeout takes at most 2^31-1 ms (24.8 days): a later expiry is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1

function atTime(when: number, run: () => void): () => void {
  let timer: NodeJS.Timeout
  const arm = (): void => {
    const wait = when - Date.now()
    if (wait <= 0) return run()
    timer = setTimeout(wait > MAX_TIMER_MS ? arm : run, Math.min(wait, MAX_TIMER_MS))
    timer.unref()
  }
  arm()
  return () => clearTimeout(timer)
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1')
      return value === '' ? undefined : value
    }
  }
  return undefined
}

/** Subscriber and publisher authorization with JWTs (`app.auth`); see claims.ts for the claim. */
export default fp(
  async (app) => {
    const { jwt, cookie } = app.config.auth
    const key = keyOf(jwt)
    const options: JWTVerifyOptions = {
      algorithms: key?.algorithms ?? [],
      ...(jwt.issuer === '' ? {} : { issuer: jwt.issuer }),
      ...(jwt.audience === '' ? {} : { audience: jwt.audience }),
    }
    app.decorateRequest('authorization', null)
    const cookieOrigins = new Set([...app.config.auth.cookieOrigins, ...app.config.cors.origins].filter((o) => o !== '*'))

    /** The request's token and where it came from: `Authorization: Bearer`, else `?access_token=`, else the cookie. */
    function found(req: FastifyRequest): { token: string; via: 'header' | 'query' | 'cookie' } | undefined {
      const bearer = auth.bearerOf(req)
      if (bearer !== undefined) return { token: bearer, via: 'header' }
      const q = (req.query as { access_token?: unknown } | undefined)?.access_token
      if (typeof q === 'string' && q !== '') return { token: q, via: 'query' }
      const c = cookieValue(req.headers.cookie, cookie)
      return c === undefined ? undefined : { token: c, via: 'cookie' }
    }

    /**
     * No Origin: not a page (a browser sends none on a same-origin EventSource). Else the page's
     * origin is listed, or it is this server's own (its host is the Host the request came to).
     */
    function cookieOriginAllowed(req: FastifyRequest): boolean {
      const origin = req.headers.origin
      if (origin === undefined) return true
      if (cookieOrigins.has(origin)) return true
      const host = req.headers.host
      if (host === undefined) return false
      try {
        const page = new URL(origin)
        // A proxy that forwards `Host $host` drops the port: then the host name alone is compared.
        return page.host === host || (!host.includes(':') && page.hostname === host)
      } catch {
        return false
      }
    }

    const auth: Auth = {
      enabled: key !== null,

      bearerOf(req) {
        return /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')?.[1]
      },

      tokenOf(req) {
        return found(req)?.token
      },

      async verify(token) {
        if (key === null) throw new TokenError('authorization is not configured')
        try {
          const { payload } = await key.verify(token, options)
          return { grant: grantOf(payload), expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : null, subject: typeof payload.sub === 'string' && payload.sub !== '' ? payload.sub : null }
        } catch (err) {
          throw new TokenError(tokenProblem(err))
        }
      },

      async authenticate(req, reply) {
        if (key === null) return
        const { token, via } = found(req) ?? {}
        // A browser sends the cookie with a request any page makes (a WebSocket, an EventSource with
        // credentials): only pages of an allowed origin may use it, whatever CORS allows for tokens.
        if (via === 'cookie' && !cookieOriginAllowed(req)) {
          const origin = JSON.stringify(req.headers.origin).slice(0, 200)
          return void refuse(reply, 403, `the ${cookie} cookie is not accepted from a page of origin ${origin}: allowed are this server's own pages and auth.cookieOrigins (or cors.origins entries other than *); send the token in "Authorization: Bearer" or ?access_token= instead`)
        }
        if (token === undefined) {
          return void refuse(
            reply.header('www-authenticate', 'Bearer'),
            401,
            `this stream needs a token: "Authorization: Bearer <token>", ?access_token=<token> or the ${cookie} cookie`,
          )
        }
        await auth.accept(req, reply, token)
      },

      async accept(req, reply, token) {
        try {
          req.authorization = await auth.verify(token)
          return true
        } catch (err) {
          if (!(err instanceof TokenError)) throw err
          refuse(reply.header('www-authenticate', 'Bearer error="invalid_token"'), 401, err.message)
          return false
        }
      },

      authorize(req, reply, path) {
        if (key === null) return undefined
        if (req.authorization === null) return refuse(reply, 401, 'this stream needs a token')
        if (mayFollow(req.authorization.grant, path)) return undefined
        return refuse(reply, 403, `the token does not allow the stream ${path} (its "tailcast.subscribe" claim)`)
      },

      endAtExpiry(req, transport) {
        const at = req.authorization?.expiresAt
        if (at === null || at === undefined) return
        const cancel = atTime(at, () => transport.close('expired'))
        transport.onClose(cancel)
      },
    }
    app.decorate('auth', auth)
  },
  { name: 'auth', dependencies: ['config'] },
)
