import net from 'node:net'
import { randomBytes } from 'node:crypto'

/** What `curl -N` or `wscat` would see, taken off a plain TCP socket: the status, the headers, the bytes. */
export interface RawStream {
  status(): number
  /** Response headers, names lower-cased (a repeated header keeps its last value). */
  headers(): Record<string, string>
  /** SSE: the body as curl -N prints it (de-chunked). WebSocket: every frame's bytes as they came. */
  body(): Buffer
  /** WebSocket frames so far (opcode, payload, and the frame's bytes). */
  frames(): { opcode: number; payload: Buffer; bytes: Buffer }[]
  waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void>
  close(): void
}

function parseHead(head: string): { status: number; headers: Record<string, string> } {
  const [statusLine, ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const l of lines) {
    const c = l.indexOf(':')
    if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim()
  }
  return { status: Number(statusLine.split(' ')[1]), headers }
}

function open(base: string, request: (host: string) => string, onBody: (chunk: Buffer, socket: net.Socket) => void): RawStream & { bodyBuf: { b: Buffer } } {
  const u = new URL(base)
  const socket = net.connect(Number(u.port), u.hostname)
  let raw = Buffer.alloc(0)
  let head: { status: number; headers: Record<string, string> } | undefined
  const listeners = new Set<() => void>()
  const bodyBuf = { b: Buffer.alloc(0) }
  let ended = false
  socket.on('connect', () => socket.write(request(u.host)))
  socket.on('data', (d: Buffer) => {
    if (head === undefined) {
      raw = Buffer.concat([raw, d])
      const end = raw.indexOf('\r\n\r\n')
      if (end < 0) return
      head = parseHead(raw.subarray(0, end).toString('latin1'))
      d = raw.subarray(end + 4)
    }
    if (d.length > 0) onBody(d, socket)
    for (const l of listeners) l()
  })
  socket.on('close', () => {
    ended = true
    for (const l of listeners) l()
  })
  socket.on('error', () => {})
  return {
    bodyBuf,
    status: () => head?.status ?? 0,
    headers: () => head?.headers ?? {},
    body: () => bodyBuf.b,
    frames: () => [],
    waitFor(pred, timeoutMs, what) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (pred()) done(resolve)
          else if (ended) done(() => reject(new Error(`the connection closed before ${what}`)))
        }
        const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))), timeoutMs)
        const done = (then: () => void): void => {
          clearTimeout(timer)
          listeners.delete(check)
          then()
        }
        listeners.add(check)
        check()
      })
    },
    close: () => socket.destroy(),
  }
}

/** A GET that asks for SSE, read as `curl -N` does: the body de-chunked, byte for byte. */
export function rawSse(base: string, path: string, headers: Record<string, string> = {}): RawStream {
  let pending = Buffer.alloc(0)
  let chunked: boolean | undefined
  const s = open(
    base,
    (host) => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAccept: text/event-stream\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`,
    (d) => {
      chunked ??= /chunked/i.test(s.headers()['transfer-encoding'] ?? '')
      if (!chunked) {
        s.bodyBuf.b = Buffer.concat([s.bodyBuf.b, d])
        return
      }
      pending = Buffer.concat([pending, d])
      for (;;) {
        const nl = pending.indexOf('\r\n')
        if (nl < 0) return
        const size = parseInt(pending.subarray(0, nl).toString('latin1'), 16)
        if (pending.length < nl + 2 + size + 2) return
        s.bodyBuf.b = Buffer.concat([s.bodyBuf.b, pending.subarray(nl + 2, nl + 2 + size)])
        pending = pending.subarray(nl + 2 + size + 2)
      }
    },
  )
  return s
}

/**
 * A WebSocket opened by hand (fixed key, no extensions), reading the server's frames as they come
 * and answering each ping with a pong, as wscat does.
 */
export function rawWs(base: string, path: string): RawStream {
  const frames: { opcode: number; payload: Buffer; bytes: Buffer }[] = []
  let pending = Buffer.alloc(0)
  const s = open(
    base,
    (host) =>
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    (d, socket) => {
      s.bodyBuf.b = Buffer.concat([s.bodyBuf.b, d])
      pending = Buffer.concat([pending, d])
      for (;;) {
        if (pending.length < 2) return
        let len = pending[1] & 0x7f
        let at = 2
        if (len === 126) {
          if (pending.length < 4) return
          len = pending.readUInt16BE(2)
          at = 4
        } else if (len === 127) {
          if (pending.length < 10) return
          len = Number(pending.readBigUInt64BE(2))
          at = 10
        }
        if (pending.length < at + len) return
        const frame = { opcode: pending[0] & 0x0f, payload: pending.subarray(at, at + len), bytes: pending.subarray(0, at + len) }
        frames.push(frame)
        pending = pending.subarray(at + len)
        if (frame.opcode === 0x9) {
          // A client's frames are masked.
          const mask = randomBytes(4)
          const masked = Buffer.from(frame.payload.map((b, i) => b ^ mask[i % 4]))
          socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | frame.payload.length]), mask, masked]))
        }
      }
    },
  )
  return { ...s, frames: () => frames }
}
