import { endFrame, type Frame } from '../event.js'
import type { CloseReason } from './transport.js'

/**
 * Why the server ends a stream, one text per reason for both wire protocols: a WebSocket gets it as
 * its close code and reason, an SSE stream as the `end` control event just before the response ends
 * (SSE has no close code, and an ended response looks like a network drop). After every one of them
 * the client reconnects and resumes from the last event it received; after `expired` only with a
 * fresh token (the same one is refused with 401).
 */
export const END_REASONS = {
  shutdown: { code: 1012, reason: 'server restarting: reconnect with lastEventId', freshToken: false },
  slow: { code: 1013, reason: 'client too slow: reconnect with lastEventId', freshToken: false },
  error: { code: 1011, reason: 'server error: reconnect with lastEventId', freshToken: false },
  // 4000-4999: the application's own; 4401 echoes HTTP's 401.
  expired: { code: 4401, reason: 'token expired: reconnect with a fresh token and lastEventId', freshToken: true },
} as const satisfies Record<CloseReason, { code: number; reason: string; freshToken: boolean }>

/**
 * The `end` event for `reason`: `reconnect` (always true: every reason is one to come back after),
 * `retryMs` (when: the stream's `retry:`, which EventSource waits anyway), `freshToken` (only with a
 * new token) and `message`, the WebSocket close reason's text.
 */
export function endEvent(reason: CloseReason, position: number, retryMs: number): Frame {
  const { reason: message, freshToken } = END_REASONS[reason]
  return endFrame(position, { reason, message, reconnect: true, retryMs, freshToken })
}
