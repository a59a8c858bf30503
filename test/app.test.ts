import t from 'tap'
import { openSse, isLive } from './helpers/clients.js'
import { startServer } from './helpers/server.js'

/** A log destination for one test server: its JSON lines, parsed. */
function captureLog() {
  const lines: Record<string, any>[] = []
  return { lines, text: () => JSON.stringify(lines), stream: { write: (line: string) => void lines.push(JSON.parse(line)) } }
}

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
