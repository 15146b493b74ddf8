'use strict'
// etcd discovery and locks (issue #17) through the config document alone: the binding has no
// etcd logic, the core does it. Runs a private 3-member etcd (scripts/etcd-cluster).
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Clusterkit } = require('..')
const { sleep } = require('./helpers')

const script = path.join(__dirname, '..', '..', '..', 'scripts', 'etcd-cluster')

function etcdctl (eps, ...args) {
  return execFileSync('etcdctl', [`--endpoints=${eps.join(',')}`, '--command-timeout=5s', ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    encoding: 'utf8'
  })
}

async function until (what, check, ms = 20000) {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(20)
  }
}

test('etcd discovery and locks from the config document', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-etcd-node-'))
  const eps = execFileSync(script, ['start', path.join(dir, 'c')], { encoding: 'utf8' }).trim().split(',')
  t.after(() => {
    execFileSync(script, ['stop', path.join(dir, 'c')])
    fs.rmSync(dir, { recursive: true, force: true })
  })
  const lease = etcdctl(eps, 'lease', 'grant', '60').split(/\s+/)[1]
  etcdctl(eps, 'put', `--lease=${lease}`, '/node/web/n1', '{"id":"n1","host":"127.0.0.1","port":8001}')
  etcdctl(eps, 'put', '/node/web/junk', '{not json')
  const ck = new Clusterkit({
    pools: { web: { strategy: 'round_robin', discovery: { etcd: { endpoints: eps, prefix: '/node/web/', ttl: '2s' } } } },
    locks: { etcd: { endpoints: eps, prefix: '/node/locks/' } }
  })
  const web = ck.pool('web')
  await until('n1 discovered', () => web.size === 1)
  assert.deepEqual(web.nodes().map((n) => n.id), ['n1'])

  // Locks: the same API as on Redis; the fencing token is etcd's create revision.
  const a = await ck.locks.acquire('job', { ttl: 5000 })
  assert.ok(a.isHeld && a.fencingToken > 0)
  await assert.rejects(ck.locks.acquire('job', { ttl: 1000 }), (e) => e.code === 'conflict')
  assert.match(etcdctl(eps, 'get', '--prefix', '/node/locks/', '--keys-only'), /\/node\/locks\/job\//)
  assert.ok(!etcdctl(eps, 'get', '--prefix', '/node/locks/').includes(a.token))
  const waiter = ck.locks.acquire('job', { ttl: 5000, wait: 10000 })
  await sleep(200)
  await a.release()
  const b = await waiter
  assert.ok(b.fencingToken > a.fencingToken, `${b.fencingToken} > ${a.fencingToken}`)
  await b.release()
  assert.equal(etcdctl(eps, 'get', '--prefix', '/node/locks/', '--keys-only').trim(), '')

  // The node's lease is revoked (its process died): it leaves the pool.
  etcdctl(eps, 'lease', 'revoke', lease)
  await until('n1 gone after its lease', () => web.size === 0)

  assert.throws(() => new Clusterkit({ locks: { etcd: { endpoints: ['nohost'] } } }),
    (e) => e.code === 'invalid_argument' && e.message.includes('locks.etcd.endpoints[0]'))
  assert.throws(() => new Clusterkit({ locks: { etcd: { endpoints: ['127.0.0.1:1'], user: 'u', password: 's3cr3t-etcd', password_env: 'X' } } }),
    (e) => e.code === 'invalid_argument' && e.message.includes('password') && !e.message.includes('s3cr3t-etcd'))
})
