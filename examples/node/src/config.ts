import type { ConfigDocument } from 'clusterkit'

/** The one document every process builds its deployment from. */
export function config (appNodes: Array<{ id: string, port: number }> = []): ConfigDocument {
  const doc: ConfigDocument = {
    pools: {
      app: {
        strategy: 'p2c',
        nodes: appNodes.map((n) => ({ id: n.id, host: '127.0.0.1', port: n.port, zone: 'local' })),
        health: { check: 'http', path: '/healthz', interval: '300ms', timeout: '200ms', rise: 1, fall: 1 },
        outlier: { consecutive_failures: 2, base_ejection_time: '10s' },
      },
    },
    sessions: { idle_timeout: '30m' },
  }
  const redis = process.env.REDIS
  if (redis) {
    doc.cache = { redis, namespace: 'example' }
    doc.pools = { ...doc.pools, locks: { nodes: [{ id: 'r1', host: redis.split(':')[0], port: Number(redis.split(':')[1] ?? 6379) }] } }
    doc.locks = { pool: 'locks' }
  }
  return doc
}
