<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

/** What run-tests set up: the redis-server and the web servers. A missing one is an error. */
final class Env
{
    public static function redisPort(): int
    {
        $p = getenv('CK_TEST_REDIS_PORT');
        if ($p === false || $p === '') {
            throw new \RuntimeException('CK_TEST_REDIS_PORT is not set: run the tests with bindings/php/run-tests');
        }
        return (int) $p;
    }

    /** The Redis-backed config: a ketama pool of one node for the cache, sessions and locks. */
    public static function redisConfig(string $namespace = 'cktest'): array
    {
        return [
            'pools' => [
                'cache' => ['strategy' => 'ketama', 'nodes' => [['id' => 'r1', 'host' => '127.0.0.1', 'port' => self::redisPort()]]],
            ],
            'cache' => ['pool' => 'cache', 'namespace' => $namespace],
            'locks' => ['pool' => 'cache'],
        ];
    }

    /** "127.0.0.1:port" of web server A or B (run-tests starts them with php -S). */
    public static function web(string $name): string
    {
        $v = getenv("CK_TEST_WEB_$name");
        if ($v === false || $v === '') {
            throw new \RuntimeException("CK_TEST_WEB_$name is not set: run the tests with bindings/php/run-tests");
        }
        return $v;
    }
}
