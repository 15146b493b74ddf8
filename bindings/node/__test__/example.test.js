'use strict'
// examples/node (TypeScript) compiles under --strict (run-tests also runs tsc --noEmit) and
// runs: two Express app processes behind the balancer, sessions/cache/locks in one Redis.
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startRedis } = require('./helpers')

const dir = path.resolve(__dirname, '../../../examples/node')

test('examples/node builds with tsc --strict and runs against a real Redis', { timeout: 120000 }, async (t) => {
  assert.ok(fs.existsSync(path.join(dir, 'node_modules/.bin/tsc')), 'run bindings/node/run-tests (it runs npm ci in examples/node)')
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-example-'))
  t.after(() => fs.rmSync(out, { recursive: true, force: true }))
  execFileSync(path.join(dir, 'node_modules/.bin/tsc'), ['--strict', '--outDir', out], { cwd: dir, stdio: 'inherit' })
  // the compiled files resolve 'clusterkit' and express from the example's node_modules
  fs.symlinkSync(path.join(dir, 'node_modules'), path.join(out, 'node_modules'))
  const r = await startRedis(t)
  const text = execFileSync(process.execPath, [path.join(out, 'main.js')], { env: { ...process.env, REDIS: r.address }, encoding: 'utf8', timeout: 60000 })
  assert.match(text, /warm-up ran on web-\d under a lock \(fencing token \d+\)/)
  assert.match(text, /10 requests, one session \(10 items viewed\)/)
  assert.match(text, /web-2 stopped; next 10 calls served by: web-1×10/)
  assert.match(text, /errors carry a code: invalid_argument/)
})
