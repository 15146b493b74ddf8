'use strict'
// Test harness: private redis-server processes on free loopback ports, stopped by PID after
// the test (also when it fails) and at process exit.
const { spawn } = require('node:child_process')
const net = require('node:net')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const live = new Map() // process -> its data directory
process.on('exit', () => {
  for (const [p, dir] of live) {
    try { process.kill(p.pid, 'SIGKILL') } catch {}
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch {}
  }
})

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

function ping (port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1')
    let buf = ''
    c.on('connect', () => c.write('PING\r\n'))
    // PONG, or NOAUTH from a server started with --requirepass: either way it answers.
    c.on('data', (d) => { buf += d; if (buf.includes('PONG') || buf.includes('NOAUTH')) { c.destroy(); resolve(true) } })
    c.on('error', () => resolve(false))
    setTimeout(() => { c.destroy(); resolve(false) }, 500)
  })
}

/**
 * Starts a redis-server (with `extraArgs`, e.g. ['--requirepass', pw]); `t.after` stops it.
 * Returns { port, address, proc, stop }.
 */
async function startRedis (t, extraArgs = []) {
  const port = await freePort()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ck-node-redis-'))
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs], { stdio: 'ignore' })
  live.set(proc, dir)
  const stop = () => {
    if (!live.has(proc)) return
    live.delete(proc)
    try { process.kill(proc.pid, 'SIGCONT') } catch {}
    try { process.kill(proc.pid, 'SIGKILL') } catch {}
    fs.rmSync(dir, { recursive: true, force: true })
  }
  if (t) t.after(stop)
  const deadline = Date.now() + 10000
  while (!(await ping(port))) {
    if (Date.now() > deadline) { stop(); throw new Error(`redis-server on ${port} did not start`) }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return { port, address: `127.0.0.1:${port}`, proc, stop }
}

/** A config document with the cache, locks and sessions on one Redis. */
function redisConfig (port, namespace = 'cknode') {
  return {
    pools: { locks: { nodes: [{ id: 'r1', host: '127.0.0.1', port }] } },
    cache: { redis: `127.0.0.1:${port}`, namespace },
    locks: { pool: 'locks' },
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

module.exports = { startRedis, freePort, redisConfig, sleep }
