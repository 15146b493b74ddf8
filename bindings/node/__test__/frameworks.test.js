'use strict'
// The session store with the real frameworks over real HTTP: two express-session app
// instances (and two @fastify/session ones) sharing one Redis; the store contract.
const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const path = require('node:path')
const { Clusterkit, ClusterkitStore } = require('..')
const { startRedis, redisConfig, sleep } = require('./helpers')

const express = require('express')
const expressSession = require('express-session')

function request (port, urlPath, cookie) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, headers: cookie ? { cookie } : {} }, (res) => {
      let body = ''
      res.on('data', (d) => { body += d })
      res.on('end', () => {
        const set = res.headers['set-cookie']
        resolve({ status: res.statusCode, body, cookie: set ? set[0].split(';')[0] : null })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

function listen (server) {
  return new Promise((resolve) => { const s = server.listen(0, '127.0.0.1', () => resolve(s)) })
}

function expressApp (config, name) {
  const app = express()
  const store = new ClusterkitStore({ clusterkit: new Clusterkit(config), expressSession })
  app.use(expressSession({ secret: 'test-secret', store, resave: false, saveUninitialized: false, cookie: { maxAge: 60000 } }))
  app.get('/count', (req, res) => { req.session.count = (req.session.count || 0) + 1; res.json({ app: name, count: req.session.count }) })
  app.get('/read', (req, res) => res.json({ app: name, count: req.session.count ?? null }))
  app.get('/logout', (req, res) => req.session.destroy((err) => res.json({ ok: !err })))
  app.get('/regen', (req, res) => { const c = req.session.count; req.session.regenerate((err) => { req.session.count = c; res.json({ ok: !err }) }) })
  return { app, store }
}

test('express-session: two app instances share sessions through one Redis', async (t) => {
  const r = await startRedis(t)
  const config = redisConfig(r.port, 'express')
  const a = expressApp(config, 'a'); const b = expressApp(config, 'b')
  const sa = await listen(http.createServer(a.app)); const sb = await listen(http.createServer(b.app))
  t.after(() => { sa.close(); sb.close() })
  const pa = sa.address().port; const pb = sb.address().port
  const first = await request(pa, '/count')
  assert.equal(JSON.parse(first.body).count, 1)
  assert.ok(first.cookie, 'a session cookie')
  let cookie = first.cookie
  for (let i = 2; i <= 6; i++) {
    const res = await request(i % 2 ? pa : pb, '/count', cookie)
    assert.deepEqual(JSON.parse(res.body), { app: i % 2 ? 'a' : 'b', count: i })
  }
  assert.equal(JSON.parse((await request(pb, '/read', cookie)).body).count, 6)
  assert.equal(await a.store.length(), 1)
  const all = await b.store.all()
  assert.equal(Object.values(all)[0].count, 6)
  const regen = await request(pa, '/regen', cookie)
  assert.ok(regen.cookie && regen.cookie !== cookie)
  assert.equal(JSON.parse((await request(pb, '/read', cookie)).body).count, null, 'the old id stops working')
  cookie = regen.cookie
  assert.equal(JSON.parse((await request(pb, '/read', cookie)).body).count, 6)
  await request(pb, '/logout', cookie)
  assert.equal(JSON.parse((await request(pa, '/read', cookie)).body).count, null)
  assert.equal(await a.store.length(), 0)
  // no session without a change (saveUninitialized: false)
  const anon = await request(pa, '/read')
  assert.equal(anon.cookie, null)
})

test('store contract (as connect-redis tests it): get/set/touch/destroy/all/length/ids/clear, ttl', async (t) => {
  const r = await startRedis(t)
  const store = new ClusterkitStore({ clusterkit: new Clusterkit(redisConfig(r.port, 'contract')), expressSession })
  const sid = 'AbCdEfGhIjKlMnOpQrStUvWxYz012345'
  assert.equal(await store.get(sid), null)
  await new Promise((resolve, reject) => store.get(sid, (err, s) => err ? reject(err) : (assert.ok(s === null || s === undefined, "a miss is no session, not an error"), resolve())))
  await store.set(sid, { cookie: { maxAge: 2000 }, name: 'ada', n: 1 })
  assert.deepEqual(await store.get(sid), { cookie: { maxAge: 2000 }, name: 'ada', n: 1 })
  await store.set(sid, { cookie: { maxAge: 2000 }, name: 'ada', n: 2 })
  assert.equal((await store.get(sid)).n, 2)
  await new Promise((resolve, reject) => store.touch(sid, { cookie: { maxAge: 2000 } }, (e) => e ? reject(e) : resolve()))
  assert.deepEqual(await store.ids(), [sid])
  assert.equal(await store.length(), 1)
  assert.equal(Object.keys(await store.all()).length, 1)
  // ttl from cookie.expires; a past expiry (non-positive ttl) destroys
  await store.set(sid, { cookie: { expires: new Date(Date.now() - 1000) }, name: 'gone' })
  assert.equal(await store.get(sid), null)
  assert.equal(await store.length(), 0)
  await store.set(sid, { cookie: { expires: new Date(Date.now() + 150) }, name: 'soon' })
  assert.equal((await store.get(sid)).name, 'soon')
  await sleep(300)
  assert.equal(await store.get(sid), null, 'expired by cookie.expires')
  // a malformed id is a miss, never an error
  assert.equal(await store.get('not-a-session-id'), null)
  await store.destroy('not-a-session-id')
  const other = new ClusterkitStore({ clusterkit: new Clusterkit(redisConfig(r.port, 'contract')) })
  await store.set(sid, { cookie: { maxAge: 60000 }, a: 1 })
  await other.set('BbCdEfGhIjKlMnOpQrStUvWxYz012345', { cookie: { maxAge: 60000 }, b: 2 })
  assert.equal(await store.length(), 2)
  await store.clear()
  assert.equal(await other.length(), 0)
  // delta saves: two app instances change different properties of one session at once
  const sid2 = 'CbCdEfGhIjKlMnOpQrStUvWxYz012345'
  await store.set(sid2, { cookie: { maxAge: 60000 }, a: 0, b: 0 })
  const [s1, s2] = [await store.get(sid2), await other.get(sid2)]
  s1.a = 1; s2.b = 2
  await Promise.all([store.set(sid2, s1), other.set(sid2, s2)])
  const merged = await store.get(sid2)
  assert.equal(merged.a, 1, 'the first instance\'s change survived')
  assert.equal(merged.b, 2, 'the second instance\'s change survived')
  // errors reach the callback
  r.stop()
  await new Promise((resolve) => store.get(sid, (err) => { assert.ok(['unavailable', 'timeout'].includes(err.code), String(err)); resolve() }))
})

test('@fastify/session accepts the same store: two instances share one Redis', async (t) => {
  const r = await startRedis(t)
  const config = redisConfig(r.port, 'fastify')
  const Fastify = require('fastify')
  const make = async (name) => {
    const f = Fastify()
    await f.register(require('@fastify/cookie'))
    await f.register(require('@fastify/session'), {
      secret: 'a secret with minimum length of 32 characters',
      store: new ClusterkitStore({ clusterkit: new Clusterkit(config) }),
      cookie: { secure: false, maxAge: 60000 },
      saveUninitialized: false,
    })
    f.get('/count', async (req) => { const c = (req.session.get('count') || 0) + 1; req.session.set('count', c); return { app: name, count: c } })
    await f.listen({ port: 0, host: '127.0.0.1' })
    t.after(() => f.close())
    return f.server.address().port
  }
  const pa = await make('a'); const pb = await make('b')
  const first = await request(pa, '/count')
  assert.equal(JSON.parse(first.body).count, 1)
  const cookie = first.cookie
  assert.ok(cookie)
  assert.deepEqual(JSON.parse((await request(pb, '/count', cookie)).body), { app: 'b', count: 2 })
  assert.deepEqual(JSON.parse((await request(pa, '/count', cookie)).body), { app: 'a', count: 3 })
})

test('npm install <abs path>/bindings/node from another folder builds the addon; require works there', { timeout: 600000 }, async () => {
  const { execFileSync } = require('node:child_process')
  const fs = require('node:fs'); const os = require('node:os')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-npm-install-'))
  try {
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
    execFileSync('npm', ['install', '--no-audit', '--no-fund', path.resolve(__dirname, '..')], { cwd: dir, stdio: 'pipe', env: process.env })
    const out = execFileSync(process.execPath, ['-e', `
      const { Clusterkit } = require('clusterkit')
      const c = Clusterkit.embedded().cache
      c.set('k', 'installed').then(() => c.getString('k')).then((v) => console.log(v))
    `], { cwd: dir, encoding: 'utf8' })
    assert.equal(out.trim(), 'installed')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
