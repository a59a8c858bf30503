import { totalmem } from 'node:os'
import { getHeapStatistics } from 'node:v8'
import t from 'tap'
import { BUDGET_SHARES, defaultBudgetBytes, MemoryBudget, MIN_BUDGET_BYTES } from '../src/budget.js'
import { loadConfig } from '../src/config.js'
import { startServer } from './helpers/server.js'

t.test('the default budget comes from the machine: a quarter of its memory, at most half of the heap limit', async (t) => {
  const bytes = defaultBudgetBytes()
  t.ok(bytes >= MIN_BUDGET_BYTES)
  t.ok(bytes <= Math.max(MIN_BUDGET_BYTES, totalmem() / 4) && bytes <= Math.max(MIN_BUDGET_BYTES, getHeapStatistics().heap_size_limit / 2), `${bytes} bytes`)
  t.equal(new MemoryBudget(0).totalBytes, bytes, '0 means derived')
})

t.test('parts share the budget and report what they hold', async (t) => {
  const b = new MemoryBudget(64 * 1024 * 1024)
  t.equal(b.totalBytes, 64 * 1024 * 1024)
  const shares = Object.values(BUDGET_SHARES).reduce((a, x) => a + x, 0)
  t.ok(Math.abs(shares - 1) < 1e-9, 'the shares add up to the whole budget')
  t.equal(b.limit('store'), 32 * 1024 * 1024)
  t.equal(b.limit('history'), 16 * 1024 * 1024)
  let held = 5
  b.track('store', () => held)
  b.track('history', () => 7)
  t.same(Object.fromEntries(b.parts()), { store: 5, history: 7 })
  held = 10
  t.equal(b.used(), 17, 'read when asked')
  t.equal(new MemoryBudget(1000).totalBytes, MIN_BUDGET_BYTES, 'below the minimum: the minimum')
  t.throws(() => new MemoryBudget(-1), /non-negative integer/)
})

t.test('memory.budgetBytes and TAILCAST_MEMORY_BUDGET; an old streams.frameCacheSize still loads', async (t) => {
  t.equal(loadConfig({ env: {} }).memory.budgetBytes, 0)
  t.equal(loadConfig({ env: { TAILCAST_MEMORY_BUDGET: '268435456' } }).memory.budgetBytes, 268435456)
  t.throws(() => loadConfig({ env: { TAILCAST_MEMORY_BUDGET: '-5' } }), /memory\.budgetBytes/)
  t.equal(loadConfig({ env: {}, overrides: { streams: { frameCacheSize: 20000 } } }).streams.frameCacheSize, 20000, 'accepted (and ignored)')
})

t.test('/metrics: tailcast_memory_bytes per part and the budget; the ring and the history stay within their shares', async (t) => {
  const budget = 16 * 1024 * 1024
  const s = await startServer({ memory: { budgetBytes: budget } })
  t.teardown(() => s.close())
  const big = 'x'.repeat(60_000)
  for (let i = 0; i < 300; i++) t.equal((await s.post({ type: 'T', room: 'm', data: { i, big } })).status, 202)
  const text = await (await fetch(`${s.url}/metrics`)).text()
  const part = (p: string): number => Number(new RegExp(`^tailcast_memory_bytes\\{part="${p}"\\} (\\d+)`, 'm').exec(text)?.[1])
  t.match(text, new RegExp(`^tailcast_memory_budget_bytes ${budget}$`, 'm'))
  t.ok(part('store') > budget / 4 && part('store') <= budget / 2, `store ${part('store')}`)
  t.ok(part('history') > budget / 8 && part('history') <= budget / 4, `history ${part('history')}`)
  t.equal(part('frames'), 0, 'no replay read the store')
  t.ok(part('clients') >= 0)
})
