'use strict'
// A session store for express-session (and @fastify/session, which uses the same callback
// API) on clusterkit's session store: each top-level property of the session is one field
// (JSON), so a save writes only the properties that changed (delta save, one round trip).
//
// TTL: the cookie's expiry (cookie.expires / maxAge, else `ttl` ms) is kept with the
// session and checked on every read; a non-positive TTL destroys the session. The backend's
// own expiry is the deployment's [sessions] idle_timeout (refreshed by every save / touch).

const { EventEmitter } = require('node:events')

const EXPIRES = '__ck_expires'
const CACHE_MAX = 10000

function resolveExpressSession (explicit) {
  if (explicit) return explicit
  for (const base of [process.cwd(), require.main && require.main.path].filter(Boolean)) {
    try {
      return require(require.resolve('express-session', { paths: [base] }))
    } catch {}
  }
  return null
}

function ttlOf (sess, fallbackMs) {
  const c = sess && sess.cookie
  if (c && c.expires) return new Date(c.expires).getTime() - Date.now()
  if (c && typeof c.maxAge === 'number') return c.maxAge
  if (c && typeof c.originalMaxAge === 'number') return c.originalMaxAge
  return fallbackMs
}

class ClusterkitStore extends EventEmitter {
  /**
   * @param {{ clusterkit: import('../index').Clusterkit, ttl?: number, expressSession?: unknown }} options
   */
  constructor (options = {}) {
    super()
    if (!options.clusterkit) throw new TypeError('ClusterkitStore needs { clusterkit }')
    this.sessions = options.clusterkit.sessions
    this.ttl = options.ttl ?? 86400000
    // What each session looked like when this process last read or wrote it: the base of
    // the next delta save (bounded; a miss costs one read).
    this.seen = new Map()
    const es = resolveExpressSession(options.expressSession)
    if (es && es.Store) {
      // express-session calls these Store methods (createSession, load, regenerate).
      for (const m of ['createSession', 'load', 'regenerate']) {
        if (!this[m]) this[m] = es.Store.prototype[m].bind(this)
      }
    }
  }

  #remember (sid, core, fields) {
    this.seen.delete(sid)
    if (this.seen.size >= CACHE_MAX) this.seen.delete(this.seen.keys().next().value)
    this.seen.set(sid, { core, fields })
  }

  async #get (sid) {
    let core
    try {
      core = await this.sessions.load(sid)
    } catch (e) {
      if (e.code === 'invalid_argument') return null
      throw e
    }
    if (!core) { this.seen.delete(sid); return null }
    const fields = {}
    for (const k of core.keys()) fields[k] = core.getString(k)
    const expires = fields[EXPIRES] !== undefined ? Number(fields[EXPIRES]) : Infinity
    if (expires <= Date.now()) {
      await this.sessions.destroy(sid)
      this.seen.delete(sid)
      return null
    }
    this.#remember(sid, core, fields)
    const sess = {}
    for (const [k, v] of Object.entries(fields)) if (k !== EXPIRES) sess[k] = JSON.parse(v)
    return sess
  }

  async #set (sid, sess) {
    const ttl = ttlOf(sess, this.ttl)
    if (!(ttl > 0)) { await this.#destroy(sid); return }
    const prev = this.seen.get(sid)
    let core = prev ? prev.core : null
    const before = prev ? prev.fields : {}
    if (!core) {
      core = (await this.sessions.load(sid).catch(() => null)) ?? this.sessions.createWithId(sid)
      for (const k of core.keys()) before[k] = core.getString(k)
    }
    const fields = {}
    for (const [k, v] of Object.entries(sess)) {
      if (v === undefined || typeof v === 'function') continue
      fields[k] = JSON.stringify(v)
    }
    fields[EXPIRES] = String(Date.now() + ttl)
    for (const [k, v] of Object.entries(fields)) if (before[k] !== v) core.set(k, v)
    for (const k of Object.keys(before)) if (!(k in fields)) core.remove(k)
    try {
      await this.sessions.save(core)
    } catch (e) {
      if (e.code !== 'not_found') throw e
      // Expired or destroyed meanwhile: write it again as a new session.
      core = this.sessions.createWithId(sid)
      for (const [k, v] of Object.entries(fields)) core.set(k, v)
      await this.sessions.save(core)
    }
    this.#remember(sid, core, fields)
  }

  async #destroy (sid) {
    this.seen.delete(sid)
    try {
      await this.sessions.destroy(sid)
    } catch (e) {
      if (e.code !== 'invalid_argument') throw e
    }
  }

  async #touch (sid, sess) {
    const ttl = ttlOf(sess, this.ttl)
    if (!(ttl > 0)) { await this.#destroy(sid); return }
    const prev = this.seen.get(sid)
    if (prev) {
      // Refresh the stored expiry only when it moved by more than a second; an unchanged
      // session within the refresh interval costs no round trip.
      const expires = String(Date.now() + ttl)
      if (Math.abs(Number(prev.fields[EXPIRES] ?? 0) - Number(expires)) > 1000) {
        prev.core.set(EXPIRES, expires)
        prev.fields[EXPIRES] = expires
      }
      try {
        await this.sessions.save(prev.core)
        return
      } catch (e) {
        if (e.code !== 'not_found') throw e
        this.seen.delete(sid)
        return
      }
    }
    await this.sessions.touch(sid)
  }

  async #all () {
    const out = {}
    for (const sid of await this.sessions.ids()) {
      const s = await this.#get(sid)
      if (s) out[sid] = s
    }
    return out
  }

  // The callback API of express-session's Store (callbacks optional: promises are returned).
  get (sid, cb) { return done(this.#get(sid), cb) }
  set (sid, sess, cb) { return done(this.#set(sid, sess), cb) }
  destroy (sid, cb) { return done(this.#destroy(sid), cb) }
  touch (sid, sess, cb) { return done(this.#touch(sid, sess), cb) }
  all (cb) { return done(this.#all(), cb) }
  ids (cb) { return done(this.sessions.ids(), cb) }
  length (cb) { return done(this.sessions.ids().then((a) => a.length), cb) }
  clear (cb) { this.seen.clear(); return done(this.sessions.clear().then(() => undefined), cb) }
}

function done (p, cb) {
  if (typeof cb !== 'function') return p
  p.then((v) => cb(null, v === undefined ? undefined : v), (e) => cb(e))
  return undefined
}

module.exports = { ClusterkitStore }
