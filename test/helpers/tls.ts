import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2'
import https from 'node:https'
import { join } from 'node:path'
import { deferred, sseParser, waiter, type Received, type StreamClient } from './clients.js'

export interface TestCert {
  /** PEM files, for tls.cert / tls.key and nginx. */
  certFile: string
  keyFile: string
  /** The certificate itself, for a client's `ca`. */
  cert: Buffer
  /** SHA-256 fingerprint of the public key, base64 (Chromium's --ignore-certificate-errors-spki-list). */
  spki: string
  remove(): void
}

/** A fresh self-signed certificate for localhost and 127.0.0.1 (EC P-256, one day), made with openssl; never committed. */
export function selfSignedCert(): TestCert {
  const dir = mkdtempSync(join(tmpdir(), 'tailcast-tls-'))
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    { stdio: 'pipe' },
  )
  const pub = execFileSync('openssl', ['x509', '-in', certFile, '-pubkey', '-noout'])
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub })
  const spki = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der }).toString('base64')
  return { certFile, keyFile, cert: readFileSync(certFile), spki, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * An SSE stream over HTTP/2 on `session` (node:http2 as a browser uses it: many streams, one
 * connection); parsed like openSse. `pause()` stops reading this stream only, so HTTP/2 flow
 * control holds the server's writes to it while the connection's other streams go on.
 */
export function openSseH2(session: ClientHttp2Session, path: string, headers: Record<string, string> = {}): StreamClient & { headers: Promise<IncomingHttpHeaders> } {
  const events: Received[] = []
  const [status, resolveStatus] = deferred<number>()
  const [errorBody, resolveBody] = deferred<unknown>()
  const [ended, resolveEnded] = deferred<number | null>()
  const [head, resolveHead] = deferred<IncomingHttpHeaders>()
  const w = waiter(events, ended)
  const req = session.request({ ':path': path, accept: 'text/event-stream', ...headers })
  req.setEncoding('utf8')
  req.on('response', (h) => {
    resolveHead(h)
    const code = Number(h[':status'])
    resolveStatus(code)
    if (code !== 200) {
      let body = ''
      req.on('data', (d: string) => (body += d))
      req.on('end', () => {
        try {
          resolveBody(JSON.parse(body))
        } catch {
          resolveBody(body)
        }
      })
      return
    }
    resolveBody(undefined)
    const parse = sseParser(events)
    req.on('data', (chunk: string) => {
      parse(chunk)
      w.notify()
    })
  })
  req.on('close', () => resolveEnded(null))
  req.on('error', () => {
    resolveStatus(0)
    resolveEnded(null)
  })
  return { events, status, errorBody, ended, headers: head, waitFor: w.waitFor, pause: () => req.pause(), resume: () => req.resume(), close: () => req.close() }
}

/** POST /messages over HTTPS (HTTP/1.1) to a server whose certificate is `ca`. */
export function postHttps(base: string, body: unknown, ca: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${base}/messages`, { method: 'POST', ca, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (text += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}
