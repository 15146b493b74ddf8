<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Cache\IntegrationTests\SimpleCacheTest;
use Clusterkit\ClusterManager;

/**
 * php-cache/integration-tests' PSR-16 suite against Redis: the cache sharded (ketama) over a
 * pool of one node, the private redis-server run-tests started.
 *
 * Nothing is skipped: $skippedTests stays empty (the suite marks no test optional itself).
 */
final class Psr16RedisTest extends SimpleCacheTest
{
    public function createSimpleCache()
    {
        return (new ClusterManager(Env::redisConfig('psr16')))->cache();
    }
}
