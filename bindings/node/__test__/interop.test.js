'use strict'
// Interop: a cache value, a held lock (and its fencing token) and a session written from
// another language are seen identically from Node, and the reverse. Each other language is a
// "leg" that runs a small script in its own process against the same Redis and config: PHP
// (bindings/php over the C ABI, the library staged by scripts/stage-lib) and Python (the
// package installed by `pip install ./bindings/python`: the interpreter in CLUSTERKIT_PYTHON,
// which run-tests provides).
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

// A Python process speaking the same line protocol as PHP_SERVER.
const PYTHON_SERVER = `
import base64, json, os, sys
import clusterkit
ck = clusterkit.Clusterkit(json.loads(os.environ["CK_CONFIG"]))
held = {}
while True:
    line = sys.stdin.readline()
    if not line:
        break
    c = json.loads(line)
    try:
        op = c["op"]
        if op == "cache_set":
            ck.cache.set(c["key"], base64.b64decode(c["value"]))
            r = True
        elif op == "cache_get":
            v = ck.cache.get(c["key"])
            r = None if v is None else base64.b64encode(v).decode()
        elif op == "lock":
            lk = ck.locks.try_acquire(c["name"], 30)
            r = None
            if lk is not None:
                held[c["name"]] = lk
                r = lk.fencing_token
        elif op == "unlock":
            held.pop(c["name"]).release()
            r = True
        elif op == "session_create":
            s = ck.sessions.create()
            for k, v in c["fields"].items():
                s[k] = v.encode()
            s.save()
            r = s.id
        elif op == "session_get":
            s = ck.sessions.load(c["id"])
            r = None if s is None else {k: s.get(k).decode() for k in s.keys()}
        else:
            raise ValueError("unknown op")
        print(json.dumps({"ok": True, "r": r}), flush=True)
    except Exception as e:
        print(json.dumps({"ok": False, "error": type(e).__name__ + ": " + str(e)}), flush=True)
`

// One process answering one JSON line per JSON command line.
function processLeg (name, command, args, env) {
  const proc = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: proc.stdout })
  const waiting = []
  lines.on('line', (l) => waiting.shift()?.(l))
  proc.on('exit', (code) => {
    for (const w of waiting.splice(0)) w(JSON.stringify({ ok: false, error: `${name} exited with ${code}` }))
  })
  return {
    name,
    call (op, args = {}) {
      return new Promise((resolve, reject) => {
        waiting.push((l) => { const m = JSON.parse(l); m.ok ? resolve(m.r) : reject(new Error(m.error)) })
        proc.stdin.write(JSON.stringify({ op, ...args }) + '\n')
      })
    },
    close () { proc.stdin.end(); proc.kill() },
  }
}

function phpLeg (config, lib) {
  return processLeg('php', 'php', ['-d', 'ffi.enable=1', '-r', PHP_SERVER], { CK_CONFIG: JSON.stringify(config), CLUSTERKIT_LIB: lib })
}

function pythonLeg (config) {
  const python = process.env.CLUSTERKIT_PYTHON
  assert.ok(python, 'CLUSTERKIT_PYTHON (a Python with the clusterkit package) is not set: run bindings/node/run-tests')
  return processLeg('python', python, ['-c', PYTHON_SERVER], { CK_CONFIG: JSON.stringify(config) })
}

const LEGS = [phpLeg, pythonLeg]

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
