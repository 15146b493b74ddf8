// One app process of the example: an Express server whose sessions, cache and locks live in
// clusterkit (Redis when REDIS is set, so both processes share them; embedded otherwise).
import express from 'express'
import session from 'express-session'
import { Clusterkit, ClusterkitError, ClusterkitStore } from 'clusterkit'
import { config } from './config'

declare module 'express-session' {
  interface SessionData { viewed: number[] }
}

const nodeId = process.env.NODE_ID ?? 'web'
const port = Number(process.env.PORT ?? 0)
// One deployment per process, shared by every request (and worker thread).
const ck = new Clusterkit(config(), { shared: true })

const app = express()
app.use(session({
  secret: 'example secret',
  store: new ClusterkitStore({ clusterkit: ck, expressSession: session }),
  resave: false,
  saveUninitialized: false,
  cookie: { maxAge: 30 * 60 * 1000 },
}))

app.get('/healthz', (_req, res) => { res.send('ok') })

// A price from the cache; on a miss this node "computes" it once, even under concurrency.
app.get('/price', async (req, res) => {
  const item = Number(req.query.item ?? 0)
  let computedBy: string | null = null
  const price = await ck.cache.getOrCompute(`price.${item}`, 60_000, async () => {
    computedBy = nodeId
    return String((item * 7919) % 1000 / 10)
  })
  const viewed = [...(req.session.viewed ?? []), item]
  req.session.viewed = viewed
  res.json({ node: nodeId, price: Number(price.toString()), computedBy, viewed: viewed.length })
})

// A one-time job under a distributed lock; `await using` releases it at the end of the block.
app.post('/warmup', async (_req, res) => {
  try {
    await using lock = await ck.locks.acquire('example.warmup', { ttl: 10_000, wait: 2_000 })
    await ck.cache.set('catalog.version', String(lock.fencingToken))
    res.json({ node: nodeId, fencingToken: lock.fencingToken, validForMs: Math.round(lock.validFor) })
  } catch (e) {
    const code = e instanceof ClusterkitError ? e.code : 'internal'
    res.status(code === 'timeout' ? 409 : 500).json({ node: nodeId, error: code })
  }
})

const server = app.listen(port, '127.0.0.1', () => {
  const address = server.address()
  if (address && typeof address === 'object') process.send?.({ port: address.port })
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
