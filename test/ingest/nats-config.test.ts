import t from 'tap'
import { ConfigError, loadConfig, redact } from '../../src/config.js'
import { natsConnectOptions, subjectFor } from '../../src/ingest/nats-ingest.js'

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
    replicas: 1,
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

t.test('nats.url: several servers (a cluster), their credentials taken out as options and redacted in each', async (t) => {
  const list = 'nats://u:p%40ss@10.0.0.1:4222, nats://u:p%40ss@10.0.0.2:4222,nats://10.0.0.3:4222'
  t.same(natsConnectOptions(list), { servers: ['nats://10.0.0.1:4222', 'nats://10.0.0.2:4222', 'nats://10.0.0.3:4222'], user: 'u', pass: 'p@ss' }, 'one server per entry, user and password decoded')
  t.same(natsConnectOptions('nats://s3cret@h1:4222,nats://h2:4223'), { servers: ['nats://h1:4222', 'nats://h2:4223'], token: 's3cret' }, 'user info alone is a token')
  t.same(natsConnectOptions('nats://127.0.0.1:4222'), { servers: ['nats://127.0.0.1:4222'] }, 'one server, no credentials')
  t.throws(() => natsConnectOptions('nats://a:b@h1,nats://c:d@h2'), /different credentials/, 'two sets of credentials are refused')
  t.throws(() => natsConnectOptions('nats://h1:4222,localhost:4223'), /server 2 is not a NATS URL/, 'every entry must be a NATS URL, not only the first')
  const bad = (() => {
    try {
      natsConnectOptions('nats://a:b@h1,nats://c:d@h2')
    } catch (err) {
      return (err as Error).message
    }
    return ''
  })()
  t.notMatch(bad, /a:b|c:d|\bb@|\bd@/, 'the refusal shows no credentials')

  const c = loadConfig({ env: { NATS_URL: 'nats://u:pw1@h1:4222,nats://u:pw1@h2:4222,nats://h3:4222', TAILCAST_NATS_REPLICAS: '3' } })
  t.equal(c.nats.replicas, 3, 'TAILCAST_NATS_REPLICAS sets nats.replicas')
  const shown = JSON.stringify(redact(c))
  t.notMatch(shown, /pw1/, 'no password of the list is shown')
  t.match(shown, /nats:\/\/\[redacted\]@h1:4222,nats:\/\/\[redacted\]@h2:4222,nats:\/\/h3:4222/, 'every host stays visible')
  t.throws(() => loadConfig({ env: { TAILCAST_NATS_REPLICAS: '0' } }), ConfigError, 'replicas below 1 are refused')
})
