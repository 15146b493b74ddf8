<?php

// Front script of the `php -S` server MonitoringTest starts: a 3-pool deployment whose
// status page, JSON twin and Prometheus text MonitoringEndpoint serves under /ops/.
// Pool `web` has a node nobody listens on (CK_TEST_CLOSED_PORT) with a TCP health check, so
// it shows as unhealthy; pool `api` has a drained node.

declare(strict_types=1);

require dirname(__DIR__, 2) . '/autoload.php';

use Clusterkit\ClusterManager;
use Clusterkit\MonitoringEndpoint;

$redis = (int) getenv('CK_TEST_REDIS_PORT');
$closed = (int) getenv('CK_TEST_CLOSED_PORT');
$cluster = ClusterManager::shared([
    'pools' => [
        'web' => [
            'strategy' => 'p2c',
            'nodes' => [
                ['id' => 'w0', 'host' => '127.0.0.1', 'port' => $redis],
                ['id' => 'w1', 'host' => '127.0.0.1', 'port' => $redis],
                ['id' => 'w-down', 'host' => '127.0.0.1', 'port' => $closed],
            ],
            'health' => ['check' => 'tcp', 'interval' => '50ms', 'timeout' => '200ms', 'fall' => 1, 'rise' => 1],
        ],
        'cache' => ['strategy' => 'ketama', 'nodes' => [
            ['id' => 'r1', 'host' => '127.0.0.1', 'port' => $redis],
        ]],
        'api' => ['strategy' => 'round_robin', 'nodes' => [
            ['id' => 'api-1', 'host' => '127.0.0.1', 'port' => 8001],
            ['id' => 'api-2', 'host' => '127.0.0.1', 'port' => 8002],
        ]],
    ],
    'cache' => ['pool' => 'cache', 'namespace' => 'phpmon'],
]);
$cluster->pool('api')->setHealth('api-2', \Clusterkit\Health::Draining, 'maintenance');
// Health checks run in the background: wait (bounded) until the dead node is seen.
for ($i = 0; $i < 100 && $cluster->pool('web')->healthyCount() !== 2; $i++) {
    usleep(20000);
}
$endpoint = new MonitoringEndpoint($cluster, [
    '/ops/status' => 'html',
    '/ops/status.json' => 'status_json',
    '/ops/metrics' => 'prometheus',
], title: 'PHP <status>');
if (!$endpoint->handle()) {
    http_response_code(404);
    echo "not a monitoring path\n";
}
