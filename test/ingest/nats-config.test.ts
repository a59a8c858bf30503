import t from 'tap'
import { ConfigError, loadConfig, redact } from '../../src/config.js'
import { subjectFor } from '../../src/ingest/nats-ingest.js'

t.test('NATS config: defaults, env, secrets, validation, subjects POST publishes to', async (t) => {
  const d = loadConfig({ env: {} })
  t.same(d.nats, {
    url: '',
    stream: 'TAILCAST',
    subject: 'events.>',
    durable: 'tailcast-writer',
    deadLetterSubject: 'tailcast.deadletter',
    maxPayload: 65536,
    leaseSeconds: 3,
    ackWaitSeconds: 30,
    batchSize: 500,
  }, 'defaults: NATS off')

  const c = loadConfig({ env: { NATS_URL: 'nats://s3cret@127.0.0.1:4222', TAILCAST_NATS_STREAM: 'S1', TAILCAST_NATS_LEASE_SECONDS: '2' } })
  t.equal(c.nats.url, 'nats://s3cret@127.0.0.1:4222', 'NATS_URL sets nats.url')
  t.equal(c.nats.stream, 'S1')
  t.equal(c.nats.leaseSeconds, 2)
  const shown = JSON.stringify(redact(c))
  t.notMatch(shown, /s3cret/, 'the token is redacted')
  t.match(shown, /nats:\/\/\[redacted\]@127\.0\.0\.1:4222/, 'the host stays visible')

  t.throws(() => loadConfig({ env: { NATS_URL: 'http://127.0.0.1:4222' } }), ConfigError, 'a non-NATS URL is refused')
  t.throws(() => loadConfig({ env: { TAILCAST_NATS_SUBJECT: 'events.*.x' } }), ConfigError, 'a `*` wildcard is refused')
  t.throws(() => loadConfig({ env: { TAILCAST_NATS_SUBJECT: 'events.>.x' } }), ConfigError, '`>` not last is refused')
  t.throws(() => loadConfig({ env: { TAILCAST_NATS_DEAD_LETTER_SUBJECT: 'dead.>' } }), ConfigError, 'a wildcard dead-letter subject is refused')
  const bad = (() => {
    try {
      loadConfig({ env: { NATS_URL: 'http://user:pw@host' } })
    } catch (err) {
      return (err as Error).message
    }
    return ''
  })()
  t.notMatch(bad, /pw/, 'the error message does not show the secret')

  const time = '2026-11-22T18:00:00.000Z'
  t.equal(subjectFor(d.nats, { type: 'X', competitionId: 'c1', time, data: {} }), 'events.competition.c1')
  t.equal(subjectFor(d.nats, { type: 'message', room: 'dev', time, data: {} }), 'events.room.dev')
  t.equal(subjectFor(d.nats, { type: 'Other', time, data: {} }), 'events.Other')
  t.equal(subjectFor({ ...d.nats, subject: 'in.one' }, { type: 'Other', time, data: {} }), 'in.one', 'a subject without wildcard is used as is')
})
