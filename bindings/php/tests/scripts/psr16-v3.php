<?php

// DistributedCache against psr/simple-cache 3.0's typed interfaces (run by Psr16VersionsTest).

declare(strict_types=1);

require dirname(__DIR__) . '/fixtures/psr-simple-cache-3/interfaces.php';
require dirname(__DIR__, 2) . '/autoload.php';

$cache = (new Clusterkit\ClusterManager())->cache();
$ok = $cache instanceof Psr\SimpleCache\CacheInterface
    && $cache->set('k', ['v' => 1], new DateInterval('PT60S'))
    && $cache->get('k') === ['v' => 1]
    && $cache->getMultiple(['k', 'x'], 0) === ['k' => ['v' => 1], 'x' => 0]
    && $cache->setMultiple(['a' => 1]) && $cache->has('a') && $cache->deleteMultiple(['a'])
    && $cache->delete('k') && $cache->clear();
try {
    $cache->get('bad:key');
    $ok = false;
} catch (Psr\SimpleCache\InvalidArgumentException $e) {
    $ok = $ok && $e instanceof Throwable;
}
echo $ok ? "ok\n" : "FAILED\n";
