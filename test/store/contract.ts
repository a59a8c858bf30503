import type { Test } from 'tap'
import { frameOf, type NewEvent, type StoredEvent } from '../../src/event.js'
import type { EventStore } from '../../src/store/event-store.js'

/**
 * The EventStore contract. Every implementation runs this suite unchanged.
 * `make` returns a fresh, empty, opened store whose capacity is at least 100 events.
 */
export function storeContract(t: Test, make: () => Promise<EventStore>): void {
  const ev = (i: number, extra: Partial<NewEvent> = {}): NewEvent => ({
    type: 'Tick',
    time: new Date(Date.now() - 1000 + i).toISOString(),
    data: { i },
    ...extra,
  })

  t.test('an empty store has no bounds and reads nothing', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    t.same(await store.bounds(), { oldest: null, newest: null })
    t.same(await store.read({ kind: 'room', room: null }, 0, 10), [])
    await store.ping()
  })

  t.test('append assigns positive, strictly increasing ids and keeps the fields', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    const a = await store.append([ev(1, { room: 'r' }), ev(2, { competitionId: 'c' })])
    const b = await store.append([ev(3)])
    const all = [...a, ...b]
    t.equal(all.length, 3)
    for (const e of all) t.ok(Number.isSafeInteger(e.id) && e.id > 0, 'positive integer id')
    t.ok(all[0].id < all[1].id && all[1].id < all[2].id, 'strictly increasing')
    t.same(await store.bounds(), { oldest: all[0].id, newest: all[2].id })
    const [first] = await store.read({ kind: 'room', room: 'r' }, 0, 10)
    t.same(first, { id: a[0].id, ...ev(1, { room: 'r' }), time: a[0].time })
    t.same(first.data, { i: 1 })
  })

  t.test('read filters by stream, after an id, oldest first, up to a limit', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    const old = new Date(Date.now() - 48 * 3600_000).toISOString()
    const stored = await store.append([
      ev(0, { type: 'CompetitionActivatedEvent', competitionId: 'c1' }),
      ev(1, { competitionId: 'c1' }),
      ev(2, { competitionId: 'c2' }),
      ev(3, { room: 'dev' }),
      ev(4, { room: 'ops' }),
      ev(5, { type: 'CompetitionActivatedEvent', competitionId: 'c2', time: old }),
      ev(6, { competitionId: 'c1' }),
    ])
    const ids = (es: StoredEvent[]) => es.map((e) => e.id)
    t.same(ids(await store.read({ kind: 'competition', competitionId: 'c1' }, 0, 10)), ids([stored[0], stored[1], stored[6]]))
    t.same(ids(await store.read({ kind: 'competition', competitionId: 'c1' }, stored[0].id, 10)), ids([stored[1], stored[6]]))
    t.same(ids(await store.read({ kind: 'competition', competitionId: 'c1' }, 0, 2)), ids([stored[0], stored[1]]))
    t.same(ids(await store.read({ kind: 'competitions', windowMs: 24 * 3600_000 }, 0, 10)), ids([stored[0]]), '24 h window')
    t.same(ids(await store.read({ kind: 'room', room: 'dev' }, 0, 10)), ids([stored[3]]))
    t.same(ids(await store.read({ kind: 'room', room: null }, 0, 10)), ids([stored[3], stored[4]]))
    t.same(await store.read({ kind: 'competition', competitionId: 'c1' }, stored[6].id, 10), [])
  })

  t.test('append with given ids keeps them and skips ids already passed', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    t.same((await store.append([ev(1), ev(2)], [10, 11])).map((e) => e.id), [10, 11])
    t.same((await store.append([ev(2), ev(3)], [11, 12])).map((e) => e.id), [12], 'a redelivered id is not stored twice')
    t.same((await store.read({ kind: 'competitions', windowMs: 1e9 }, 0, 10)).length, 0)
    t.same(await store.bounds(), { oldest: 10, newest: 12 })
  })

  t.test('tail hands over every event after the given id, once, in order', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    const before = await store.append([ev(1), ev(2)])
    const seen: number[] = []
    let resolve!: () => void
    const got = new Promise<void>((r) => (resolve = r))
    const tail = store.tail(before[0].id, {
      onEvents: (es) => {
        seen.push(...es.map((e) => e.id))
        if (seen.length >= 51) resolve()
      },
    })
    t.teardown(() => tail.close())
    const later: StoredEvent[] = []
    for (let i = 0; i < 10; i++) later.push(...(await store.append(Array.from({ length: 5 }, (_, j) => ev(10 + i * 5 + j)))))
    await Promise.race([got, new Promise((_, rej) => setTimeout(() => rej(new Error(`tail saw ${seen.length}`)), 10_000))])
    const expected = [before[1].id, ...later.map((e) => e.id)]
    // A tail may re-hand an event after re-opening; the hub drops ids it has passed. Here: none.
    t.same(seen.slice(0, expected.length), expected)
  })

  t.test('an idempotency key stores its event once and answers the stored one', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    const [a] = await store.append([ev(1, { room: 'r', idempotencyKey: 'k-1' })])
    const [again] = await store.append([ev(2, { room: 'r', idempotencyKey: 'k-1' })])
    t.equal(again.id, a.id, 'the retry is answered with the first id')
    t.same(again.data, { i: 1 }, 'and the first event')
    const together = await Promise.all([store.append([ev(3, { room: 'r', idempotencyKey: 'k-2' })]), store.append([ev(4, { room: 'r', idempotencyKey: 'k-2' })]), store.append([ev(5, { room: 'r' })])])
    t.equal(together[0][0].id, together[1][0].id, 'two appends with one key at once: one event')
    t.same((await store.read({ kind: 'room', room: 'r' }, 0, 10)).map((e) => e.data.i), [1, 3, 5])
    t.equal((await store.findByKey('k-2'))?.id, together[0][0].id)
    t.equal(await store.findByKey('unknown'), null)
    const [first] = await store.read({ kind: 'room', room: 'r' }, 0, 1)
    t.notMatch(frameOf(first).json.toString(), /k-1/, 'the key is never part of the wire format')
  })

  t.test("a key's body digest is kept: a reuse with another body is told apart (answered, or refused with given ids)", async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    const keyed = (i: number, digest: string) => ev(i, { room: 'r', idempotencyKey: 'k-d', idempotencyDigest: digest })
    const [a] = await store.append([keyed(1, 'body-1')])
    t.equal(a.idempotencyDigest, 'body-1', 'the stored event answers with its digest')
    const [retry] = await store.append([keyed(2, 'body-1')])
    t.equal(retry.id, a.id)
    const [other] = await store.append([keyed(3, 'body-2')])
    t.equal(other.id, a.id, 'another body gets the stored event (the caller answers 422)')
    t.equal(other.idempotencyDigest, 'body-1', 'with the stored digest to compare')
    t.equal((await store.findByKey('k-d'))?.idempotencyDigest, 'body-1')
    // In one append: the second is answered with the first, its digest telling them apart.
    const pair = await store.append([ev(4, { room: 'r', idempotencyKey: 'k-e', idempotencyDigest: 'x' }), ev(5, { room: 'r', idempotencyKey: 'k-e', idempotencyDigest: 'y' })])
    t.equal(pair[1].id, pair[0].id)
    t.equal(pair[1].idempotencyDigest, 'x')
    // Given ids (the NATS writer): another body under a held key is refused, the events before it stored.
    const newest = (await store.bounds()).newest as number
    await t.rejects(store.append([ev(6, { room: 'r' }), keyed(7, 'body-3')], [newest + 1, newest + 2]), { name: 'StoreRejectedError', index: 1, message: /idempotency key was already used/ })
    const ids = (await store.read({ kind: 'room', room: 'r' }, 0, 100)).map((e) => e.data.i)
    t.same(ids, [1, 4, 6], 'one event per key; the conflicting one is not stored')
    // The same body with given ids (a redelivery under a new sequence) is skipped, not refused.
    await store.append([keyed(8, 'body-1')], [newest + 3])
    t.same((await store.read({ kind: 'room', room: 'r' }, 0, 100)).map((e) => e.data.i), [1, 4, 6])
  })

  t.test('evictedThrough: nothing after it was dropped, and it is below the oldest id', async (t) => {
    const store = await make()
    t.teardown(() => store.close())
    const stored = await store.append([ev(1), ev(2)])
    const evicted = await store.evictedThrough()
    t.ok(evicted >= 0 && evicted < stored[0].id, `${evicted} is below the first id ${stored[0].id}`)
  })
}
