import { SignJWT } from 'jose'
import type { Page } from 'playwright-core'
import t from 'tap'
import { MemoryEventStore } from '../../src/store/memory-store.js'
import { browserForFile } from '../helpers/browser.js'
import { freePort, startServer, type TestServer } from '../helpers/server.js'

// The web page at `/` in a real headless Chromium (Debian's), against the real server on loopback.

/** Short `retry:` so the page's EventSource reconnects quickly after the restart. */
const STREAMS = { streams: { retryMs: 300 } }

const browser = await browserForFile(t)

/** Uncaught script errors on any page; checked by the last test. */
const pageErrors: string[] = []

async function openPage(url: string): Promise<Page> {
  const page = await browser.context.newPage()
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`))
  // Records every connection state the page shows, so a test can check the sequence afterwards.
  await page.addInitScript(() => {
    const w = window as unknown as { __states: string[] }
    w.__states = []
    document.addEventListener('DOMContentLoaded', () => {
      const conn = document.getElementById('conn') as HTMLElement
      new MutationObserver(() => {
        const s = conn.dataset.state ?? ''
        if (w.__states[w.__states.length - 1] !== s) w.__states.push(s)
      }).observe(conn, { attributes: true, attributeFilter: ['data-state'] })
    })
  })
  await page.goto(url)
  return page
}

const states = (page: Page): Promise<string[]> => page.evaluate(() => (window as unknown as { __states: string[] }).__states)
const waitLive = (page: Page, timeout = 10_000) => page.waitForSelector('#conn[data-state="live"]', { timeout })
const idsIn = (page: Page, list: string): Promise<string[]> =>
  page.$$eval(`#${list} li`, (els) => els.map((e) => (e as HTMLElement).dataset.eventId ?? ''))

const competition = (id: string, name: string) => ({ type: 'CompetitionActivatedEvent', competitionId: id, data: { name } })
const competitionEvent = (id: string, data: Record<string, unknown>) => ({ type: 'message', competitionId: id, data })

async function posted(server: TestServer, body: unknown): Promise<string> {
  const res = await server.post(body)
  if (res.status !== 202) throw new Error(`POST /messages answered ${res.status}: ${JSON.stringify(res.body)}`)
  return res.body.id as string
}

t.test('the page is served at / with its assets, from this server only', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const res = await fetch(`${server.url}/`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^text\/html/)
  t.match(res.headers.get('content-security-policy'), /default-src 'self'/)
  const html = await res.text()
  t.match(html, /<script src="app\.js" defer><\/script>/)
  t.notMatch(html, /https?:\/\//, 'no external URL in the page')
  for (const asset of ['app.js', 'style.css', 'favicon.svg']) {
    t.equal((await fetch(`${server.url}/${asset}`)).status, 200, asset)
  }
  const missing = await fetch(`${server.url}/no-such-file.js`)
  t.equal(missing.status, 404)
  t.match(await missing.json(), { statusCode: 404 }, 'unknown paths keep the JSON 404')
})

t.test('selector, competition view, restart with exact resume, reset after the store is replaced', async (t) => {
  const port = await freePort()
  const store = new MemoryEventStore(10_000)
  let server = await startServer({ port, ...STREAMS }, { store })
  t.teardown(async () => {
    await server.close()
    await store.close()
  })

  const before = await posted(server, competition('cup-a', 'Sprint Cup A'))
  const page = await openPage(`${server.url}/`)

  await t.test('the selector lists competitions posted before and after the page opened, newest first', async (t) => {
    await page.waitForSelector('#competition-list li[data-competition-id="cup-a"]', { timeout: 10_000 })
    await waitLive(page)
    const after = await posted(server, competition('cup-b', 'Relay Cup B'))
    await page.waitForSelector('#competition-list li[data-competition-id="cup-b"]', { timeout: 5000 })
    t.same(await idsIn(page, 'competition-list'), [after, before], 'newest first')
    t.match(await page.textContent('#competition-list'), /Relay Cup B[\s\S]*Sprint Cup A/)
    t.equal(await page.getAttribute('#conn', 'data-last-id'), after, 'the last event id is shown')
    await page.screenshot({ path: browser.shot('competition-selector'), fullPage: true })
  })

  await t.test('keyboard opens a competition; an event posted for it appears within 1 s', async (t) => {
    await page.focus('a[href="#/competitions/cup-a"]')
    await page.keyboard.press('Enter')
    await page.waitForSelector('#view-competition:not([hidden])')
    await page.waitForSelector(`#competition-events li[data-event-id="${before}"]`, { timeout: 10_000 })
    await waitLive(page)
    t.equal(await page.textContent('#competition-title'), 'Sprint Cup A', 'titled from its activation event')
    t.equal(await page.evaluate(() => document.activeElement?.id), 'competition-title', 'focus moves to the view heading')

    const t0 = Date.now()
    const id = await posted(server, competitionEvent('cup-a', { lap: 1, skater: 'Anna' }))
    await page.waitForSelector(`#competition-events li[data-event-id="${id}"]`, { timeout: 5000 })
    const ms = Date.now() - t0
    t.ok(ms < 1000, `appeared ${ms} ms after the POST (limit 1000 ms)`)
    await posted(server, competitionEvent('cup-b', { lap: 1 }))
    await posted(server, competitionEvent('cup-a', { lap: 2, skater: 'Anna' }))
    await page.waitForFunction(() => document.querySelectorAll('#competition-events li').length === 3)
    await page.screenshot({ path: browser.shot('competition-view'), fullPage: true })
  })

  await t.test('stop and start the server on the same port: reconnecting, then live, every event once', async (t) => {
    const reconnectsBefore = Number(await page.getAttribute('#conn', 'data-reconnects'))
    await server.close()
    await page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 10_000 })
    await page.screenshot({ path: browser.shot('competition-reconnecting'), fullPage: true })
    // Written while this server is down (another instance sharing the store would do this).
    const now = new Date().toISOString()
    await store.append([
      { type: 'message', competitionId: 'cup-a', time: now, data: { lap: 3, while: 'down' } },
      { type: 'message', competitionId: 'cup-b', time: now, data: { lap: 2, while: 'down' } },
    ])
    server = await startServer({ port, ...STREAMS }, { store })
    // Posted as the page reconnects: each lands in its replay or its live part, never both.
    await posted(server, competitionEvent('cup-a', { lap: 4 }))
    await posted(server, competitionEvent('cup-a', { lap: 5 }))
    await waitLive(page)
    const last = await posted(server, competitionEvent('cup-a', { lap: 6 }))
    await page.waitForSelector(`#competition-events li[data-event-id="${last}"]`, { timeout: 5000 })

    const stored = (await store.read({ kind: 'competition', competitionId: 'cup-a' }, 0, 1000)).map((e) => String(e.id))
    const shown = await idsIn(page, 'competition-events')
    t.equal(new Set(shown).size, shown.length, 'no event shown twice')
    t.same(shown, stored, 'the page holds exactly the stored events of the competition, in order')
    t.equal(shown.length, 7)
    t.ok(Number(await page.getAttribute('#conn', 'data-reconnects')) > reconnectsBefore, 'the reconnect is counted')
    t.match(await page.textContent('#conn'), /live[\s\S]*1 reconnect/)
    const seen = await states(page)
    const down = seen.lastIndexOf('reconnecting')
    t.ok(down >= 0 && seen.slice(down).includes('live'), `reconnecting, then live (states: ${seen.join(' > ')})`)
    t.equal(Number(await page.getAttribute('#conn', 'data-resets')), 0, 'the resume was exact: no reset')
    await page.screenshot({ path: browser.shot('competition-after-restart'), fullPage: true })
  })

  await t.test('a server on a new store answers the old id with reset: the page clears and rebuilds', async (t) => {
    await server.close()
    await page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 10_000 })
    const fresh = new MemoryEventStore(1000)
    t.teardown(() => fresh.close())
    server = await startServer({ port, ...STREAMS }, { store: fresh })
    await page.waitForSelector('#conn[data-resets="1"][data-state="live"]', { timeout: 10_000 })
    t.same(await idsIn(page, 'competition-events'), [], 'the old store\'s events are gone from the view')
    const id = await posted(server, competitionEvent('cup-a', { lap: 1, after: 'reset' }))
    await page.waitForSelector(`#competition-events li[data-event-id="${id}"]`, { timeout: 5000 })
    t.same(await idsIn(page, 'competition-events'), [id])
    const seen = await states(page)
    const reset = seen.lastIndexOf('reset')
    t.ok(reset >= 0 && seen.slice(reset).includes('live'), `reset, then live (states: ${seen.join(' > ')})`)
    t.match(await page.textContent('#conn-detail'), /rebuilt/)
    await page.screenshot({ path: browser.shot('competition-after-reset'), fullPage: true })
    await page.close()
  })
})

t.test('a message typed into a room page appears in a second page on the same room', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const earlier = await posted(server, { text: 'posted with curl', room: 'lobby' })
  await posted(server, { text: 'another room', room: 'elsewhere' })

  const writer = await openPage(`${server.url}/`)
  await writer.fill('#room-input', 'lobby')
  await writer.press('#room-input', 'Enter')
  await writer.waitForSelector('#view-room:not([hidden])')
  const reader = await openPage(`${server.url}/#/rooms/lobby`)
  await Promise.all([waitLive(writer), waitLive(reader)])
  t.same(await idsIn(reader, 'room-messages'), [earlier], 'the stored message of this room only')

  await writer.fill('#send-text', 'hello from the first page')
  await writer.press('#send-text', 'Enter')
  const item = await reader.waitForSelector('#room-messages li:has-text("hello from the first page")', { timeout: 5000 })
  const id = await item.getAttribute('data-event-id')
  t.ok(id !== null && BigInt(id) > BigInt(earlier), 'it carries a new id')
  await writer.waitForSelector(`#room-messages li[data-event-id="${id}"]`, { timeout: 5000 })
  t.equal(await writer.inputValue('#send-text'), '', 'the send box is cleared')
  t.same(await idsIn(reader, 'room-messages'), [earlier, id as string])
  t.same(await idsIn(writer, 'room-messages'), [earlier, id as string])
  await reader.screenshot({ path: browser.shot('room-view'), fullPage: true })
  await writer.close()
  await reader.close()
})

t.test('where posting is disabled the send box is disabled with a note', async (t) => {
  const server = await startServer({ post: { enabled: false } })
  t.teardown(() => server.close())
  const page = await openPage(`${server.url}/#/rooms/lobby`)
  await waitLive(page)
  await page.waitForSelector('#send-text[disabled]', { timeout: 5000 })
  t.match(await page.textContent('#send-note'), /disabled on this server/)
  t.ok(await page.isDisabled('#send-button'))
  await page.screenshot({ path: browser.shot('room-view-read-only'), fullPage: true })
  await page.close()
})

t.test('when EventSource gives up on a 503 the page opens a new one that resumes by ?lastEventId=', async (t) => {
  const port = await freePort()
  const store = new MemoryEventStore(1000)
  let server = await startServer({ port, ...STREAMS }, { store })
  t.teardown(async () => {
    await server.close()
    await store.close()
  })
  const first = await posted(server, competitionEvent('cup-z', { n: 1 }))
  const page = await openPage(`${server.url}/#/competitions/cup-z`)
  await waitLive(page)
  const urls: string[] = []
  page.on('request', (r) => {
    if (r.url().includes('/v1/competitions/cup-z')) urls.push(r.url())
  })
  // The browser's own reconnect is answered 503 (as a server that is shutting down answers):
  // EventSource then stops for good, and only the page can bring the stream back.
  let refused = 0
  await page.route('**/v1/competitions/cup-z*', async (route) => {
    if (refused++ === 0) await route.fulfill({ status: 503, contentType: 'application/json', body: '{"statusCode":503}' })
    else await route.continue()
  })
  await server.close()
  const missed = (await store.append([{ type: 'message', competitionId: 'cup-z', time: new Date().toISOString(), data: { n: 2 } }]))[0]
  server = await startServer({ port, ...STREAMS }, { store })
  await page.waitForSelector(`#competition-events li[data-event-id="${missed.id}"]`, { timeout: 15_000 })
  await waitLive(page)
  const next = await posted(server, competitionEvent('cup-z', { n: 3 }))
  await page.waitForSelector(`#competition-events li[data-event-id="${next}"]`, { timeout: 5000 })
  t.same(await idsIn(page, 'competition-events'), [first, String(missed.id), next], 'every event once, in order')
  t.ok(refused >= 2, 'the refused reconnect was followed by another request')
  t.ok(urls.some((u) => u.includes(`lastEventId=${first}`)), `the new EventSource resumes by query (${urls.join(', ')})`)
  t.equal(await page.getAttribute('#conn', 'data-resets'), '0', 'an exact resume, no reset')
  await page.close()
})

t.test('the competition view shows every event of the competition whatever its type, posted before and after it opened', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const before = [
    await posted(server, competition('cup-t', 'Typed Cup')),
    await posted(server, { type: 'LapCompleted', competitionId: 'cup-t', data: { lap: 1 } }),
    await posted(server, { type: 'ScoreEvent', competitionId: 'cup-t', data: { home: 1 } }),
  ]
  await posted(server, { type: 'LapCompleted', competitionId: 'other', data: { lap: 9 } })
  const page = await openPage(`${server.url}/#/competitions/cup-t`)
  await waitLive(page)
  t.same(await idsIn(page, 'competition-events'), before, 'the live state: every type, oldest first')
  const after = [
    await posted(server, { type: 'LapCompleted', competitionId: 'cup-t', data: { lap: 2 } }),
    await posted(server, { type: 'HeatStartedEvent', competitionId: 'cup-t', data: { heat: 2 } }),
    await posted(server, { type: 'x.custom:Type_1', competitionId: 'cup-t', data: {} }),
  ]
  await page.waitForSelector(`#competition-events li[data-event-id="${after[2]}"]`, { timeout: 5000 })
  t.same(await idsIn(page, 'competition-events'), [...before, ...after], 'then every event as it arrives, each once')
  t.same(
    await page.$$eval('#competition-events li', (els) => els.map((e) => (e as HTMLElement).dataset.type)),
    ['CompetitionActivatedEvent', 'LapCompleted', 'ScoreEvent', 'LapCompleted', 'HeatStartedEvent', 'x.custom:Type_1'],
  )
  t.match(await page.textContent('#competition-events'), /LapCompleted[\s\S]*"lap":1[\s\S]*LapCompleted[\s\S]*"lap":2/)
  t.equal(await page.getAttribute('#conn', 'data-last-id'), after[2])
  await page.screenshot({ path: browser.shot('competition-every-type'), fullPage: true })
  await page.close()
})

t.test('EventSource: with ?unnamed=1 onmessage gets every event (control events too); without it addEventListener(type) works as before', async (t) => {
  const server = await startServer()
  t.teardown(() => server.close())
  const before = [
    await posted(server, competition('c1', 'Final')),
    await posted(server, { type: 'LapCompleted', competitionId: 'c1', data: { lap: 1 } }),
    await posted(server, { type: 'ScoreEvent', competitionId: 'c1', data: { home: 1 } }),
  ]
  // A page of this origin (any will do: the API's JSON), where a script follows the stream twice.
  const page = await browser.context.newPage()
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`))
  await page.goto(`${server.url}/health`)
  await page.evaluate(() => {
    type Got = { via: string; type: string; lastEventId: string; id: string; jsonType: string }
    const w = window as unknown as { got: Got[] }
    w.got = []
    const record = (via: string) => (e: MessageEvent) => {
      const ev = JSON.parse(e.data as string) as { id: string; type: string }
      w.got.push({ via, type: e.type, lastEventId: e.lastEventId, id: ev.id, jsonType: ev.type })
    }
    const unnamed = new EventSource('/v1/competitions/c1?unnamed=1')
    unnamed.onmessage = record('unnamed onmessage')
    unnamed.addEventListener('LapCompleted', record('unnamed LapCompleted'))
    const named = new EventSource('/v1/competitions/c1')
    named.onmessage = record('named onmessage')
    for (const type of ['LapCompleted', 'live']) named.addEventListener(type, record(`named ${type}`))
  })
  const got = () => page.evaluate(() => (window as unknown as { got: { via: string; type: string; lastEventId: string; id: string; jsonType: string }[] }).got)
  const seen = async (pred: (g: Awaited<ReturnType<typeof got>>) => boolean, what: string) => {
    for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (pred(await got())) return
    t.fail(`timed out waiting for ${what}: ${JSON.stringify(await got())}`)
  }
  await seen((g) => g.some((x) => x.via === 'unnamed onmessage' && x.jsonType === 'live') && g.some((x) => x.via === 'named live'), 'live on both')
  const after = [
    await posted(server, { type: 'LapCompleted', competitionId: 'c1', data: { lap: 2 } }),
    await posted(server, { type: 'HeatStartedEvent', competitionId: 'c1', data: {} }),
    await posted(server, { type: 'message', competitionId: 'c1', data: { note: 'typed message' } }),
  ]
  await seen((g) => g.filter((x) => x.id === after[2]).length === 2, 'the last event on both')
  const all = await got()
  const unnamed = all.filter((x) => x.via === 'unnamed onmessage')
  t.same(unnamed.map((x) => x.jsonType), ['CompetitionActivatedEvent', 'LapCompleted', 'ScoreEvent', 'live', 'LapCompleted', 'HeatStartedEvent', 'message'], 'onmessage: every event type, and live in its place')
  t.ok(unnamed.every((x) => x.type === 'message'), 'each as a message event')
  t.same(unnamed.filter((x) => x.jsonType !== 'live').map((x) => x.lastEventId), [...before, ...after], 'lastEventId is each event id')
  t.equal(unnamed[3].lastEventId, unnamed[3].id, 'live moves lastEventId to the stream position')
  t.same(all.filter((x) => x.via === 'unnamed LapCompleted'), [], 'a typed listener hears nothing in unnamed mode')
  t.same(all.filter((x) => x.via === 'named LapCompleted').map((x) => x.id), [before[1], after[0]], 'without the option: addEventListener(type) as before')
  t.same(all.filter((x) => x.via === 'named onmessage').map((x) => x.id), [after[2]], 'without the option onmessage sees only type "message"')

  // reset, unnamed: told apart by the type in the JSON; then the whole live state and live.
  const newer = String(BigInt(after[2]) + 1_000_000n)
  await page.evaluate((url) => {
    const w = window as unknown as { resumed: string[] }
    w.resumed = []
    const es = new EventSource(url)
    es.onmessage = (e) => w.resumed.push((JSON.parse(e.data as string) as { type: string }).type)
  }, `/v1/competitions/c1?unnamed=1&lastEventId=${newer}`)
  await page.waitForFunction(() => (window as unknown as { resumed: string[] }).resumed.includes('live'), undefined, { timeout: 10_000 })
  t.same(await page.evaluate(() => (window as unknown as { resumed: string[] }).resumed), ['reset', 'CompetitionActivatedEvent', 'LapCompleted', 'ScoreEvent', 'LapCompleted', 'HeatStartedEvent', 'message', 'live'])
  await page.close()
})

t.test('private streams: a token from the page URL or a cookie opens room vip, shows the viewers; without one the page says 401', async (t) => {
  const secret = 'web-page-secret-that-is-long-enough-012345'
  const server = await startServer({ auth: { jwt: { secret } } })
  t.teardown(() => server.close())
  const sign = (claim: unknown) =>
    new SignJWT({ tailcast: claim }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(new TextEncoder().encode(secret))
  const vip = await sign({ subscribe: ['/messages?room=vip'], publish: ['room:vip'] })

  const withUrl = await openPage(`${server.url}/?access_token=${vip}#/rooms/vip`)
  await waitLive(withUrl)
  t.notMatch(withUrl.url(), /access_token/, 'the token is taken out of the address bar')
  await withUrl.fill('#send-text', 'hello vip')
  await withUrl.press('#send-text', 'Enter')
  await withUrl.waitForSelector('#room-messages li:has-text("hello vip")', { timeout: 5000 })
  t.pass('the page posts with its token (publish: room:vip)')

  await browser.context.addCookies([{ name: 'tailcast_token', value: vip, url: server.url, sameSite: 'Strict' }])
  const withCookie = await openPage(`${server.url}/#/rooms/vip`)
  await waitLive(withCookie)
  await withCookie.waitForSelector('#room-messages li:has-text("hello vip")', { timeout: 5000 })
  for (const page of [withUrl, withCookie]) {
    await page.waitForSelector('#viewers[data-count="2"]:not([hidden])', { timeout: 15_000 })
    t.match(await page.textContent('#viewers'), /2 watching/, 'the viewer count is shown')
  }
  await withCookie.screenshot({ path: browser.shot('private-room'), fullPage: true })
  await browser.context.clearCookies()

  const without = await openPage(`${server.url}/#/rooms/vip`)
  await without.waitForSelector('#conn[data-state="unauthorized"]', { timeout: 10_000 })
  t.match(await without.textContent('#conn-detail'), /needs a token[\s\S]*access_token=YOUR_TOKEN/, 'the page says why and what to do')
  t.equal(await without.$$eval('#room-messages li', (els) => els.length), 0, 'nothing of the room is shown')
  await without.screenshot({ path: browser.shot('private-room-401'), fullPage: true })

  // Same tab session: the token is kept; another room is not this token's.
  await withUrl.evaluate(() => (location.hash = '#/rooms/other'))
  await withUrl.waitForSelector('#conn[data-state="forbidden"]', { timeout: 10_000 })
  const detail = (await withUrl.textContent('#conn-detail')) ?? ''
  t.match(detail, /does not allow the stream \/messages\?room=other/)
  t.equal(await withUrl.textContent('#room-messages-empty'), detail, 'the view says the same as the header, not "No messages yet"')
  await withUrl.waitForSelector('#send-text[disabled]', { timeout: 5000 })
  t.match(await withUrl.textContent('#send-note'), /does not allow posting to room other/, 'no send box for a room the token cannot post to')
  await withUrl.screenshot({ path: browser.shot('private-room-403'), fullPage: true })

  // A token that may follow the room but not post to it: read-only page.
  const readOnly = await sign({ subscribe: ['/messages?room=vip'] })
  const reader = await openPage(`${server.url}/?access_token=${readOnly}#/rooms/vip`)
  await waitLive(reader)
  await reader.waitForSelector('#send-text[disabled]', { timeout: 5000 })
  t.match(await reader.textContent('#send-note'), /does not allow posting to room vip/)
  for (const p of [withUrl, withCookie, without, reader]) await p.close()
})

t.test('no page had an uncaught script error', async (t) => {
  t.same(pageErrors, [])
})
