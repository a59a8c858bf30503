import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { SignJWT } from 'jose'
import type { Page } from 'playwright-core'
import t, { type Test } from 'tap'
import { browserForFile } from '../helpers/browser.js'
import { startNginx } from '../helpers/nginx.js'
import { startServer, type TestServer } from '../helpers/server.js'
import { postHttps, selfSignedCert } from '../helpers/tls.js'

// The browser as users have it: many tabs of the page on one origin over HTTP/2 (straight to
// tailcast with TLS, and through nginx with TLS), a page on another origin posting with an
// Idempotency-Key, and EventSource scripts told why their stream ends. Real Chromium (Debian's).

const cert = selfSignedCert()
t.teardown(() => cert.remove())

const browser = await browserForFile(t, { trustSpki: [cert.spki] })

const pageErrors: string[] = []

async function openPage(url: string): Promise<Page> {
  const page = await browser.context.newPage()
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`))
  await page.goto(url)
  return page
}

/**
 * Close a plain-HTTP test server without waiting for Chromium's spare connections: it opens
 * sockets ahead of need that never carry a request, which node's server.close() waits out for
 * about 100 s (the idle ones it closes at once). server.ts destroys every socket after 3 s.
 */
function closeNow(server: TestServer): Promise<void> {
  const closing = server.close()
  server.app.server.closeAllConnections()
  return closing
}

const TABS = 10
const tlsSettings = { tls: { cert: cert.certFile, key: cert.keyFile } }

/** Ten tabs of the room page on `base`: each reaches live over HTTP/2 and shows a post made after they all opened. */
async function tenTabs(t: Test, base: string, post: (body: unknown) => Promise<{ status: number; body: any }>): Promise<Page[]> {
  const pages: Page[] = []
  for (let i = 0; i < TABS; i++) pages.push(await openPage(`${base}/#/rooms/tabs`))
  await Promise.all(pages.map((p) => p.waitForSelector('#conn[data-state="live"]', { timeout: 30_000 })))
  const protocols = await Promise.all(pages.map((p) => p.evaluate(() => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol)))
  t.same(protocols, Array(TABS).fill('h2'), 'every tab was loaded over HTTP/2')
  t.pass(`all ${TABS} tabs are live (over HTTP/1.1 a browser holds at most 6 streams per origin)`)
  const res = await post({ room: 'tabs', text: 'posted after every tab opened' })
  t.equal(res.status, 202)
  await Promise.all(pages.map((p) => p.waitForSelector(`#room-messages li[data-event-id="${res.body.id}"]`, { timeout: 10_000 })))
  t.pass(`all ${TABS} tabs show the post`)
  return pages
}

t.test('ten tabs straight to tailcast over HTTPS/HTTP/2 all go live and show a new post; on shutdown each says why', async (t) => {
  const server = await startServer({ ...tlsSettings, streams: { retryMs: 60_000 } })
  let closed = false
  t.teardown(() => (closed ? undefined : server.close()))
  const base = server.url.replace('http://', 'https://')
  const pages = await tenTabs(t, base, (body) => postHttps(base, body, cert.cert))
  await pages[0].screenshot({ path: browser.shot('ten-tabs-h2'), fullPage: true })

  await server.close()
  closed = true
  await Promise.all(pages.map((p) => p.waitForSelector('#conn[data-end-reason="shutdown"]', { timeout: 10_000 })))
  t.match(await pages[0].textContent('#conn-detail'), /server restarting: reconnect with lastEventId/, 'the page shows the reason')
  await pages[0].screenshot({ path: browser.shot('ten-tabs-h2-shutdown'), fullPage: true })
  for (const p of pages) await p.close()
})

t.test('ten tabs through nginx with TLS and HTTP/2 all go live and show a new post', async (t) => {
  const server = await startServer()
  t.teardown(() => closeNow(server))
  const nginx = await startNginx([new URL(server.url).host], { tls: cert })
  t.teardown(() => nginx.stop())
  const pages = await tenTabs(t, nginx.httpsUrl!, (body) => postHttps(nginx.httpsUrl!, body, cert.cert))
  await pages[0].screenshot({ path: browser.shot('ten-tabs-nginx-h2'), fullPage: true })
  for (const p of pages) await p.close()
})

t.test('a page on another origin posts with Idempotency-Key and a bearer token: the preflight allows both, the key stores once', async (t) => {
  const site = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>another site</title><p>another site</p>'))
  await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve))
  t.teardown(() => site.close())
  const origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`
  const server = await startServer({ post: { token: 'a-post-token-for-the-cross-origin-test' }, cors: { origins: [origin] } })
  t.teardown(() => closeNow(server))

  const page = await openPage(`${origin}/`)
  const answers = await page.evaluate(async (url) => {
    const post = async (): Promise<{ status: number; id: unknown; retryAfter: string | null }> => {
      const res = await fetch(`${url}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer a-post-token-for-the-cross-origin-test', 'idempotency-key': 'cross-origin-1' },
        body: JSON.stringify({ room: 'xo', text: 'from another origin' }),
      })
      return { status: res.status, id: (await res.json()).id, retryAfter: res.headers.get('retry-after') }
    }
    return [await post(), await post()]
  }, server.url)
  t.equal(answers[0].status, 202, 'the first post is stored')
  t.equal(answers[1].status, 202, 'the retry with the same key is answered')
  t.equal(answers[1].id, answers[0].id, 'with the same event: stored once')
  const stored = await server.app.store.read({ kind: 'room', room: 'xo' }, 0, 10)
  t.equal(stored.length, 1, 'one event in the store')
  await page.close()
})

/** A plain EventSource script (no page code) that records what onmessage gets, on a document of `base`. */
async function eventSourceScript(base: string, path: string): Promise<Page> {
  const page = await openPage(`${base}/favicon.svg`)
  await page.evaluate((p) => {
    const w = window as unknown as { got: unknown[]; errors: number[] }
    w.got = []
    w.errors = []
    const es = new EventSource(p)
    es.onmessage = (e) => w.got.push(JSON.parse(e.data))
    es.onerror = () => w.errors.push(es.readyState)
  }, path)
  return page
}

const got = (page: Page): Promise<{ type: string; id: string; data: Record<string, unknown> }[]> => page.evaluate(() => (window as unknown as { got: never[] }).got)

t.test('EventSource onmessage (?unnamed=1) gets the end event before the stream ends: shutdown, over HTTP/2', async (t) => {
  const server = await startServer(tlsSettings)
  const base = server.url.replace('http://', 'https://')
  const page = await eventSourceScript(base, '/messages?room=end&unnamed=1')
  await page.waitForFunction(() => (window as unknown as { got: { type: string }[] }).got.some((e) => e.type === 'live'), undefined, { timeout: 10_000 })
  const posted = await postHttps(base, { room: 'end', text: 'before the end' }, cert.cert)
  await page.waitForFunction(() => (window as unknown as { got: unknown[] }).got.length === 2, undefined, { timeout: 10_000 })
  await server.close()
  await page.waitForFunction(() => (window as unknown as { got: { type: string }[] }).got.some((e) => e.type === 'end'), undefined, { timeout: 10_000 })
  const events = await got(page)
  t.same(events.map((e) => e.type), ['live', 'message', 'end'])
  t.match(events[2], { id: posted.body.id, data: { reason: 'shutdown', reconnect: true, freshToken: false, message: 'server restarting: reconnect with lastEventId' } })
  t.type(events[2].data.retryMs, 'number', 'when to come back: the stream\'s retry')
  await page.close()
})

t.test('EventSource onmessage gets the end event when its token expires, then the reconnect is refused', async (t) => {
  const secret = 'end-event-secret-that-is-long-enough-0123456789'
  const server = await startServer({ auth: { jwt: { secret } } })
  t.teardown(() => closeNow(server))
  const token = await new SignJWT({ tailcast: { subscribe: ['/messages?room=exp'] } })
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3)
    .sign(new TextEncoder().encode(secret))
  const page = await eventSourceScript(server.url, `/messages?room=exp&unnamed=1&access_token=${token}`)
  await page.waitForFunction(() => (window as unknown as { got: { type: string }[] }).got.some((e) => e.type === 'end'), undefined, { timeout: 15_000 })
  const end = (await got(page)).find((e) => e.type === 'end')
  t.match(end, { data: { reason: 'expired', reconnect: true, freshToken: true, message: 'token expired: reconnect with a fresh token and lastEventId' } })
  // The browser reconnects by itself with the same (expired) token: 401, and EventSource stops.
  await page.waitForFunction(() => (window as unknown as { errors: number[] }).errors.includes(2), undefined, { timeout: 15_000 })
  t.pass('the reconnect with the expired token was refused (EventSource CLOSED)')
  await page.close()
})

t.test('no page had an uncaught script error', async (t) => {
  t.same(pageErrors, [])
})
