/**
 * A WebSocket client's view of the server's frames (never masked), walked header by header.
 * Returns how many bytes it consumed: a frame not yet complete waits for the next chunk.
 */
export function walkFrames(buf: Buffer, onFrame: (opcode: number, payload: Buffer) => void): number {
  let pos = 0
  while (buf.length - pos >= 2) {
    const opcode = buf[pos] & 0x0f
    let len = buf[pos + 1] & 0x7f
    let header = 2
    if (len === 126) {
      if (buf.length - pos < 4) break
      len = buf.readUInt16BE(pos + 2)
      header = 4
    } else if (len === 127) {
      if (buf.length - pos < 10) break
      len = Number(buf.readBigUInt64BE(pos + 2))
      header = 10
    }
    if (buf.length - pos < header + len) break
    onFrame(opcode, buf.subarray(pos + header, pos + header + len))
    pos += header + len
  }
  return pos
}

/** A client's pong: masked, as every client frame must be (a zero mask leaves the payload as is). */
export function pong(payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length, 0, 0, 0, 0]), payload])
}
