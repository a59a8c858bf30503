import { readFileSync } from 'node:fs'
import type { SecureServerOptions } from 'node:http2'
import { ConfigError, type Config } from './config.js'

/**
 * The HTTPS listener's options when `tls.cert` and `tls.key` are set, else null (plain HTTP/1.1).
 * One port speaks both protocols, chosen by ALPN: `h2` for browsers (every EventSource of every tab
 * on one connection, so the six-connections-per-origin cap of HTTP/1.1 is gone) and `http/1.1` for
 * the rest, WebSocket upgrades (`wss://`) included.
 */
export function tlsOptions(config: Config): SecureServerOptions | null {
  const { cert, key } = config.tls
  if (cert === '' && key === '') return null
  return {
    cert: readPem('tls.cert', cert),
    key: readPem('tls.key', key),
    allowHTTP1: true,
    ALPNProtocols: ['h2', 'http/1.1'],
  }
}

function readPem(setting: string, path: string): Buffer {
  let pem: Buffer
  try {
    pem = readFileSync(path)
  } catch (err) {
    throw new ConfigError(`${setting} = ${JSON.stringify(path)}: cannot read the file: ${(err as Error).message}`)
  }
  if (!pem.includes('-----BEGIN ')) throw new ConfigError(`${setting} = ${JSON.stringify(path)}: not a PEM file (no "-----BEGIN" line)`)
  return pem
}
