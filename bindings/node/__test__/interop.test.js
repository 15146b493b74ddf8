'use strict'
// Interop: a cache value, a held lock (and its fencing token) and a session written from
// another language are seen identically from Node, and the reverse. Each other language is a
// "leg" that runs a small script in its own process against the same Redis and config; PHP
// today (bindings/php over the C ABI, the library staged by scripts/stage-lib). A Python leg
// is added to LEGS the same way when the Python binding lands.
const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const path = require('node:path')
const readline = require('node:readline')
const { Clusterkit } = require('..')
const { startRedis, redisConfig } = require('./helpers')

const root = path.resolve(__dirname, '../../..')

function stagedLib () {
  if (process.env.CLUSTERKIT_LIB) return process.env.CLUSTERKIT_LIB
  const prefix = execFileSync(path.join(root, 'scripts/stage-lib'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()
  return path.join(prefix, 'lib/libclusterkit.so.1')
}

// A PHP process reading commands (one JSON per line) and answering one JSON per line.
const PHP_SERVER = `
require ${JSON.stringify(path.join(root, 'bindings/php/autoload.php'))};
use Clusterkit\\ClusterManager;
$ck = new ClusterManager(getenv('CK_CONFIG'));
$cache = $ck->cache();
$held = [];
while (($line = fgets(STDIN)) !== false) {
  $c = json_decode($line, true);
  try {
    switch ($c['op']) {
      case 'cache_set': $cache->setRaw($c['key'], base64_decode($c['value'])); $r = true; break;
      case 'cache_get': $v = $cache->getRaw($c['key']); $r = $v === null ? null : base64_encode($v); break;
      case 'lock': $l = $ck->locks()->tryAcquire($c['name'], 30.0); if ($l) { $held[$c['name']] = $l; $r = $l->fencingToken(); } else { $r = null; } break;
      case 'unlock': $held[$c['name']]->release(); unset($held[$c['name']]); $r = true; break;
      case 'session_create': $s = $ck->createSession(); foreach ($c['fields'] as $k => $v) { $s->setRaw($k, $v); } $s->save(); $r = $s->id(); break;
      case 'session_get': $s = $ck->loadSession($c['id']); $r = null; if ($s) { $r = []; foreach ($s->keys() as $k) { $r[$k] = $s->getRaw($k); } } break;
      default: throw new Exception('unknown op');
    }
    echo json_encode(['ok' => true, 'r' => $r]), "\\n";
  } catch (Throwable $e) {
    echo json_encode(['ok' => false, 'error' => get_class($e) . ': ' . $e->getMessage()]), "\\n";
  }
}
`

function phpLeg (config, lib) {
  const proc = spawn('php', ['-d', 'ffi.enable=1', '-r', PHP_SERVER], { env: { ...process.env, CK_CONFIG: JSON.stringify(config), CLUSTERKIT_LIB: lib }, stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: proc.stdout })
  const waiting = []
  lines.on('line', (l) => waiting.shift()?.(l))
  return {
    name: 'php',
    call (op, args = {}) {
      return new Promise((resolve, reject) => {
        waiting.push((l) => { const m = JSON.parse(l); m.ok ? resolve(m.r) : reject(new Error(m.error)) })
        proc.stdin.write(JSON.stringify({ op, ...args }) + '\n')
      })
    },
    close () { proc.stdin.end(); proc.kill() },
  }
}

const LEGS = [phpLeg]

test('interop: cache value, held lock + fencing token and session, other languages <-> Node', { timeout: 300000 }, async (t) => {
  const lib = stagedLib()
  const r = await startRedis(t)
  const config = redisConfig(r.port, 'interop')
  const node = new Clusterkit(config)
  for (const make of LEGS) {
    const leg = make(config, lib)
    t.after(() => leg.close())
    const bytes = Buffer.from([0, 1, 2, 255, 0x41])
    // written there, seen here
    await leg.call('cache_set', { key: `from-${leg.name}`, value: bytes.toString('base64') })
    assert.ok((await node.cache.get(`from-${leg.name}`)).equals(bytes))
    // written here, seen there
    await node.cache.set('from-node', bytes)
    assert.equal(await leg.call('cache_get', { key: 'from-node' }), bytes.toString('base64'))
    // a lock held there is held here; the next holder's fencing token is larger
    const theirFence = await leg.call('lock', { name: 'shared-lock' })
    assert.ok(theirFence >= 1)
    await assert.rejects(node.locks.acquire('shared-lock', { ttl: 1000 }), (e) => e.code === 'conflict')
    await leg.call('unlock', { name: 'shared-lock' })
    const mine = await node.locks.acquire('shared-lock', { ttl: 5000 })
    assert.ok(mine.fencingToken > theirFence)
    assert.equal(await leg.call('lock', { name: 'shared-lock' }), null, 'held by Node: refused there')
    await mine.release()
    const theirs = await leg.call('lock', { name: 'shared-lock' })
    assert.ok(theirs > mine.fencingToken)
    await leg.call('unlock', { name: 'shared-lock' })
    // sessions both ways (raw field values)
    const sid = await leg.call('session_create', { fields: { user: 'ada', role: 'admin' } })
    const s = await node.sessions.load(sid)
    assert.equal(s.getString('user'), 'ada')
    assert.equal(s.getString('role'), 'admin')
    const mineS = node.sessions.create()
    mineS.set('user', 'grace'); mineS.set('lang', 'node')
    await node.sessions.save(mineS)
    assert.deepEqual(await leg.call('session_get', { id: mineS.id }), { user: 'grace', lang: 'node' })
  }
})
