<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use PHPUnit\Framework\TestCase;

/**
 * session_start() under PHP's built-in web server: two servers (A and B, 4 workers each,
 * started by run-tests) share one redis-server; real HTTP requests with the session cookie.
 */
final class HttpSessionTest extends TestCase
{
    private const COOKIE = 'PHPSESSID';

    /**
     * Sends requests at once (all written before any is read) and returns the responses in
     * order: ['status' => int, 'cookie' => ?string, 'body' => array].
     *
     * @param list<array{0: string, 1: string, 2: ?string}> $requests [server, path, session id]
     */
    private static function http(array $requests): array
    {
        $socks = [];
        foreach ($requests as $i => [$server, $path, $sid]) {
            $s = stream_socket_client('tcp://' . Env::web($server), $errno, $errstr, 5);
            if ($s === false) {
                throw new \RuntimeException("connect to $server: $errstr");
            }
            $req = "GET $path HTTP/1.0\r\nHost: " . Env::web($server) . "\r\n";
            if ($sid !== null) {
                $req .= 'Cookie: ' . self::COOKIE . "=$sid\r\n";
            }
            fwrite($s, $req . "Connection: close\r\n\r\n");
            stream_set_timeout($s, 60);
            $socks[$i] = $s;
        }
        $out = [];
        foreach ($socks as $i => $s) {
            $raw = stream_get_contents($s);
            fclose($s);
            [$head, $body] = explode("\r\n\r\n", (string) $raw, 2) + [1 => ''];
            preg_match('~^HTTP/1\.\d (\d+)~', $head, $m);
            $cookie = preg_match('~^Set-Cookie: ' . self::COOKIE . '=([^;]*)~mi', $head, $c) ? $c[1] : null;
            $json = json_decode($body, true);
            if (!is_array($json)) {
                throw new \RuntimeException("request $i ({$requests[$i][1]}): not JSON: $raw");
            }
            $out[$i] = ['status' => (int) ($m[1] ?? 0), 'cookie' => $cookie, 'body' => $json];
        }
        return $out;
    }

    private static function one(string $server, string $path, ?string $sid = null): array
    {
        return self::http([[$server, $path, $sid]])[0];
    }

    public function testASessionContinuesOnTheOtherServer(): void
    {
        $r = self::one('A', '/incr');
        $this->assertSame(200, $r['status']);
        $sid = $r['cookie'];
        $this->assertMatchesRegularExpression('/^[A-Za-z0-9]{32}$/', (string) $sid, 'a cookie with a clusterkit id');
        $this->assertSame(['A', 1], [$r['body']['server'], $r['body']['n']]);
        $this->assertSame(getenv('CLUSTERKIT_LIB'), $r['body']['lib'], 'server A: FFI::cdef');

        $r = self::one('B', '/incr', $sid);
        $this->assertSame(['B', 2, $sid], [$r['body']['server'], $r['body']['n'], $r['body']['id']]);
        $this->assertNull($r['cookie'], 'no new cookie for a continued session');
        $this->assertSame('scope:clusterkit', $r['body']['lib'], 'server B: preloaded with ffi.preload');
        $r = self::one('A', '/incr', $sid);
        $this->assertSame(['A', 3], [$r['body']['server'], $r['body']['n']]);
        $r = self::one('B', '/get', $sid);
        $this->assertSame(3, $r['body']['n']);

        // A forged or unknown id is not adopted (strict mode): a fresh session instead.
        $r = self::one('B', '/incr', str_repeat('x', 32));
        $this->assertSame(1, $r['body']['n']);
        $this->assertNotSame(str_repeat('x', 32), $r['cookie']);
    }

    public function testRegenerateAndDestroy(): void
    {
        $sid = self::one('A', '/incr')['cookie'];
        self::one('B', '/incr', $sid);
        $r = self::one('B', '/regenerate', $sid);
        $new = $r['cookie'];
        $this->assertNotNull($new);
        $this->assertNotSame($sid, $new);
        $this->assertSame([$sid, $new, 2], [$r['body']['old'], $r['body']['id'], $r['body']['n']]);
        // The new id works everywhere, with the data; the old one is gone.
        $this->assertSame(3, self::one('A', '/incr', $new)['body']['n']);
        $old = self::one('A', '/incr', $sid);
        $this->assertSame(1, $old['body']['n']);
        $this->assertNotSame($sid, $old['cookie']);
        // Destroy on one server: gone on the other.
        self::one('A', '/destroy', $new);
        $this->assertNull(self::one('B', '/get', $new)['body']['n']);
    }

    public function testConcurrentRequestsOfOneSessionAreSerialized(): void
    {
        $sid = self::one('A', '/incr')['cookie'];
        $n = 24;
        $requests = [];
        for ($i = 0; $i < $n; $i++) {
            // Each request reads n, sleeps 20 ms, writes n + 1: without the session lock most
            // increments would be lost.
            $requests[] = [$i % 2 ? 'B' : 'A', '/incr?sleep=20000', $sid];
        }
        $t = microtime(true);
        $responses = self::http($requests);
        $elapsed = microtime(true) - $t;
        $seen = [];
        foreach ($responses as $r) {
            $this->assertSame(200, $r['status']);
            $this->assertSame($sid, $r['body']['id']);
            $seen[] = $r['body']['n'];
        }
        sort($seen);
        $this->assertSame(range(2, $n + 1), $seen, 'every request saw its own n: no lost increments');
        $this->assertSame($n + 1, self::one('B', '/get', $sid)['body']['n']);
        $this->assertGreaterThanOrEqual($n * 0.02, $elapsed, 'they ran one after another');
        $servers = array_unique(array_map(fn ($r) => $r['body']['server'] . $r['body']['pid'], $responses));
        $this->assertGreaterThan(2, count($servers), 'several workers of both servers took part');
    }
}
