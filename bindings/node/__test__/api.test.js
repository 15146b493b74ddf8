'use strict'
// Every API of the binding on the embedded backend and on a real Redis, error codes, bad input.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const ck = require('..')
const { Clusterkit, Pool, ClusterkitError, ERROR_CODES } = ck
const { startRedis, redisConfig, sleep } = require('./helpers')

async function rejects (p, code) {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof ClusterkitError, `not a ClusterkitError: ${e}`)
    assert.ok(e instanceof Error)
    assert.equal(e.code, code, e.message)
    return true
  })
}
function throws (fn, code) {
  assert.throws(fn, (e) => { assert.equal(e.code, code, e.message); return e instanceof Error })
}

test('deployment from nothing, object, JSON, TOML, file; bad documents name the field', () => {
  assert.deepEqual(Clusterkit.embedded().poolNames, [])
  const doc = { pools: { app: { strategy: 'round_robin', nodes: [{ id: 'w1', host: '127.0.0.1', port: 8081 }, { id: 'w2', host: '127.0.0.1', port: 8082 }] } } }
  assert.deepEqual(new Clusterkit(doc).poolNames, ['app'])
  assert.deepEqual(Clusterkit.fromJSON(JSON.stringify(doc)).poolNames, ['app'])
  const toml = '[pools.app]\nstrategy = "p2c"\nnodes = [ { id = "w1", host = "127.0.0.1", port = 8081 } ]\n'
  assert.equal(Clusterkit.fromTOML(toml).pool('app').strategy, 'p2c')
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-'))
  const file = path.join(tmp, 'clusterkit.toml')
  try {
  fs.writeFileSync(file, toml)
  assert.deepEqual(Clusterkit.fromFile(file).poolNames, ['app'])
  throws(() => Clusterkit.fromFile(file + '.missing'), 'not_found')
  } finally { fs.rmSync(tmp, { recursive: true, force: true }) }
  throws(() => new Clusterkit({ pools: { app: { nodes: [{ id: 'w1', host: '127.0.0.1', port: 0 }] } } }), 'invalid_argument')
  assert.throws(() => new Clusterkit({ pools: { app: { nodes: [{ id: 'w1', host: 'h', port: 0 }] } } }), /port/)
  throws(() => new Clusterkit('[[[ not toml'), 'invalid_argument')
  throws(() => new Clusterkit(42), 'invalid_argument')
  throws(() => new Clusterkit(doc).pool('nope'), 'not_found')
  const c = Clusterkit.embedded(); c.close()
  throws(() => c.cache, 'closed')
  assert.deepEqual([...ERROR_CODES].sort(), ['backend', 'closed', 'conflict', 'internal', 'invalid_argument', 'not_found', 'timeout', 'unavailable'])
  assert.match(ck.version, /^\d+\.\d+\.\d+/)
})

test('pools node by node: picks, success/failure, health, weights, metrics', () => {
  const p = new Pool('app', { strategy: 'weighted_round_robin' })
  p.add({ id: 'a', host: '127.0.0.1', port: 1, weight: 3, zone: 'z1', metadata: { role: 'web' } })
  p.add({ id: 'b', host: '127.0.0.1', port: 2 })
  assert.equal(p.size, 2)
  throws(() => p.add({ id: 'a', host: 'h', port: 3 }), 'conflict')
  throws(() => p.add({ id: 'c', host: 'h', port: 70000 }), 'invalid_argument')
  throws(() => p.add({ id: 'c', host: 'h' }), 'invalid_argument')
  throws(() => p.add(null), 'invalid_argument')
  const counts = { a: 0, b: 0 }
  for (let i = 0; i < 400; i++) {
    const pick = p.pick()
    counts[pick.nodeId]++
    assert.equal(pick.address, `127.0.0.1:${pick.port}`)
    if (i % 2) pick.success(1.5); else pick.failure()
  }
  assert.equal(counts.a, 300)
  assert.equal(counts.b, 100)
  const pick = p.pick()
  assert.equal(p.nodes().find((n) => n.id === pick.nodeId).in_flight, 1)
  pick.success(2)
  throws(() => pick.success(2), 'closed')
  throws(() => p.pick().success(-1), 'invalid_argument')
  p.setHealth('a', 'draining', 'deploy')
  assert.equal(p.healthyCount, 1)
  for (let i = 0; i < 10; i++) { const k = p.pick(); assert.equal(k.nodeId, 'b'); k.release() }
  throws(() => p.setHealth('a', 'sleepy'), 'invalid_argument')
  throws(() => p.setHealth('zz', 'healthy'), 'not_found')
  p.setHealth('a', 'healthy')
  p.setWeight('b', 5)
  throws(() => p.setWeight('b', 0), 'invalid_argument')
  const a = p.nodes().find((n) => n.id === 'a')
  assert.equal(a.zone, 'z1'); assert.deepEqual(a.metadata, { role: 'web' })
  assert.equal(p.metrics().total, 2)
  p.remove('b')
  throws(() => p.remove('b'), 'not_found')
  const ring = new Pool('ring', { strategy: 'ketama' })
  for (let i = 0; i < 5; i++) ring.add({ id: `n${i}`, host: '127.0.0.1', port: 7000 + i })
  const owner = ring.pick('user:42').nodeId
  for (let i = 0; i < 20; i++) assert.equal(ring.pick('user:42').nodeId, owner)
  assert.equal(ring.pick(Buffer.from('user:42')).nodeId, owner)
  throws(() => new Pool('x', { strategy: 'fastest' }), 'invalid_argument')
  throws(() => new Pool('empty').pick(), 'unavailable')
  throws(() => ring.pick(12), 'invalid_argument')
})

test('pool events: async iterator and EventEmitter', async () => {
  const p = new Pool('ev')
  const ev = p.events({ pollMs: 50 })
  const emitted = []
  ev.on('event', (e) => emitted.push(e.kind))
  const health = []
  ev.on('health_changed', (e) => health.push(e))
  const it = ev[Symbol.asyncIterator]()
  p.add({ id: 'a', host: '127.0.0.1', port: 1 })
  p.setHealth('a', 'unhealthy', 'maintenance')
  p.remove('a')
  const first = await it.next()
  assert.equal(first.value.kind, 'added')
  assert.equal((await it.next()).value.kind, 'health_changed')
  const deadline = Date.now() + 5000
  while (!emitted.includes('removed') && Date.now() < deadline) await sleep(10)
  assert.ok(emitted.includes('removed'), emitted.join())
  assert.equal(health[0].message, 'maintenance')
  assert.equal(health[0].new_health, 'unhealthy')
  ev.close()
  assert.equal((await it.next()).done, true)
  // for await ... of ends on close
  const ev2 = p.events({ pollMs: 20 })
  p.add({ id: 'b', host: '127.0.0.1', port: 2 })
  for await (const e of ev2) { assert.equal(e.kind, 'added'); break }
})

async function cacheSuite (c) {
  await c.clear()
  assert.equal(await c.get('missing'), null)
  await c.set('s', 'héllo')
  assert.equal(await c.getString('s'), 'héllo')
  assert.ok((await c.get('s')).equals(Buffer.from('héllo')))
  const bin = Buffer.from([0, 255, 1, 254])
  await c.set(Buffer.from([1, 2]), bin)
  assert.ok((await c.get(Buffer.from([1, 2]))).equals(bin))
  await c.set('u8', new Uint8Array([7, 8]))
  assert.deepEqual([...(await c.get('u8'))], [7, 8])
  assert.equal(await c.add('s', 'x'), false)
  assert.equal(await c.add('new', 'x', 1000), true)
  assert.equal(await c.has('new'), true)
  assert.equal(await c.delete('new'), true)
  assert.equal(await c.delete('new'), false)
  assert.equal(await c.has('new'), false)
  await c.set('t', 'v', 5000)
  const ttl = await c.ttl('t')
  assert.ok(ttl > 4000 && ttl <= 5000, String(ttl))
  assert.equal(await c.ttl('s'), -1)
  assert.equal(await c.ttl('nope'), null)
  await c.set('short', 'v', 30)
  await sleep(80)
  assert.equal(await c.get('short'), null)
  await c.set('s', 'v', 0)
  assert.equal(await c.get('s'), null)
  await c.setMany({ a: '1', b: '2' }, 10000)
  await c.setMany(new Map([['c', Buffer.from('3')]]))
  await c.setMany([['d', '4']])
  assert.deepEqual((await c.getMany(['a', 'b', 'c', 'd', 'zz'])).map((v) => v && String(v)), ['1', '2', '3', '4', null])
  assert.deepEqual(await c.getMany([]), [])
  assert.equal(await c.deleteMany(['a', 'b', 'zz']), 2)
  assert.equal(await c.incr('n'), 1)
  assert.equal(await c.incr('n', 41), 42)
  assert.equal(await c.decr('n', 2), 40)
  await c.set('text', 'abc')
  await rejects(c.incr('text'), 'backend')
  let runs = 0
  const compute = async () => { runs++; await sleep(30); return 'made' }
  const vals = await Promise.all(Array.from({ length: 20 }, () => c.getOrCompute('gc', 10000, compute)))
  assert.ok(vals.every((v) => String(v) === 'made'))
  assert.equal(runs, 1)
  assert.equal(String(await c.getOrCompute('gc', 10000, () => { throw new Error('not called') })), 'made')
  assert.equal(String(await c.getOrCompute('gc-sync', 1000, () => Buffer.from('sync'))), 'sync')
  const mine = new Error('compute failed here')
  await assert.rejects(c.getOrCompute('gc-err', 1000, async () => { throw mine }), (e) => e === mine)
  await rejects(c.getOrCompute('gc-bad', 1000, async () => 42), 'invalid_argument')
  await rejects(c.getOrCompute('gc-bad', 1000, 'nope'), 'invalid_argument')
  // bad input: wrong types, invalid keys, huge values and TTLs
  await rejects(c.get(''), 'invalid_argument')
  await rejects(c.get('x'.repeat(100000)), 'invalid_argument')
  await rejects(c.set('k', 'v', 1e300), 'invalid_argument')
  await rejects(c.set('k', 'v', -5), 'invalid_argument')
  await rejects(c.set('k', 'v', NaN), 'invalid_argument')
  await rejects(c.set('k', 'v', 101 * 365 * 86400000), 'invalid_argument')
  await rejects(c.set('k', 'v', 1e16), 'invalid_argument')
  await rejects(c.set('k', Buffer.alloc(17 * 1024 * 1024)), 'invalid_argument') // over the 16 MiB default limit
  await rejects(c.set('k', 12), 'invalid_argument')
  await rejects(c.set({}, 'v'), 'invalid_argument')
  await rejects(c.get(null), 'invalid_argument')
  await rejects(c.getMany('a'), 'invalid_argument')
  await rejects(c.getMany(['a', 3]), 'invalid_argument')
  await rejects(c.setMany(null), 'invalid_argument')
  await rejects(c.incr('n', 1.5), 'invalid_argument')
  await rejects(c.add('k', 'v', 0), 'invalid_argument')
  assert.ok((await c.clear()) >= 1)
  assert.equal(await c.get('gc'), null)
}

test('cache on the embedded backend', async () => { await cacheSuite(Clusterkit.embedded().cache) })

test('cache on a real Redis', async (t) => {
  const r = await startRedis(t)
  const dep = new Clusterkit(redisConfig(r.port))
  assert.equal(dep.cache.namespace, 'cknode')
  await cacheSuite(dep.cache)
  const m = dep.metrics()
  assert.ok(m.cache.hits > 0 && m.cache.misses > 0 && m.cache.writes > 0, JSON.stringify(m))
})

async function lockSuite (locks) {
  const a = await locks.acquire('job', { ttl: 2000 })
  assert.equal(a.name, 'job')
  assert.ok(a.isHeld)
  assert.ok(a.validFor > 1000 && a.validFor <= 2000)
  await rejects(locks.acquire('job', { ttl: 1000 }), 'conflict')
  await rejects(locks.acquire('job', { ttl: 1000, wait: 100 }), 'timeout')
  await a.extend(5000)
  assert.ok(a.validFor > 4000)
  const waiter = locks.acquire('job', { ttl: 1000, wait: 5000 })
  await sleep(50)
  await a.release()
  assert.equal(a.isHeld, false)
  const b = await waiter
  assert.ok(b.fencingToken > a.fencingToken, `${b.fencingToken} > ${a.fencingToken}`)
  await rejects(a.release(), 'closed')
  await b[Symbol.asyncDispose]()
  await b[Symbol.asyncDispose]()
  // lost: the validity runs out; the AbortSignal fires
  const short = await locks.acquire('short', { ttl: 100 })
  const sig = short.signal
  await new Promise((resolve) => sig.addEventListener('abort', resolve))
  assert.equal(sig.reason.code, 'conflict')
  // expired: releasing is refused (conflict) or finds nothing to release, never an error of another kind
  await short.release().catch((e) => assert.equal(e.code, 'conflict'))
  assert.equal(short.isHeld, false)
  // auto-renewal keeps it past its TTL; released, the signal does not fire
  const renewed = await locks.acquire('renewed', { ttl: 150, autoRenew: true })
  const rs = renewed.signal
  await sleep(500)
  assert.ok(renewed.isHeld)
  assert.equal(rs.aborted, false)
  await renewed.release()
  await sleep(20)
  assert.equal(rs.aborted, false)
  // withLock
  const out = await locks.withLock('scoped', { ttl: 1000 }, async (signal, lock) => {
    assert.equal(signal.aborted, false)
    await rejects(locks.acquire('scoped', { ttl: 1000 }), 'conflict')
    return lock.fencingToken
  })
  assert.ok(out >= 1)
  const again = await locks.acquire('scoped', { ttl: 1000 })
  await again.release()
  // fencing: false (issue #18): no token (not_found naming the option), still exclusive,
  // fenced tokens keep increasing around it
  const fenced = await locks.acquire('nofence', { ttl: 1000 })
  assert.equal(fenced.hasFencingToken, true)
  const first = fenced.fencingToken
  await fenced.release()
  const plain = await locks.acquire('nofence', { ttl: 1000, fencing: false })
  assert.equal(plain.hasFencingToken, false)
  assert.ok(plain.isHeld)
  assert.throws(() => plain.fencingToken, (e) => e.code === 'not_found' && /fencing = false/.test(e.message) && /nofence/.test(e.message))
  await rejects(locks.acquire('nofence', { ttl: 1000 }), 'conflict')
  await rejects(locks.acquire('nofence', { ttl: 1000, fencing: false }), 'conflict')
  await plain.release()
  const after = await locks.acquire('nofence', { ttl: 1000, fencing: true })
  assert.ok(after.fencingToken > first)
  await after.release()
  await rejects(locks.acquire('nofence', { ttl: 1000, fencing: 'no' }), 'invalid_argument')
  // bad input
  await rejects(locks.acquire('', { ttl: 1000 }), 'invalid_argument')
  await rejects(locks.acquire('x'.repeat(5000), { ttl: 1000 }), 'invalid_argument')
  await rejects(locks.acquire('x', { ttl: 0 }), 'invalid_argument')
  await rejects(locks.acquire('x', { ttl: 2 * 86400000 }), 'invalid_argument')
  await rejects(locks.acquire('x', {}), 'invalid_argument')
  await rejects(locks.acquire('x'), 'invalid_argument')
  await rejects(locks.acquire(5, { ttl: 10 }), 'invalid_argument')
  await rejects(locks.acquire('x', { ttl: 10, wait: -1 }), 'invalid_argument')
}

test('locks on the embedded backend', async () => { await lockSuite(Clusterkit.embedded().locks) })

test('locks on a real Redis', async (t) => {
  const r = await startRedis(t)
  await lockSuite(new Clusterkit(redisConfig(r.port)).locks)
})

async function sessionSuite (sessions) {
  await sessions.clear()
  const s = sessions.create()
  assert.equal(s.id.length, 32)
  assert.equal(s.isNew, true)
  s.set('user', 'ada')
  s.setJSON('cart', { items: [1, 2] })
  s.set('bin', Buffer.from([0, 1]))
  await sessions.save(s)
  assert.equal(s.isNew, false)
  const l = await sessions.load(s.id)
  assert.equal(l.getString('user'), 'ada')
  assert.deepEqual(l.getJSON('cart'), { items: [1, 2] })
  assert.deepEqual([...l.get('bin')], [0, 1])
  assert.deepEqual(l.keys().sort(), ['bin', 'cart', 'user'])
  assert.ok(l.createdAt <= Date.now())
  // delta saves: two loads change different fields, neither is lost
  const x = await sessions.load(s.id)
  const y = await sessions.load(s.id)
  x.set('a', '1'); y.set('b', '2'); y.remove('user')
  await sessions.save(x); await sessions.save(y)
  const z = await sessions.load(s.id)
  assert.equal(z.getString('a'), '1'); assert.equal(z.getString('b'), '2'); assert.equal(z.get('user'), null)
  assert.equal(await sessions.touch(s.id), true)
  assert.deepEqual(await sessions.ids(), [s.id])
  // locked load
  const locked = await sessions.loadLocked(s.id)
  locked.set('c', '3')
  await sessions.save(locked)
  const relock = await sessions.loadLocked(s.id)
  await sessions.unlock(relock)
  // regenerate
  const old = s.id
  const r = await sessions.load(old)
  await sessions.regenerate(r)
  assert.notEqual(r.id, old)
  assert.equal(await sessions.load(old), null)
  assert.equal((await sessions.load(r.id)).getString('c'), '3')
  // createWithId (framework ids)
  const fid = 'abcdefghijklmnopqrstuvwxyz-_0123'
  const f = sessions.createWithId(fid)
  f.set('k', 'v')
  await sessions.save(f)
  assert.equal((await sessions.load(fid)).getString('k'), 'v')
  assert.equal((await sessions.ids()).length, 2)
  assert.equal(await sessions.destroy(fid), true)
  assert.equal(await sessions.destroy(fid), false)
  assert.equal(await sessions.load('short'), null)
  assert.equal(await sessions.load('../../etc/passwd'), null)
  assert.equal(await sessions.touch('nope'), false)
  throws(() => sessions.createWithId('bad id'), 'invalid_argument')
  await rejects(sessions.load(42), 'invalid_argument')
  await rejects(sessions.save({}), 'invalid_argument')
  throws(() => r.set('k', 5), 'invalid_argument')
  const gone = await sessions.load(r.id)
  await sessions.destroy(r.id)
  gone.set('x', '1')
  await rejects(sessions.save(gone), 'not_found')
  assert.equal(await sessions.clear(), 0)
}

test('sessions on the embedded backend', async () => { await sessionSuite(Clusterkit.embedded().sessions) })

test('sessions on a real Redis', async (t) => {
  const r = await startRedis(t)
  await sessionSuite(new Clusterkit(redisConfig(r.port)).sessions)
})

test('a stopped Redis gives unavailable or timeout, never a hang or a crash', async (t) => {
  const r = await startRedis(t)
  const dep = new Clusterkit(redisConfig(r.port, 'down'))
  await dep.cache.set('k', 'v')
  r.stop()
  await assert.rejects(dep.cache.get('k'), (e) => ['unavailable', 'timeout'].includes(e.code) && !e.message.includes('v\n'))
  await assert.rejects(dep.locks.acquire('x', { ttl: 1000 }), (e) => ['unavailable', 'timeout'].includes(e.code))
})
