import t from 'tap'
import { dataEvents, isLive, openStream, postTo } from './helpers/clients.js'
import { freshCollection, mongoUrl, TEST_DATABASE } from './helpers/mongo.js'
import { spawnServer } from './helpers/process.js'

t.test('several worker processes on one port share the store; a client resumes on any of them', async (t) => {
  const server = await spawnServer({
    TAILCAST_WORKERS: '2',
    TAILCAST_STORE: 'mongodb',
    MONGODB_URL: mongoUrl(),
    TAILCAST_MONGODB_DATABASE: TEST_DATABASE,
    TAILCAST_MONGODB_COLLECTION: freshCollection('cluster'),
  })
  t.teardown(() => server.kill('SIGKILL'))

  // Fresh connections are spread over the workers.
  const pids = new Set<number>()
  // The second worker may still be starting when the first answers: ask for up to 15 s.
  for (let i = 0; i < 150 && pids.size < 2; i++) {
    const r = await fetch(`${server.url}/health`, { headers: { connection: 'close' } })
    pids.add(((await r.json()) as { pid: number }).pid)
    if (pids.size < 2) await new Promise((r) => setTimeout(r, 100))
  }
  t.equal(pids.size, 2, 'two worker processes answer on the one port')

  // Each worker accepts its own connections (SO_REUSEPORT): with the primary stopped, new
  // connections are still accepted and answered by both workers.
  process.kill(server.child.pid!, 'SIGSTOP')
  try {
    const answered = new Set<number>()
    for (let i = 0; i < 150 && answered.size < 2; i++) {
      const r = await fetch(`${server.url}/health`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(10_000) }).catch((err: Error) => err)
      if (r instanceof Error) {
        t.fail(`a new connection got no answer with the primary stopped: ${r.message}`)
        break
      }
      answered.add(((await r.json()) as { pid: number }).pid)
    }
    t.same([...answered].sort(), [...pids].sort(), 'both workers take new connections while the primary is stopped')
  } finally {
    process.kill(server.child.pid!, 'SIGCONT')
  }

  const path = '/messages?room=workers'
  const clients = Array.from({ length: 10 }, (_, i) => openStream(i % 2 === 0 ? 'sse' : 'ws', server, path))
  await Promise.all(clients.map((c) => c.waitFor(isLive, 20_000, 'live')))
  const ids: string[] = []
  for (let i = 0; i < 40; i++) {
    const r = await postTo(server.url, { text: `w${i}`, room: 'workers' }, { connection: 'close' })
    t.equal(r.status, 202) || t.bailout('post failed')
    ids.push(r.body.id)
    if (i === 19) {
      // Half-way, every client drops and resumes on whichever worker takes the new connection.
      for (const [k, c] of clients.entries()) {
        await c.waitFor((es) => es.some((e) => e.id === ids[19]), 20_000, 'event 20')
        c.close()
        const got = dataEvents(c.events)
        clients[k] = Object.assign(openStream(k % 2 === 0 ? 'sse' : 'ws', server, path, got[got.length - 1].id), { before: got })
      }
    }
  }
  for (const c of clients) {
    await c.waitFor((es) => es.some((e) => e.id === ids[ids.length - 1]), 20_000, 'the last event')
    const all = [...((c as unknown as { before: { id: string }[] }).before ?? []), ...dataEvents(c.events)].map((e) => e.id)
    t.same(all, ids, 'every event once, in order, across the resume')
    c.close()
  }
  t.same(await server.kill('SIGTERM'), { code: 0, signal: null }, 'SIGTERM stops the workers and the primary exits 0')
})
