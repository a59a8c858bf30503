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
