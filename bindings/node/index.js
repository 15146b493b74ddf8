'use strict'
// clusterkit for Node.js: the public API over the native addon (native.d.ts). Every network
// operation returns a Promise settled from the Rust core's runtime; picks are synchronous.
// Errors are `ClusterkitError`s (an `Error`) with a stable `code` (see lib/errors.js).

const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const path = require('node:path')
const { ClusterkitError, CODES, sync, promise, invalid } = require('./lib/errors')

const native = require(path.join(__dirname, 'clusterkit.linux-x64-gnu.node'))
const queueMod = require('./lib/queue')

const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')

function checkKey (key, field = 'key') {
  if (typeof key === 'string' || Buffer.isBuffer(key)) return key
  if (key instanceof Uint8Array) return Buffer.from(key.buffer, key.byteOffset, key.byteLength)
  throw invalid(field, `must be a string or a Buffer, got ${key === null ? 'null' : typeof key}`)
}

function checkMs (v, field, optional) {
  if (v === undefined || v === null) {
    if (optional) return undefined
    throw invalid(field, 'is required (milliseconds)')
  }
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw invalid(field, `must be a finite number of milliseconds >= 0, got ${String(v)}`)
  }
  return v
}

function checkName (v, field) {
  if (typeof v !== 'string') throw invalid(field, `must be a string, got ${typeof v}`)
  return v
}

class Pick {
  #n
  constructor (n) { this.#n = n }
  get nodeId () { return this.#n.nodeId }
  get host () { return this.#n.host }
  get port () { return this.#n.port }
  get address () { return this.#n.address }
  get pending () { return this.#n.pending }
  success (latencyMs) { checkMs(latencyMs, 'latencyMs'); sync(() => this.#n.success(latencyMs)) }
  failure () { sync(() => this.#n.failure()) }
  release () { this.#n.release() }
}

/** A pool's events as an EventEmitter ('event' and one event per kind) and an async iterator. */
class PoolEvents extends EventEmitter {
  #n
  #queue = []
  #waiters = []
  #closed = false
  #pumping = false
  #pollMs
  constructor (n, pollMs) {
    super()
    this.#n = n
    this.#pollMs = pollMs
    this.on('newListener', () => { queueMicrotask(() => this.#pump()) })
  }

  async #pump () {
    if (this.#pumping || this.#closed) return
    this.#pumping = true
    try {
      while (!this.#closed) {
        const text = await promise(() => this.#n.next(this.#pollMs))
        if (text === null || this.#closed) continue
        const ev = JSON.parse(text)
        if (ev.kind === 'closed') { this.close(); break }
        const w = this.#waiters.shift()
        if (w) w({ value: ev, done: false })
        else if (this.#iterating) this.#queue.push(ev)
        this.emit('event', ev)
        this.emit(ev.kind, ev)
      }
    } catch (e) {
      if (this.listenerCount('error') > 0) this.emit('error', e)
      for (const w of this.#waiters.splice(0)) w(Promise.reject(e))
    } finally {
      this.#pumping = false
    }
  }

  #iterating = false;
  [Symbol.asyncIterator] () {
    this.#iterating = true
    this.#pump()
    return {
      next: () => {
        if (this.#closed) return Promise.resolve({ value: undefined, done: true })
        if (this.#queue.length) return Promise.resolve({ value: this.#queue.shift(), done: false })
        return new Promise((resolve) => this.#waiters.push(resolve))
      },
      return: () => { this.close(); return Promise.resolve({ value: undefined, done: true }) },
      [Symbol.asyncIterator] () { return this },
    }
  }

  /** Stops the subscription (ends iterators; the pending poll ends within pollMs). */
  close () {
    if (this.#closed) return
    this.#closed = true
    this.#n.close()
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true })
  }
}

class Pool {
  #n
  /**
   * @param {string} name
   * @param {{strategy?: string}} [options]
   */
  constructor (name, options = {}) {
    if (name instanceof native.Pool) { this.#n = name; return }
    checkName(name, 'name')
    this.#n = sync(() => new native.Pool(name, options.strategy ?? null))
  }

  get name () { return this.#n.name }
  get strategy () { return this.#n.strategy }
  get size () { return this.#n.size }
  get healthyCount () { return this.#n.healthyCount }
  add (node) {
    if (node === null || typeof node !== 'object') throw invalid('node', 'must be an object')
    sync(() => this.#n.add(node))
    return this
  }

  remove (id) { sync(() => this.#n.remove(checkName(id, 'id'))) }
  setHealth (id, health, reason) { sync(() => this.#n.setHealth(checkName(id, 'id'), checkName(health, 'health'), reason ?? null)) }
  setWeight (id, weight) { sync(() => this.#n.setWeight(checkName(id, 'id'), weight)) }
  nodes () { return JSON.parse(this.#n.nodesJson()) }
  metrics () { return JSON.parse(this.#n.metricsJson()) }
  /** Picks a node (synchronous); with `key`, consistent-hashing strategies follow the key. */
  pick (key) {
    if (key !== undefined && key !== null) checkKey(key)
    return new Pick(sync(() => this.#n.pick(key ?? null)))
  }

  /** The pool's events from now on; call close() when done. */
  events (options = {}) {
    return new PoolEvents(this.#n.subscribe(), checkMs(options.pollMs, 'pollMs', true) ?? 250)
  }
}

class Cache {
  #n
  #fns = new Map()
  #errors = new Map()
  #next = 1
  constructor (n) {
    this.#n = n
    n.setComputeCallback((id) => this.#compute(id))
  }

  get namespace () { return this.#n.namespace }
  get (key) { return promise(() => this.#n.get(checkKey(key))) }
  getString (key) { return promise(() => this.#n.getString(checkKey(key))) }
  set (key, value, ttlMs) {
    return promise(() => this.#n.set(checkKey(key), checkKey(value, 'value'), checkMs(ttlMs, 'ttl', true) ?? null))
  }

  add (key, value, ttlMs) {
    return promise(() => this.#n.add(checkKey(key), checkKey(value, 'value'), checkMs(ttlMs, 'ttl', true) ?? null))
  }

  delete (key) { return promise(() => this.#n.delete(checkKey(key))) }
  has (key) { return promise(() => this.#n.has(checkKey(key))) }
  getMany (keys) {
    return promise(() => {
      if (!Array.isArray(keys)) throw invalid('keys', 'must be an array')
      for (const k of keys) checkKey(k)
      return this.#n.getMany(keys)
    })
  }

  /** Stores entries (an object, a Map or an array of [key, value]) with one TTL. */
  setMany (entries, ttlMs) {
    let pairs
    if (entries instanceof Map || Array.isArray(entries)) pairs = [...entries]
    else if (entries !== null && typeof entries === 'object') pairs = Object.entries(entries)
    else return Promise.reject(invalid('entries', 'must be an object, a Map or an array of [key, value]'))
    return promise(() => {
      const keys = []; const values = []
      for (const [k, v] of pairs) { keys.push(checkKey(k)); values.push(checkKey(v, 'value')) }
      return this.#n.setMany(keys, values, checkMs(ttlMs, 'ttl', true) ?? null)
    })
  }

  deleteMany (keys) {
    return promise(() => {
      if (!Array.isArray(keys)) throw invalid('keys', 'must be an array')
      for (const k of keys) checkKey(k)
      return this.#n.deleteMany(keys)
    })
  }

  incr (key, delta = 1) {
    return promise(() => {
      if (!Number.isSafeInteger(delta)) throw invalid('delta', 'must be a safe integer')
      return this.#n.incr(checkKey(key), delta)
    })
  }

  decr (key, delta = 1) { return this.incr(key, -delta) }
  /** Remaining lifetime in ms: null if the key is absent, -1 if it never expires. */
  ttl (key) { return promise(() => this.#n.ttl(checkKey(key))) }
  clear () { return promise(() => this.#n.clear()) }

  /**
   * The value of `key`; on a miss `compute()` (sync or async, returning a string or Buffer)
   * makes it and it is stored for `ttlMs`. Concurrent misses of one key in this process share
   * one computation; popular keys are refreshed early (XFetch).
   */
  getOrCompute (key, ttlMs, compute) {
    try {
      checkKey(key); checkMs(ttlMs, 'ttl')
      if (typeof compute !== 'function') throw invalid('compute', 'must be a function')
    } catch (e) {
      return Promise.reject(e)
    }
    const id = this.#next
    this.#next = this.#next >= 0x7fffffff ? 1 : this.#next + 1
    this.#fns.set(id, compute)
    return promise(() => this.#n.getOrCompute(key, ttlMs, id)).then((v) => {
      this.#fns.delete(id)
      this.#errors.delete(id)
      return v
    }, (e) => {
      this.#fns.delete(id)
      const own = this.#errors.get(id)
      this.#errors.delete(id)
      throw own ?? e
    })
  }

  #compute (id) {
    const fn = this.#fns.get(id)
    if (!fn) { this.#n.computeDone(id, 'no compute function', null); return }
    Promise.resolve().then(fn).then((v) => {
      if (typeof v !== 'string' && !Buffer.isBuffer(v) && !(v instanceof Uint8Array)) {
        throw invalid('compute', 'must return (or resolve with) a string or a Buffer')
      }
      this.#n.computeDone(id, null, v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v) : v)
    }).catch((e) => {
      this.#errors.set(id, e)
      this.#n.computeDone(id, e instanceof Error ? e.message : String(e), null)
    })
  }
}

class Lock {
  #n
  #controller = null
  constructor (n) { this.#n = n }
  get name () { return this.#n.name }
  /**
   * Strictly increasing across successive holders of this name. Throws a ClusterkitError
   * with code `not_found` when the lock was acquired with `fencing: false`.
   */
  get fencingToken () { return sync(() => this.#n.fencingToken) }
  /** False when the lock was acquired with `fencing: false`. */
  get hasFencingToken () { return this.#n.hasFencingToken }
  /** Remaining validity in milliseconds. */
  get validFor () { return this.#n.validFor }
  get isHeld () { return this.#n.isHeld }
  /** An AbortSignal that fires when the lock is lost (renewal failed or validity ran out). */
  get signal () {
    if (!this.#controller) {
      const c = new AbortController()
      this.#controller = c
      promise(() => this.#n.lost()).then((lost) => {
        if (lost) c.abort(new ClusterkitError('conflict', `lock ${JSON.stringify(this.name)} was lost`))
      }, (e) => c.abort(e))
    }
    return this.#controller.signal
  }

  extend (ttlMs) { return promise(() => this.#n.extend(checkMs(ttlMs, 'ttl'))) }
  release () { return promise(() => this.#n.release()) }
  /** `await using lock = await locks.acquire(...)` releases it at the end of the block. */
  async [asyncDispose] () {
    try {
      await this.release()
    } catch (e) {
      if (!(e instanceof ClusterkitError && e.code === 'closed')) throw e
    }
  }
}

class Locks {
  #n
  constructor (n) { this.#n = n }
  /**
   * Acquires `name`. `ttl` (ms, required), `wait` (ms; 0 = one attempt, rejects with
   * `conflict` if held), `autoRenew` (extend every third of the TTL until released),
   * `fencing` (default true; false: no fencing token, one round trip less on Redlock — only
   * for callers that do not pass the token to the resource they protect).
   */
  async acquire (name, options) {
    checkName(name, 'name')
    if (options === null || typeof options !== 'object') throw invalid('options', 'must be an object with ttl')
    const ttl = checkMs(options.ttl, 'ttl')
    const wait = checkMs(options.wait, 'wait', true) ?? 0
    if (options.fencing !== undefined && typeof options.fencing !== 'boolean') throw invalid('fencing', 'must be a boolean')
    return new Lock(await promise(() => this.#n.acquire(name, ttl, wait, Boolean(options.autoRenew), options.fencing !== false)))
  }

  /** Runs `fn(signal, lock)` holding the lock (auto-renewed), then releases it. */
  async withLock (name, options, fn) {
    const lock = await this.acquire(name, { autoRenew: true, ...options })
    try {
      return await fn(lock.signal, lock)
    } finally {
      await lock[asyncDispose]()
    }
  }
}

class Session {
  constructor (n) { this.native = n }
  get id () { return this.native.id }
  get isNew () { return this.native.isNew }
  get isModified () { return this.native.isModified }
  get createdAt () { return this.native.createdAt }
  get (name) { return sync(() => this.native.get(checkName(name, 'name'))) }
  getString (name) { return sync(() => this.native.getString(checkName(name, 'name'))) }
  getJSON (name) { const s = this.getString(name); return s === null ? null : JSON.parse(s) }
  set (name, value) { checkName(name, 'name'); checkKey(value, 'value'); sync(() => this.native.set(name, value)) }
  setJSON (name, value) { this.set(name, JSON.stringify(value)) }
  remove (name) { sync(() => this.native.remove(checkName(name, 'name'))) }
  keys () { return sync(() => this.native.keys()) }
}

function wrapSession (n) { return n === null ? null : new Session(n) }
function unwrapSession (s) {
  if (!(s instanceof Session)) throw invalid('session', 'must be a Session from this store')
  return s.native
}

class Sessions {
  #n
  constructor (n) { this.#n = n }
  create () { return new Session(sync(() => this.#n.create())) }
  createWithId (id) { return new Session(sync(() => this.#n.createWithId(checkName(id, 'id')))) }
  async load (id) { return wrapSession(await promise(() => this.#n.load(checkName(id, 'id')))) }
  async loadLocked (id) { return wrapSession(await promise(() => this.#n.loadLocked(checkName(id, 'id')))) }
  save (s) { return promise(() => this.#n.save(unwrapSession(s))) }
  unlock (s) { return promise(() => this.#n.unlock(unwrapSession(s))) }
  regenerate (s) { return promise(() => this.#n.regenerate(unwrapSession(s))) }
  destroy (id) { return promise(() => this.#n.destroy(checkName(id, 'id'))) }
  touch (id) { return promise(() => this.#n.touch(checkName(id, 'id'))) }
  ids () { return promise(() => this.#n.ids()) }
  clear () { return promise(() => this.#n.clear()) }
}

function configText (config) {
  if (config === undefined || config === null) return ''
  if (typeof config === 'string') return config
  if (typeof config === 'object') return JSON.stringify(config)
  throw invalid('config', 'must be an object, JSON or TOML text, or undefined (embedded)')
}

class Clusterkit {
  #n
  #closed = false
  #cache; #locks; #sessions; #queue
  /**
   * A deployment from a config object, JSON or TOML text, or nothing (everything embedded).
   * `shared: true` shares one deployment per distinct document across the process and its
   * worker threads.
   */
  constructor (config, options = {}) {
    const text = configText(config)
    this.#n = sync(() => native.Deployment.parse(text, Boolean(options.shared)))
  }

  static embedded () { return new Clusterkit() }
  static fromJSON (text, options) { checkName(text, 'text'); return new Clusterkit(text, options) }
  static fromTOML (text, options) { checkName(text, 'text'); return new Clusterkit(text, options) }
  static fromFile (file, options) {
    checkName(file, 'file')
    let text
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (e) {
      throw new ClusterkitError(e.code === 'ENOENT' ? 'not_found' : 'invalid_argument', `cannot read config file: ${e.message}`)
    }
    return new Clusterkit(text, options)
  }

  #open () { if (this.#closed) throw new ClusterkitError('closed', 'this Clusterkit was closed') }
  get poolNames () { this.#open(); return this.#n.poolNames() }
  pool (name) { this.#open(); return new Pool(sync(() => this.#n.pool(checkName(name, 'name')))) }
  get cache () { this.#open(); return (this.#cache ??= new Cache(this.#n.cache())) }
  get locks () { this.#open(); return (this.#locks ??= new Locks(this.#n.locks())) }
  get sessions () { this.#open(); return (this.#sessions ??= new Sessions(this.#n.sessions())) }
  /** The task queue service (see lib/queue.js). */
  get queue () { this.#open(); return (this.#queue ??= new queueMod.Queue(this.#n.queue())) }
  metrics () { this.#open(); return JSON.parse(this.#n.metricsJson()) }
  /** Everything this process measures, now (pools, nodes, cache, locks, sessions, redis, scaling). */
  metricsSnapshot () { return JSON.parse(this.metricsText('json')) }
  /** The snapshot as text: 'prometheus' (default), 'openmetrics', 'json', 'html' or 'status_json'. */
  metricsText (format = 'prometheus') {
    this.#open()
    return sync(() => this.#n.metricsText(checkName(format, 'format')))
  }

  /** The HTTP content type of a metricsText format. */
  metricsContentType (format = 'prometheus') {
    return sync(() => this.#n.metricsContentType(checkName(format, 'format')))
  }

  /** The status page (HTML), titled `title` (default "clusterkit status"). */
  statusPage (title) {
    this.#open()
    if (title !== undefined && title !== null) checkName(title, 'title')
    return sync(() => this.#n.statusHtml(title ?? null))
  }

  /** The status page's JSON twin (the snapshot plus p50_us/p95_us per node and the cache's hit_rate). */
  statusJson () { return JSON.parse(this.metricsText('status_json')) }
  /** The latest recommendation of each configured scaling advisor (evaluated at each snapshot). */
  scalingAdvice () { this.#open(); return JSON.parse(sync(() => this.#n.scalingAdviceJson())) }
  /** Writes this process's snapshot to `dir` (one file per process) for aggregateMetrics elsewhere. */
  publishMetrics (dir) { this.#open(); sync(() => this.#n.publishMetrics(checkName(dir, 'dir'))) }
  /**
   * This process's snapshot plus those published in `dir` within `maxAge` ms (default 60 000),
   * as `format` (default 'json': returns the parsed snapshot; any other format: the text).
   */
  aggregateMetrics (dir, options = {}) {
    this.#open()
    checkName(dir, 'dir')
    if (options === null || typeof options !== 'object') throw invalid('options', 'must be an object')
    const maxAge = checkMs(options.maxAge, 'maxAge', true) ?? 60000
    const format = checkName(options.format ?? 'json', 'format')
    const text = sync(() => this.#n.aggregateMetricsText(dir, maxAge, format))
    return format === 'json' ? JSON.parse(text) : text
  }

  /**
   * A request handler serving the status page: HTML, or its JSON twin when the path ends in
   * `.json` or `/json` or the query has `format=json`. Mount it anywhere:
   * `app.use('/status', ck.statusHandler())` (Express) or call it from `http.createServer`.
   * Options: `title`; `aggregateDir` + `maxAge` (ms) to add up processes publishing there.
   */
  statusHandler (options = {}) {
    const o = handlerOptions(options)
    if (o.title !== undefined) checkName(o.title, 'title')
    return makeHandler((req) => {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const json = url.pathname.endsWith('.json') || url.pathname.endsWith('/json') || url.searchParams.get('format') === 'json'
      const format = json ? 'status_json' : 'html'
      if (o.aggregateDir !== undefined) return [format, this.aggregateMetrics(o.aggregateDir, { maxAge: o.maxAge, format })]
      return [format, json ? this.metricsText('status_json') : this.statusPage(o.title)]
    }, this)
  }

  /**
   * A request handler serving a scrape in `format` (default 'prometheus'); options like
   * statusHandler (`aggregateDir`, `maxAge`).
   */
  metricsHandler (format = 'prometheus', options = {}) {
    checkName(format, 'format')
    this.metricsContentType(format)
    const o = handlerOptions(options)
    return makeHandler(() => [format, o.aggregateDir !== undefined
      ? this.aggregateMetrics(o.aggregateDir, { maxAge: o.maxAge, format })
      : this.metricsText(format)], this)
  }

  /** Stops using this handle (later calls fail with `closed`). */
  close () { this.#closed = true }
}

function handlerOptions (options) {
  if (options === null || typeof options !== 'object') throw invalid('options', 'must be an object')
  const o = { title: options.title ?? undefined, aggregateDir: options.aggregateDir ?? undefined, maxAge: checkMs(options.maxAge, 'maxAge', true) }
  if (o.aggregateDir !== undefined) checkName(o.aggregateDir, 'aggregateDir')
  return o
}

/** (req, res, next?) for node:http, Express, Connect: GET/HEAD only; errors go to next or a 503. */
function makeHandler (render, ck) {
  return function clusterkitHandler (req, res, next) {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (typeof next === 'function') return next()
      res.statusCode = 405
      res.setHeader('Allow', 'GET, HEAD')
      res.end()
      return
    }
    let format, body
    try {
      [format, body] = render(req)
      if (format === 'json' && typeof body !== 'string') body = JSON.stringify(body)
    } catch (e) {
      if (typeof next === 'function') return next(e)
      res.statusCode = e instanceof ClusterkitError && e.code === 'unavailable' ? 503 : 500
      res.setHeader('Content-Type', 'text/plain; charset=utf-8')
      res.end(e instanceof ClusterkitError ? `${e.message}\n` : 'internal error\n')
      return
    }
    res.statusCode = 200
    res.setHeader('Content-Type', ck.metricsContentType(format))
    res.setHeader('Cache-Control', 'no-store')
    res.setHeader('Content-Length', Buffer.byteLength(body))
    res.end(req.method === 'HEAD' ? undefined : body)
  }
}

const LOG_LEVELS = ['off', 'error', 'warn', 'info', 'debug', 'trace']

/**
 * The library's log records (process-wide) as an EventEmitter: `logs.on('record', fn)` with
 * `logs.level` ('info' by default). Records are kept by the core only while a 'record'
 * listener exists and the level is not 'off' (otherwise logging costs nothing); they are
 * delivered every `intervalMs` (100) and on flush(). 'dropped' reports records lost because
 * the buffer (10 000) was full.
 */
class Logs extends EventEmitter {
  #level = 'info'
  #active = false
  #timer = null
  #intervalMs = 100
  #dropped = native.logDropped()
  constructor () {
    super()
    this.on('newListener', (ev) => { if (ev === 'record') this.#sync(1) })
    this.on('removeListener', (ev) => { if (ev === 'record') this.#sync(0) })
  }

  get level () { return this.#level }
  set level (level) { this.setLevel(level) }
  /** Sets the level (off, error, warn, info, debug, trace) and the delivery interval. */
  setLevel (level, options = {}) {
    checkName(level, 'level')
    if (!LOG_LEVELS.includes(level)) throw invalid('level', `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`)
    if (options === null || typeof options !== 'object') throw invalid('options', 'must be an object')
    const interval = checkMs(options.intervalMs, 'intervalMs', true)
    if (interval !== undefined) {
      if (interval < 1) throw invalid('intervalMs', 'must be >= 1')
      this.#intervalMs = interval
    }
    const was = this.#active
    if (was) this.flush()
    this.#level = level
    if (was) { this.#stop(); this.#sync(0) } else this.#sync(0)
    return this
  }

  /** True while the core keeps records for this emitter. */
  get active () { return this.#active }

  /** Delivers the buffered records now (synchronously); returns how many. */
  flush () {
    if (!this.#active) return 0
    let n = 0
    for (;;) {
      const batch = JSON.parse(native.logDrain(1000))
      for (const r of batch) this.emit('record', r)
      n += batch.length
      if (batch.length < 1000) break
    }
    const dropped = native.logDropped()
    if (dropped > this.#dropped) {
      const lost = dropped - this.#dropped
      this.#dropped = dropped
      this.emit('dropped', lost)
    }
    return n
  }

  #stop () {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
    this.#active = false
    sync(() => native.logSetLevel('off'))
  }

  #sync (adding) {
    const want = this.listenerCount('record') + adding > 0 && this.#level !== 'off'
    if (want && !this.#active) {
      sync(() => native.logSetLevel(this.#level))
      this.#active = true
      this.#dropped = native.logDropped()
      this.#timer = setInterval(() => this.flush(), this.#intervalMs)
      this.#timer.unref()
    } else if (!want && this.#active) {
      this.flush()
      this.#stop()
    }
  }
}

const logs = new Logs()

module.exports = {
  logs, Logs,
  Clusterkit, Pool, Pick, PoolEvents, Cache, Locks, Lock, Sessions, Session, ClusterkitError,
  Queue: queueMod.Queue, Consumer: queueMod.Consumer, Job: queueMod.Job, Worker: queueMod.Worker,
  ERROR_CODES: CODES,
  version: native.version(),
}
Object.defineProperty(module.exports, 'ClusterkitStore', {
  enumerable: true,
  get () { return require('./lib/store').ClusterkitStore },
})
