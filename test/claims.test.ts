import t from 'tap'
import { compilePattern, deniedTargets, grantOf, mayFollow } from '../src/claims.js'

const grant = (subscribe: string[], publish: string[] = []) => grantOf({ tailcast: { subscribe, publish } })

t.test('subscribe patterns: exact paths and * within one name', async (t) => {
  const cases: [string[], string, boolean][] = [
    [['/v1/competitions'], '/v1/competitions', true],
    [['/v1/competitions'], '/v1/competitions/c1', false],
    [['/v1/competitions/*'], '/v1/competitions/c1', true],
    [['/v1/competitions/*'], '/v1/competitions', false],
    [['/v1/competitions/c1'], '/v1/competitions/c10', false],
    [['/v1/competitions/team-*'], '/v1/competitions/team-a.b:c', true],
    [['/v1/*'], '/v1/competitions/c1', false],
    [['/messages?room=vip'], '/messages?room=vip', true],
    [['/messages?room=vip'], '/messages?room=vipx', false],
    [['/messages?room=vip'], '/messages', false],
    [['/messages?room=*'], '/messages?room=any', true],
    [['/messages?room=*'], '/messages', false],
    // Every room's stream carries each room's events.
    [['/messages'], '/messages?room=vip', true],
    [['/messages*'], '/messages', true],
    [['/messages.'], '/messagesX', false],
    [[], '/messages', false],
  ]
  for (const [patterns, path, allowed] of cases) t.equal(mayFollow(grant(patterns), path), allowed, `${JSON.stringify(patterns)} ${allowed ? 'allows' : 'refuses'} ${path}`)
})

t.test('publish: every target of the event must be granted', async (t) => {
  const g = grant([], ['room:vip', 'competition:c-*'])
  t.same(deniedTargets(g, { room: 'vip' }), [])
  t.same(deniedTargets(g, { room: 'other' }), ['room:other'])
  t.same(deniedTargets(g, { competitionId: 'c-1' }), [])
  t.same(deniedTargets(g, { room: 'vip', competitionId: 'd-1' }), ['competition:d-1'])
  t.equal(deniedTargets(g, {}).length, 1, 'an event for no stream needs the post token')
  t.equal(deniedTargets(grant(['/messages']), { room: 'vip' }).length, 1, 'subscribe rights do not publish')
})

t.test('the claim is checked for its shape', async (t) => {
  t.same(grantOf({ sub: 'x' }), { subscribe: [], publish: [] }, 'no claim: nothing allowed')
  t.throws(() => grantOf({ tailcast: 'all' }), { name: 'ClaimError' })
  t.throws(() => grantOf({ tailcast: { subscribe: '/messages' } }), { name: 'ClaimError' })
  t.throws(() => grantOf({ tailcast: { subscribe: [1] } }), { name: 'ClaimError' })
  t.throws(() => grantOf({ tailcast: { publish: [''] } }), { name: 'ClaimError' })
  t.ok(compilePattern('a.b(c)*').test('a.b(c)x'), 'regex characters are literal')
  t.notOk(compilePattern('a.b').test('aXb'))
})

t.test('authorization by effect: a CompetitionActivatedEvent reaches the competitions list', async (t) => {
  const activated = 'CompetitionActivatedEvent'
  const roomOnly = grant([], ['room:vip'])
  t.same(deniedTargets(roomOnly, { type: activated, room: 'vip' }), ['competitions'], 'a room-only publisher may not write into the list')
  t.same(deniedTargets(roomOnly, { type: 'message', room: 'vip' }), [], 'other events in its room stay allowed')
  t.same(deniedTargets(grant([], ['room:vip', 'competitions']), { type: activated, room: 'vip' }), [], 'a claim for the list allows it')
  t.same(deniedTargets(grant([], ['competition:c1']), { type: activated, competitionId: 'c1' }), [], "a competition's publisher may announce it")
  t.same(deniedTargets(grant([], ['competition:c1']), { type: activated, competitionId: 'c2' }), ['competition:c2'])
  t.same(deniedTargets(grant([], ['competition:c1']), { type: activated }), ['competitions'], 'without a competitionId only the list claim allows it')
})

t.test('claim patterns are matched in linear time (no backtracking)', async (t) => {
  const stars = '*a'.repeat(20) + '*'
  const name = 'a'.repeat(1024) + 'b'
  const patterns = [`/messages?room=${stars}b!`, `room:${stars}!`, `/v1/competitions/${'*'.repeat(20)}x`]
  const p = grant(patterns.slice(0, 1).concat(patterns.slice(2)), [patterns[1]])
  let allowed = 0
  const start = process.hrtime.bigint()
  const rounds = 200
  for (let i = 0; i < rounds; i++) {
    if (mayFollow(p, `/messages?room=${name}`)) allowed++
    if (mayFollow(p, `/v1/competitions/${name}`)) allowed++
    if (deniedTargets(p, { room: name }).length === 0) allowed++
  }
  const perCall = Number(process.hrtime.bigint() - start) / 1000 / (rounds * 3)
  t.equal(allowed, 0, 'none of these patterns matches')
  // A backtracking regex takes seconds to hours here; this takes microseconds (generous margin: 1 ms).
  t.ok(perCall < 1000, `one check of 20 stars against a 1 KB name took ${perCall.toFixed(1)} µs`)
  t.ok(compilePattern(stars + 'b').test(name), 'and still matches what it should')
  t.ok(compilePattern('room:**').test('room:x'), 'repeated stars are one star')
  t.notOk(compilePattern('room:*').test('room:a/b'), '* never crosses a separator')
  t.ok(compilePattern('a*=*').test('ab=c'), 'a literal separator matches itself')
})
