// tailcast web page: plain browser JavaScript, no framework, nothing fetched from elsewhere.
// Views by hash: #/ (competition selector + room picker), #/competitions/ID, #/rooms/NAME.
// One EventSource at a time, owned by a Feed that tracks the connection state shown in the header.
'use strict'

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/
const COMPETITION_ACTIVATED = 'CompetitionActivatedEvent'
/** Events kept in a view; older ones are dropped from the page (never from the server). */
const MAX_ITEMS = 5000

const $ = (id) => document.getElementById(id)

// ---- private streams ---------------------------------------------------------------------------
/**
 * A JWT for private streams, from the page's own URL (`/?access_token=…#/rooms/vip`); kept for the
 * tab's session and taken out of the address bar, so it is not shared with a copied link. A token
 * in the `tailcast_token` cookie needs nothing here: the browser sends it with every request.
 */
const token = (() => {
  const params = new URLSearchParams(location.search)
  const fromUrl = params.get('access_token')
  if (fromUrl) {
    try {
      sessionStorage.setItem('tailcast_token', fromUrl)
    } catch {
      // Storage off: the token lives as long as the page.
    }
    params.delete('access_token')
    const rest = params.toString()
    history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`)
    return fromUrl
  }
  try {
    return sessionStorage.getItem('tailcast_token')
  } catch {
    return null
  }
})()

/** Headers for fetch: the token, when the page has one. */
function authHeaders(headers = {}) {
  return token ? { ...headers, authorization: `Bearer ${token}` } : headers
}

/** Why the server refused a stream (401/403, JSON), or null when it would serve it. */
async function refusalOf(url) {
  const abort = new AbortController()
  try {
    const res = await fetch(url, { headers: { accept: 'text/event-stream' }, signal: abort.signal })
    if (res.status !== 401 && res.status !== 403) return null
    const body = await res.json().catch(() => ({}))
    return { status: res.status, message: typeof body.message === 'string' ? body.message : `the server answered ${res.status}` }
  } catch {
    return null
  } finally {
    abort.abort()
  }
}

// ---- connection state --------------------------------------------------------------------------
const conn = {
  state: 'idle',
  detail: '',
  reconnects: 0,
  resets: 0,
  lastId: null,
}

function renderConn() {
  // The event lists stay quiet for screen readers while a replay fills them, and speak once live.
  const busy = String(conn.state !== 'live')
  for (const list of document.querySelectorAll('[role="log"]')) list.setAttribute('aria-busy', busy)
  const el = $('conn')
  el.dataset.state = conn.state
  el.dataset.reconnects = String(conn.reconnects)
  el.dataset.resets = String(conn.resets)
  el.dataset.lastId = conn.lastId === null ? '' : conn.lastId
  $('conn-state').textContent = conn.state
  $('conn-detail').textContent = conn.detail
  $('conn-last').textContent = conn.lastId === null ? 'none' : conn.lastId
}

function setConn(state, detail) {
  conn.state = state
  conn.detail = detail
  renderConn()
}

/**
 * One stream followed with EventSource, opened with `?unnamed=1`: the server sends every event
 * without an `event:` line, so `onmessage` sees all of them whatever their type (SSE has no wildcard
 * listener), and the type in the JSON says what each is, the control events `live` and `reset`
 * included (no stored event may have those types). States: connecting (first request), replaying (connected,
 * stored events arriving), live (after the server's `live` control event), reconnecting (the
 * connection dropped; the browser retries after the server's `retry:` and sends Last-Event-ID),
 * reset (the server could not resume from our id: the store wrapped or was replaced; the view is
 * cleared and rebuilt from the replay that follows).
 */
class Feed {
  constructor(path, handlers) {
    this.path = path
    this.handlers = handlers
    this.es = null
    this.timer = null
    this.attempt = 0
    this.everOpened = false
    this.resetting = false
    this.closed = false
    this.endReason = null
    delete $('conn').dataset.endReason
    conn.lastId = null
    conn.reconnects = 0
    conn.resets = 0
    this.open(null)
    viewers.follow(path)
  }

  open(resumeId) {
    if (this.closed) return
    const url = new URL(this.path, location.href)
    url.searchParams.set('unnamed', '1')
    // A new EventSource cannot set Last-Event-ID; the server also reads `lastEventId` from the query.
    if (resumeId !== null) url.searchParams.set('lastEventId', resumeId)
    // EventSource cannot set headers: a private stream's token goes in the query.
    if (token) url.searchParams.set('access_token', token)
    const es = new EventSource(url.pathname + url.search)
    this.es = es
    if (this.attempt === 0 && !this.everOpened) setConn('connecting', '')
    es.onmessage = (e) => this.message(es, e)
    es.onopen = () => {
      if (this.es !== es) return
      this.everOpened = true
      setConn(this.resetting ? 'reset' : 'replaying', this.resetting ? 'rebuilding the view' : '')
    }
    es.onerror = () => this.error(es)
  }

  message(es, e) {
    if (this.es !== es) return
    let ev
    try {
      ev = JSON.parse(e.data)
    } catch {
      return
    }
    if (!ev || typeof ev !== 'object' || typeof ev.id !== 'string' || typeof ev.type !== 'string') return
    if (ev.type === 'live') return this.live(ev)
    if (ev.type === 'reset') return this.reset(ev)
    if (ev.type === 'end') return this.end(ev)
    conn.lastId = ev.id
    this.handlers.onEvent(ev)
    renderConn()
  }

  live(ev) {
    // `live` carries the stream position: every event of this stream up to it has been delivered.
    if (ev.id !== '0') conn.lastId = ev.id
    this.attempt = 0
    const detail = []
    if (conn.reconnects > 0) detail.push(`${conn.reconnects} reconnect${conn.reconnects === 1 ? '' : 's'}`)
    if (this.resetting) detail.push('view rebuilt after a reset')
    this.resetting = false
    this.endReason = null
    setConn('live', detail.join(', '))
    if (this.handlers.onLive) this.handlers.onLive()
  }

  /**
   * The server is ending this stream and says why (shutdown, too slow, token expired, error); the
   * browser reconnects by itself after `retry:`. Shown until the stream is live again.
   */
  end(ev) {
    const d = ev.data || {}
    this.endReason = typeof d.message === 'string' ? d.message : 'the server ended the stream'
    $('conn').dataset.endReason = typeof d.reason === 'string' ? d.reason : ''
    setConn('reconnecting', this.endReason)
  }

  reset(ev) {
    const reason = ev.data && typeof ev.data.reason === 'string' ? ev.data.reason : 'the server could not resume from the last event id'
    conn.resets++
    this.resetting = true
    this.handlers.onReset()
    setConn('reset', `${reason}: rebuilding the view`)
  }

  async error(es) {
    if (this.es !== es || this.closed) return
    if (es.readyState === EventSource.CLOSED) {
      // A 401/403 is final until the page gets another token: say so instead of retrying. The probe
      // keeps the stream's lastEventId: if the server answers 200 by now, it resumes, not replays.
      const url = new URL(es.url)
      const refused = await refusalOf(url.pathname + url.search)
      if (this.es !== es || this.closed) return
      if (refused) {
        es.close()
        const hint = refused.status === 401 ? (token ? ' Open this page with a new ?access_token=YOUR_TOKEN in its address.' : ' Open this page with ?access_token=YOUR_TOKEN in its address.') : ''
        const text = `${refused.message}.${hint}`
        // One message, in the header and in the view (instead of its "nothing yet" note).
        if (this.handlers.onRefused) this.handlers.onRefused(text)
        return setConn(refused.status === 401 ? 'unauthorized' : 'forbidden', text)
      }
    }
    this.attempt++
    // One outage counts once, however many attempts it takes.
    if (this.attempt === 1 && this.everOpened) conn.reconnects++
    if (es.readyState === EventSource.CLOSED) {
      // EventSource gives up for good on an answer that is not a 200 event stream (e.g. a 503 from a
      // server that is shutting down). Keep trying with a new one, backing off up to 30 s, and
      // resume from the last id we hold so that nothing is lost or repeated.
      es.close()
      const delay = Math.min(30000, 500 * 2 ** Math.min(this.attempt - 1, 6))
      setConn('reconnecting', `${this.endReason ? `${this.endReason}; ` : ''}attempt ${this.attempt}, next in ${Math.round(delay / 1000)} s`)
      this.timer = setTimeout(() => this.open(conn.lastId), delay)
    } else {
      // The browser reconnects by itself after the server's `retry:` and sends Last-Event-ID.
      setConn('reconnecting', `${this.endReason ? `${this.endReason}; ` : ''}attempt ${this.attempt}`)
    }
  }

  close() {
    this.closed = true
    viewers.follow(null)
    clearTimeout(this.timer)
    if (this.es) this.es.close()
    this.es = null
  }
}

// ---- viewer count ------------------------------------------------------------------------------
/** How many follow the open stream (GET /v1/presence, over every instance), polled every 5 s. */
const viewers = {
  /** Bumped by each follow(): a poll of an earlier one (even of the same path) stops. */
  round: 0,
  timer: null,

  follow(path) {
    const round = ++this.round
    clearTimeout(this.timer)
    $('viewers').hidden = true
    if (path !== null) this.timer = setTimeout(() => this.poll(path, round), 300)
  },

  async poll(path, round) {
    try {
      const res = await fetch(`/v1/presence?stream=${encodeURIComponent(path)}`, { headers: authHeaders() })
      if (this.round !== round) return
      if (res.ok) {
        const { clients } = await res.json()
        $('viewers-count').textContent = String(clients)
        $('viewers').dataset.count = String(clients)
        $('viewers').hidden = false
      }
    } catch {
      // Offline: the connection state says so; try again later.
    }
    if (this.round === round) this.timer = setTimeout(() => this.poll(path, round), 5000)
  },
}

// ---- rendering helpers -------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v
    else if (k.startsWith('data-')) node.setAttribute(k, v)
    else node[k] = v
  }
  for (const c of children) node.append(c)
  return node
}

function timeText(iso) {
  const d = new Date(iso)
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString()
}

function timeEl(iso) {
  return el('time', { dateTime: String(iso), class: 'when' }, timeText(iso))
}

function summary(data) {
  let s
  try {
    s = JSON.stringify(data)
  } catch {
    s = String(data)
  }
  return s.length > 400 ? `${s.slice(0, 400)}…` : s
}

/** Append to a log list, drop the oldest past MAX_ITEMS, and keep the view at the bottom if it was. */
function appendItem(list, item, emptyNote) {
  const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40
  list.append(item)
  while (list.childElementCount > MAX_ITEMS) list.firstElementChild.remove()
  emptyNote.hidden = true
  if (atBottom && conn.state === 'live') item.scrollIntoView({ block: 'nearest' })
}

function clearList(list, emptyNote) {
  list.replaceChildren()
  if (emptyNote.dataset.text === undefined) emptyNote.dataset.text = emptyNote.textContent
  emptyNote.textContent = emptyNote.dataset.text
  emptyNote.classList.remove('refused')
  emptyNote.hidden = false
}

/** The stream was refused (401/403): the view says so, not that nothing has happened yet. */
function refusedNote(list, emptyNote) {
  return (text) => {
    list.replaceChildren()
    emptyNote.textContent = text
    emptyNote.classList.add('refused')
    emptyNote.hidden = false
  }
}

function competitionName(ev) {
  const d = ev.data || {}
  for (const k of ['name', 'title', 'description']) if (typeof d[k] === 'string' && d[k] !== '') return d[k]
  return ev.competitionId || '(no id)'
}

// ---- views -------------------------------------------------------------------------------------
function showView(id, focus) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== id
  if (focus) {
    const h = document.querySelector(`#${id} h1`)
    if (h) h.focus()
  }
}

/** #/ : the competition selector, fed by /v1/competitions (newest first, updates live). */
function homeView() {
  const list = $('competition-list')
  const empty = $('competition-empty')
  clearList(list, empty)
  document.title = 'Competitions · tailcast'
  const add = (ev) => {
    if (ev.type !== COMPETITION_ACTIVATED || typeof ev.competitionId !== 'string') return
    // One entry per competition: a new activation moves it to the top (newest first).
    const old = list.querySelector(`li[data-competition-id="${CSS.escape(ev.competitionId)}"]`)
    if (old) old.remove()
    const name = competitionName(ev)
    const link = el('a', { href: `#/competitions/${encodeURIComponent(ev.competitionId)}` }, el('span', { class: 'name' }, name))
    const meta = el('span', { class: 'meta' }, 'activated ', timeEl(ev.time), ` · id ${ev.competitionId}`)
    link.append(meta)
    list.prepend(el('li', { 'data-competition-id': ev.competitionId, 'data-event-id': ev.id }, link))
    while (list.childElementCount > MAX_ITEMS) list.lastElementChild.remove()
    empty.hidden = true
  }
  return new Feed('/v1/competitions', { onEvent: add, onReset: () => clearList(list, empty), onRefused: refusedNote(list, empty) })
}

/** #/competitions/ID : its live state, then its events as they arrive, of every type. */
function competitionView(id) {
  const list = $('competition-events')
  const empty = $('competition-events-empty')
  clearList(list, empty)
  $('competition-title').textContent = `Competition ${id}`
  document.title = `${id} · tailcast`
  const add = (ev) => {
    if (ev.type === COMPETITION_ACTIVATED) {
      $('competition-title').textContent = competitionName(ev)
      document.title = `${competitionName(ev)} · tailcast`
    }
    const item = el(
      'li',
      { 'data-event-id': ev.id, 'data-type': ev.type },
      el('span', { class: 'head' }, el('strong', { class: 'type' }, ev.type), ' ', timeEl(ev.time), ' ', el('span', { class: 'id' }, `id ${ev.id}`)),
      el('code', { class: 'data' }, summary(ev.data)),
    )
    appendItem(list, item, empty)
  }
  return new Feed(`/v1/competitions/${encodeURIComponent(id)}`, { onEvent: add, onReset: () => clearList(list, empty), onRefused: refusedNote(list, empty) })
}

/** #/rooms/NAME : the room's stored messages, then new ones; a send box when posting is allowed. */
function roomView(room) {
  const list = $('room-messages')
  const empty = $('room-messages-empty')
  clearList(list, empty)
  $('room-title').textContent = `Room ${room}`
  document.title = `${room} · tailcast`
  sendForm.room = room
  sendForm.probe()
  const add = (ev) => {
    const text = ev.type === 'message' && ev.data && typeof ev.data.text === 'string' ? ev.data.text : summary(ev.data)
    const item = el(
      'li',
      { 'data-event-id': ev.id, 'data-type': ev.type },
      el('span', { class: 'head' }, ev.type === 'message' ? '' : el('strong', { class: 'type' }, `${ev.type} `), timeEl(ev.time), ' ', el('span', { class: 'id' }, `id ${ev.id}`)),
      el('span', { class: 'text' }, text),
    )
    appendItem(list, item, empty)
  }
  return new Feed(`/messages?room=${encodeURIComponent(room)}`, { onEvent: add, onReset: () => clearList(list, empty), onRefused: refusedNote(list, empty) })
}

// ---- sending -----------------------------------------------------------------------------------
/**
 * Whether a JWT's "tailcast.publish" claim names `target` (room:NAME), with the server's pattern
 * rule (src/claims.ts: `*` stands for any name characters). True when the token is not a JWT.
 */
function mayPublish(jwt, target) {
  let claim
  try {
    const part = jwt.split('.')[1]
    const payload = JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/')))
    claim = payload && payload.tailcast
  } catch {
    return true
  }
  if (!claim || typeof claim !== 'object') return false
  const list = Array.isArray(claim.publish) ? claim.publish : []
  return list.some((p) => typeof p === 'string' && new RegExp(`^${p.split('*').map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^/?&=]*')}$`).test(target))
}

const sendForm = {
  room: null,
  allowed: true,

  disable(note) {
    this.allowed = false
    $('send-text').disabled = true
    $('send-button').disabled = true
    $('send-help').hidden = true
    $('send-note').textContent = note
  },

  enable() {
    this.allowed = true
    $('send-text').disabled = false
    $('send-button').disabled = false
    $('send-help').hidden = false
    $('send-note').textContent = ''
  },

  refusal(status) {
    if (status === 401) return token ? 'Your token does not allow posting here; this page can only read.' : 'Posting needs a bearer token on this server; this page can only read.'
    if (status === 403 && !token) return 'Posting is disabled on this server; this page can only read.'
    return null
  },

  /** Ask whether posting is allowed before the user types (GET /posting has no side effect). */
  async probe() {
    this.enable()
    try {
      const res = await fetch('/posting')
      if (!res.ok) return
      const posting = await res.json()
      if (!posting.enabled) this.disable(`${posting.reason.charAt(0).toUpperCase()}${posting.reason.slice(1)}; this page can only read.`)
      else if (posting.tokenRequired && !token) this.disable(this.refusal(401))
      // A JWT names what it may post to ("tailcast.publish"): no send box for a room it cannot.
      // The server checks again; another kind of token (the server's post token) is tried as is.
      else if (posting.tokenRequired && token && !mayPublish(token, `room:${this.room}`)) {
        this.disable(`Your token does not allow posting to room ${this.room}; this page can only read.`)
      }
    } catch {
      // Offline: the send itself will say so.
    }
  },

  async send() {
    const box = $('send-text')
    const text = box.value
    if (!this.allowed || this.room === null || text.trim() === '') return
    $('send-button').disabled = true
    try {
      const res = await fetch('/messages', {
        method: 'POST',
        headers: authHeaders({ 'content-type': 'application/json' }),
        body: JSON.stringify({ text, room: this.room }),
      })
      const why = this.refusal(res.status)
      if (why) return this.disable(why)
      if (!res.ok) {
        let msg = `the server answered ${res.status}`
        try {
          const body = await res.json()
          if (body && typeof body.message === 'string') msg = body.message
        } catch {
          // keep the status text
        }
        $('send-note').textContent = `Not sent: ${msg}`
        return
      }
      box.value = ''
      $('send-note').textContent = ''
    } catch {
      $('send-note').textContent = 'Not sent: the server cannot be reached. Try again when the connection is live.'
    } finally {
      if (this.allowed) $('send-button').disabled = false
      box.focus()
    }
  },
}

// ---- routing -----------------------------------------------------------------------------------
let feed = null

function route(focus) {
  if (feed) feed.close()
  feed = null
  const hash = location.hash.replace(/^#/, '') || '/'
  const parts = hash.split('/').filter((p) => p !== '')
  let name = null
  try {
    name = parts.length === 2 ? decodeURIComponent(parts[1]) : null
  } catch {
    name = null
  }
  if (parts.length === 0) {
    showView('view-home', focus)
    feed = homeView()
  } else if (parts[0] === 'competitions' && name !== null && NAME.test(name)) {
    showView('view-competition', focus)
    feed = competitionView(name)
  } else if (parts[0] === 'rooms' && name !== null && NAME.test(name)) {
    showView('view-room', focus)
    feed = roomView(name)
  } else {
    showView('view-missing', focus)
    setConn('idle', '')
  }
}

function init() {
  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const room = $('room-input').value.trim()
    if (NAME.test(room)) location.hash = `#/rooms/${encodeURIComponent(room)}`
  })
  $('send-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void sendForm.send()
  })
  $('send-text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault()
      void sendForm.send()
    }
  })
  window.addEventListener('hashchange', () => route(true))
  route(false)
}

init()
