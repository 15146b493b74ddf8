<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use PHPUnit\Framework\TestCase;

/**
 * The package under real PHP-FPM (php-fpm8.2): run-tests starts two masters with one static
 * worker each (FFI: `ffi.enable=1` + env[CLUSTERKIT_LIB]; PRELOAD: PHP's default
 * `ffi.enable=preload` with ffi.preload + opcache.preload of preload.php, as the README says),
 * and this test sends them FastCGI requests with cgi-fcgi, to tests/web/fpm.php.
 *
 * With one worker, consecutive requests run in the same process: the deployment built by
 * ClusterManager::shared() in one request is the one the next request gets (its embedded
 * cache, its Redis connections), and a request that dies with an exception leaves the worker
 * and the deployment working (its lock and session lock released).
 */
final class FpmTest extends TestCase
{
    private static ?string $cgiFcgi = null;

    private static function cgiFcgi(): string
    {
        if (self::$cgiFcgi === null) {
            foreach (explode(':', (string) getenv('PATH')) as $dir) {
                if ($dir !== '' && is_executable("$dir/cgi-fcgi")) {
                    return self::$cgiFcgi = "$dir/cgi-fcgi";
                }
            }
            throw new \RuntimeException('cgi-fcgi is not on PATH (package libfcgi-bin): run the tests with bindings/php/run-tests');
        }
        return self::$cgiFcgi;
    }

    private static function fpm(string $name): string
    {
        $v = getenv("CK_TEST_FPM_$name");
        if ($v === false || $v === '') {
            throw new \RuntimeException("CK_TEST_FPM_$name is not set: run the tests with bindings/php/run-tests");
        }
        return $v;
    }

    /**
     * One FastCGI request to FPM master `$server` (FFI or PRELOAD) for tests/web/fpm.php.
     * Only the CGI variables below are sent (cgi-fcgi sends its whole environment as the
     * request's params, and a worker's getenv() sees them): nothing of this process's
     * environment reaches the worker but what its pool sets.
     *
     * @return array{status: int, headers: array<string, string>, body: array, stderr: string}
     */
    public static function request(string $server, array $query, ?string $cookie = null): array
    {
        $params = [
            'GATEWAY_INTERFACE' => 'CGI/1.1',
            'SERVER_PROTOCOL' => 'HTTP/1.1',
            'REQUEST_METHOD' => 'GET',
            'SCRIPT_FILENAME' => __DIR__ . '/web/fpm.php',
            'SCRIPT_NAME' => '/fpm.php',
            'REQUEST_URI' => '/fpm.php?' . http_build_query($query),
            'QUERY_STRING' => http_build_query($query),
            'REMOTE_ADDR' => '127.0.0.1',
            'SERVER_NAME' => 'localhost',
        ];
        if ($cookie !== null) {
            $params['HTTP_COOKIE'] = "PHPSESSID=$cookie";
        }
        $p = proc_open([self::cgiFcgi(), '-bind', '-connect', self::fpm($server)], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $params);
        if ($p === false) {
            throw new \RuntimeException('cannot run cgi-fcgi');
        }
        $raw = (string) stream_get_contents($pipes[1]);
        $stderr = (string) stream_get_contents($pipes[2]);
        $exit = proc_close($p);
        $what = "$server " . http_build_query($query);
        if ($exit !== 0 || !str_contains($raw, "\r\n\r\n")) {
            throw new \RuntimeException("FastCGI request ($what) failed: cgi-fcgi exit $exit\n$raw\n$stderr");
        }
        [$head, $body] = explode("\r\n\r\n", $raw, 2);
        $headers = [];
        foreach (explode("\r\n", $head) as $line) {
            [$k, $v] = explode(':', $line, 2) + [1 => ''];
            $headers[strtolower(trim($k))] = trim($v);
        }
        $status = isset($headers['status']) ? (int) $headers['status'] : 200;
        $json = $body === '' ? [] : json_decode($body, true);
        if (!is_array($json)) {
            throw new \RuntimeException("FastCGI request ($what): not JSON: $raw\n$stderr");
        }
        if ($status === 200 && $json['sapi'] !== 'fpm-fcgi') {
            throw new \RuntimeException("FastCGI request ($what) not served by FPM: $body");
        }
        return ['status' => $status, 'headers' => $headers, 'body' => $json, 'stderr' => $stderr];
    }

    /** A successful request's body. */
    private function ok(string $server, array $query, ?string $cookie = null): array
    {
        $r = self::request($server, $query, $cookie);
        $this->assertSame(200, $r['status'], "$server " . http_build_query($query) . ': ' . json_encode($r));
        return $r['body'];
    }

    /** What every response of `$server` says about the worker and how it loaded the library. */
    private function assertLoadedAs(string $server, array $body): void
    {
        $this->assertSame('fpm-fcgi', $body['sapi']);
        $this->assertTrue($body['opcache'], 'opcache is on');
        if ($server === 'FFI') {
            $this->assertSame('1', $body['ffi']);
            $this->assertSame(getenv('CLUSTERKIT_LIB'), $body['lib'], 'FFI::cdef of env[CLUSTERKIT_LIB]');
            $this->assertFalse($body['preloaded']);
        } else {
            $this->assertSame('preload', $body['ffi']);
            $this->assertSame('scope:clusterkit', $body['lib'], 'the scope declared by ffi.preload');
            $this->assertTrue($body['preloaded'], 'preload.php preloaded the classes');
        }
    }

    public static function servers(): array
    {
        return ['ffi.enable=1' => ['FFI'], 'preload' => ['PRELOAD']];
    }

    public static function serversAndBackends(): array
    {
        $out = [];
        foreach (self::servers() as $label => [$server]) {
            foreach (['embedded', 'redis'] as $backend) {
                $out["$label, $backend"] = [$server, $backend];
            }
        }
        return $out;
    }

    /** @dataProvider serversAndBackends */
    public function testCacheLocksAndSessionsWork(string $server, string $backend): void
    {
        $b = $this->ok($server, ['op' => 'ops', 'backend' => $backend]);
        $this->assertLoadedAs($server, $b);
        $ops = $b['ops'];
        $this->assertSame(['a' => 1, 'b' => [true, 2.5]], $ops['get']);
        $this->assertSame([1, 5, 4], $ops['increment']);
        $this->assertSame(['x', 'y', '-'], array_values($ops['getMultiple']));
        $this->assertSame([true, false], $ops['add']);
        $this->assertFalse($ops['hasAfterDelete']);
        $this->assertGreaterThan(0, $ops['fence']);
        $this->assertTrue($ops['contended'], 'a held lock is refused');
        $this->assertTrue($ops['reacquired'], 'released: taken again with a higher fencing token');
        $this->assertSame(['cart' => ['sku-1'], 'user' => 42], $ops['sessionLoaded']);
        $this->assertSame(['cart' => ['sku-1', 'sku-2']], $ops['sessionSaved']);
        $this->assertTrue($ops['destroyId']);
        $this->assertTrue($ops['sessionDestroyed']);

        // PHP's own session through SessionHandler: a cookie issued, then continued.
        $r = self::request($server, ['op' => 'session', 'backend' => $backend]);
        $this->assertSame(200, $r['status']);
        $this->assertMatchesRegularExpression('/^PHPSESSID=([A-Za-z0-9]{32});/', $r['headers']['set-cookie'] ?? '');
        $sid = $r['body']['id'];
        $this->assertSame(1, $r['body']['n']);
        $r = self::request($server, ['op' => 'session', 'backend' => $backend], $sid);
        $this->assertSame([$sid, 2], [$r['body']['id'], $r['body']['n']]);
        $this->assertArrayNotHasKey('set-cookie', $r['headers'], 'no new cookie for a continued session');
    }

    /** @dataProvider servers */
    public function testTheWorkerReusesItsDeploymentAcrossRequests(string $server): void
    {
        $key = 'reuse.' . bin2hex(random_bytes(6));
        $value = bin2hex(random_bytes(8));
        $first = $this->ok($server, ['op' => 'put', 'backend' => 'embedded', 'key' => $key, 'value' => $value]);
        $this->assertLoadedAs($server, $first);
        $this->assertTrue($first['stored']);
        // The embedded cache lives in the deployment, in the worker's memory: later requests
        // see the value only if they got the same deployment.
        for ($i = 0; $i < 20; $i++) {
            $b = $this->ok($server, ['op' => 'get', 'backend' => 'embedded', 'key' => $key]);
            $this->assertSame([$first['pid'], $value], [$b['pid'], $b['value']], "request " . ($i + 2));
        }
        // For comparison: a deployment built for the request alone has an empty cache.
        $b = $this->ok($server, ['op' => 'get', 'backend' => 'embedded', 'key' => $key, 'fresh' => 1]);
        $this->assertSame([$first['pid'], null], [$b['pid'], $b['value']], 'new ClusterManager(): a deployment of its own');
    }

    /** @dataProvider servers */
    public function testRequestsDoNotOpenNewRedisConnections(string $server): void
    {
        $redis = new \Redis();
        $redis->connect('127.0.0.1', Env::redisPort(), 2.0);
        $stats = static function () use ($redis): array {
            $clients = $redis->info('clients');
            $totals = $redis->info('stats');
            return [(int) $clients['connected_clients'], (int) $totals['total_connections_received']];
        };
        try {
            $key = 'conn.' . bin2hex(random_bytes(6));
            $first = $this->ok($server, ['op' => 'put', 'backend' => 'redis', 'key' => $key, 'value' => 'v']);
            [$clients, $total] = $stats();
            for ($i = 0; $i < 20; $i++) {
                $op = $i % 2 ? ['op' => 'put', 'value' => "v$i"] : ['op' => 'get'];
                $b = $this->ok($server, $op + ['backend' => 'redis', 'key' => $key]);
                $this->assertSame($first['pid'], $b['pid']);
            }
            $b = $this->ok($server, ['op' => 'get', 'backend' => 'redis', 'key' => $key]);
            $this->assertSame('v19', $b['value']);
            [$clientsAfter, $totalAfter] = $stats();
            $this->assertSame($clients, $clientsAfter, 'connected clients after 20 more requests');
            $this->assertSame($total, $totalAfter, 'no connection was opened by the 20 requests: the deployment\'s are reused');

            // For comparison: a deployment per request connects every time.
            for ($i = 0; $i < 3; $i++) {
                $this->ok($server, ['op' => 'get', 'backend' => 'redis', 'key' => $key, 'fresh' => 1]);
            }
            $this->assertGreaterThanOrEqual($total + 3, $stats()[1], 'new ClusterManager() per request opens connections');
        } finally {
            $redis->close();
        }
    }

    /** @dataProvider servers */
    public function testPreloadedWorkersCannotUseFfiOutsideThePreloadedCode(string $server): void
    {
        $b = $this->ok($server, ['op' => 'cdef']);
        if ($server === 'FFI') {
            $this->assertSame('allowed', $b['cdef']);
        } else {
            // ffi.enable=preload: the package works only through the preloaded scope.
            $this->assertStringContainsString('FFI API is restricted by "ffi.enable" configuration directive', $b['cdef']);
        }
    }

    /** @dataProvider serversAndBackends */
    public function testAFailedRequestDoesNotBreakTheNextOne(string $server, string $backend): void
    {
        $key = 'survivor.' . bin2hex(random_bytes(6));
        $name = 'fail.' . bin2hex(random_bytes(6));
        $first = $this->ok($server, ['op' => 'put', 'backend' => $backend, 'key' => $key, 'value' => 'kept']);

        // Takes a lock and a session lock, then an uncaught InvalidArgumentException.
        $r = self::request($server, ['op' => 'fail', 'backend' => $backend, 'name' => $name]);
        $this->assertSame(500, $r['status']);
        $this->assertStringContainsString(
            'Uncaught Clusterkit\Exception\InvalidArgumentException: invalid key "bad{key}"',
            $r['stderr'],
            'the error is logged (FastCGI stderr)'
        );

        // The same worker serves the next request, with the same deployment; what the failed
        // request held was released when PHP destroyed its objects at the end of it.
        $b = $this->ok($server, ['op' => 'lock', 'backend' => $backend, 'name' => $name]);
        $this->assertSame($first['pid'], $b['pid'], 'the worker survived');
        $this->assertTrue($b['acquired'], 'the failed request\'s lock (TTL 60 s) was released');
        $this->assertSame(['k' => 'v'], $b['session'], 'its locked session loads');
        $this->assertLessThan(1.0, $b['sessionWait'], 'without waiting for its lock (lock_wait 5 s)');
        $b = $this->ok($server, ['op' => 'get', 'backend' => $backend, 'key' => $key]);
        $this->assertSame([$first['pid'], 'kept'], [$b['pid'], $b['value']]);
        $b = $this->ok($server, ['op' => 'ops', 'backend' => $backend]);
        $this->assertTrue($b['ops']['reacquired']);
    }
}
