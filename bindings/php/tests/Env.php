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

    /**
     * The deployment over the three TLS-only, ACL-protected servers run-tests starts (mutual
     * TLS, database 6): ketama cache over the first two, Redlock over all three. `$password`
     * is a `[redis]` password source: `['password_env' => 'VAR']` or `['password' => '...']`.
     */
    public static function secureConfig(array $password): array
    {
        $need = static function (string $var): string {
            $v = getenv($var);
            if ($v === false || $v === '') {
                throw new \RuntimeException("$var is not set: run the tests with bindings/php/run-tests");
            }
            return $v;
        };
        $ports = array_map('intval', explode(',', $need('CK_TEST_SECURE_PORTS')));
        $dir = $need('CK_TEST_SECURE_DIR');
        $node = static fn (int $i): array => ['id' => "s$i", 'host' => '127.0.0.1', 'port' => $ports[$i]];
        return [
            'redis' => ['username' => $need('CK_TEST_SECURE_USER'), 'db' => 6, 'tls' => [
                'ca_file' => "$dir/ca.pem", 'cert_file' => "$dir/client.pem", 'key_file' => "$dir/client.key",
            ]] + $password,
            'pools' => [
                'cache' => ['strategy' => 'ketama', 'nodes' => [$node(0), $node(1)],
                    'health' => ['check' => 'redis', 'interval' => '500ms', 'timeout' => '5s', 'rise' => 1, 'fall' => 3]],
                'locks' => ['nodes' => [$node(0), $node(1), $node(2)]],
                // run-tests registers node web-1 of service "phpweb" there (db 6).
                'app' => ['discovery' => ['redis' => "127.0.0.1:{$ports[0]}", 'service' => 'phpweb', 'interval' => '200ms']],
            ],
            'cache' => ['pool' => 'cache', 'namespace' => 'phpsecure', 'timeout' => '3s'],
            'locks' => ['pool' => 'locks', 'timeout' => '3s'],
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
