import { STATUS_CODES } from 'node:http'
import t from 'tap'
import { openSse, isLive } from './helpers/clients.js'
import { freshCollection, ownFerretDb, TEST_DATABASE } from './helpers/mongo.js'
import { startServer, type TestServer } from './helpers/server.js'

/** A log destination for one test server: its JSON lines, parsed. */
function captureLog() {
  const lines: Record<string, any>[] = []
  return { lines, text: () => JSON.stringify(lines), stream: { write: (line: string) => void lines.push(JSON.parse(line)) } }
}

t.test('a 5xx tells the client a request id, not internals; the log has the details under that id; a 4xx keeps its message and logs no stack', async (t) => {
  // Its own FerretDB, stopped under the running server: the one other test files share stays up.
  const fdb = await ownFerretDb()
  const log = captureLog()
  let server: TestServer | undefined
  t.teardown(async () => {
    await server?.close()
    await fdb.destroy()
  })
  server = await startServer(
    { logLevel: 'info', store: { type: 'mongodb', mongodb: { url: fdb.url, database: TEST_DATABASE, collection: freshCollection('errors') } } },
    { logStream: log.stream },
  )
  t.equal((await server.post({ text: 'stored', room: 'r' })).status, 202)

  const big = await server.post({ text: 'x'.repeat(server.config.bodyLimit), room: 'r' })
  t.same(big.body, { statusCode: 413, error: 'Payload Too Large', message: big.body.message }, '4xx: the one error shape')
  t.match(big.body.message, /body/i, '4xx: the message is kept')
  const refused = log.lines.filter((l) => l.statusCode === 413 || l.res?.statusCode === 413)
  t.ok(refused.length > 0, '4xx: logged')
  t.notMatch(JSON.stringify(refused), /"stack"/, '4xx: no stack trace in the log')
  t.ok(refused.every((l) => l.level <= 30), '4xx: logged at info or below')

  await fdb.stop(true)
  const failed = await server.post({ text: 'not stored', room: 'r' })
  t.ok(failed.status >= 500 && failed.status <= 599, `5xx (${failed.status})`)
  t.same(Object.keys(failed.body).sort(), ['error', 'message', 'requestId', 'statusCode'], '5xx: the error shape and the request id')
  t.match(failed.body, {
    statusCode: failed.status,
    error: STATUS_CODES[failed.status],
    message: `internal error (request id ${failed.body.requestId}); see the server log`,
    requestId: /^req-/,
  })
  t.notMatch(JSON.stringify(failed.body), /\.go:|ECONN|127\.0\.0\.1:\d+|Mongo|Error:/, '5xx: no internals in the body')
  const logged = log.lines.find((l) => l.reqId === failed.body.requestId && l.level === 50)
  t.ok(logged, '5xx: logged at error level under the request id')
  t.match(logged?.err, { message: /./, stack: /./ }, '5xx: the log has the details')

  const ready = await fetch(`${server.url}/ready`)
  t.equal(ready.status, 503, '/ready: 503 while the store is down')
  const body = (await ready.json()) as { store: string }
  t.ok(typeof body.store === 'string' && body.store.length > 0 && body.store.length <= 200, `/ready: a short reason for the operator (${JSON.stringify(body.store)})`)
})

t.test('request logs hide credentials in the query string, the authorization header and cookies', async (t) => {
  const log = captureLog()
  const server = await startServer({ logLevel: 'info' }, { logStream: log.stream })
  t.teardown(() => server.close())
  const secret = { authorization: 'Bearer hunter2-header', cookie: 'session=hunter2-cookie' }
  const sse = openSse(`${server.url}/messages?room=r&access_token=hunter2-query`, secret)
  await sse.waitFor(isLive)
  sse.close()
  t.equal((await fetch(`${server.url}/nope?Token=hunter2-404&page=2`, { headers: secret })).status, 404)
  t.equal((await server.post({ text: 'x', room: 'r' }, { ...secret })).status, 202)
  const urls = log.lines.filter((l) => l.req?.url !== undefined).map((l) => l.req.url as string)
  t.ok(urls.includes('/messages?room=r&access_token=[redacted]'), 'the stream request is logged, its token hidden')
  t.ok(urls.includes('/nope?Token=[redacted]&page=2'), 'other parameters stay visible')
  t.notMatch(log.text(), /hunter2/, 'no credential in the log')
})
