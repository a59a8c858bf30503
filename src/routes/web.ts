import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'

/** `public/` sits two levels above this file both as source (src/routes) and as build (dist/routes). */
export const PUBLIC_DIR = fileURLToPath(new URL('../../public/', import.meta.url))

/**
 * The page only ever talks to the server that served it: no CDN, no external fonts or scripts,
 * and this policy makes the browser refuse anything else.
 */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ')

/** The web page at `/`: static files from `public/` (index.html, app.js, style.css). */
export default async function web(app: FastifyInstance): Promise<void> {
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    prefix: '/',
    // One route per file found at startup instead of a catch-all `/*`, so unknown paths keep the
    // JSON 404 of the API and no stream path can ever be shadowed by a file.
    wildcard: false,
    index: ['index.html'],
    serveDotFiles: false,
    // Revalidate on every load (ETag / Last-Modified): a deploy is seen at once, a reload is a 304.
    cacheControl: true,
    maxAge: 0,
    setHeaders(res) {
      res.setHeader('content-security-policy', CSP)
      res.setHeader('x-content-type-options', 'nosniff')
      res.setHeader('referrer-policy', 'no-referrer')
    },
  })
}
