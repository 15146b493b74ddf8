<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Cache\IntegrationTests\SimpleCacheTest;
use Clusterkit\ClusterManager;

/**
 * php-cache/integration-tests' PSR-16 suite against the embedded (in-process) backend.
 *
 * Nothing is skipped: $skippedTests stays empty. (The suite marks no test optional itself; it
 * only lets an implementation list tests to skip, and phpunit.xml.dist fails on any skip.)
 * TTL tests sleep for real (3 s each), as the embedded cache reads the real clock.
 */
final class Psr16EmbeddedTest extends SimpleCacheTest
{
    public function createSimpleCache()
    {
        // A deployment of its own per test: a clean cache each time.
        return (new ClusterManager())->cache();
    }
}
