<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\Exception\InvalidArgumentException;
use Clusterkit\Exception\UnavailableException;
use Clusterkit\LogBridge;
use Clusterkit\MonitoringEndpoint;
use PHPUnit\Framework\TestCase;

/** A PSR-3 logger that keeps what it is given. */
final class MemoryLogger extends \Psr\Log\AbstractLogger
{
    /** @var list<array{0: string, 1: string, 2: array}> */
    public array $records = [];

    public function log($level, $message, array $context = []): void
    {
        $this->records[] = [(string) $level, (string) $message, $context];
    }
}

/**
 * Monitoring (issue #15) from PHP: Prometheus text checked by promtool with the numbers the
 * test made, the status page served by MonitoringEndpoint from `php -S` and loaded in
 * headless Chromium, PHP-FPM workers publishing to one directory that one scrape adds up,
 * and the PSR-3 bridge at trace level never showing values, session data, ids or tokens.
 */
final class MonitoringTest extends TestCase
{
    private static function promtool(string $text): void
    {
        $p = proc_open(['promtool', 'check', 'metrics'], [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        if ($p === false) {
            throw new \RuntimeException('promtool is missing (Debian package prometheus; run-tests installs it)');
        }
        fwrite($pipes[0], $text);
        fclose($pipes[0]);
        $out = stream_get_contents($pipes[1]) . stream_get_contents($pipes[2]);
        $exit = proc_close($p);
        self::assertSame(0, $exit, "promtool check metrics: $out\n$text");
    }

    /** `name{labels}` => value of a Prometheus text. */
    private static function samples(string $text): array
    {
        $m = [];
        foreach (explode("\n", $text) as $line) {
            if ($line === '' || $line[0] === '#') {
                continue;
            }
            $at = strrpos($line, ' ');
            $m[substr($line, 0, $at)] = (float) substr($line, $at + 1);
        }
        return $m;
    }

    public function testPrometheusTextCountsPicksAndParses(): void
    {
        $c = new ClusterManager([
            'pools' => [
                'app' => ['strategy' => 'round_robin', 'nodes' => [
                    ['id' => 'a0', 'host' => '127.0.0.1', 'port' => 1],
                    ['id' => 'a1', 'host' => '127.0.0.1', 'port' => 2],
                ]],
            ] + Env::redisConfig('phpmon1')['pools'],
            'cache' => ['pool' => 'cache', 'namespace' => 'phpmon1'],
            'locks' => ['pool' => 'cache'],
        ]);
        for ($i = 0; $i < 10; $i++) {
            $c->pick('app')->success(0.002);
        }
        $cache = $c->cache();
        $cache->set('k', 'v');
        $this->assertSame('v', $cache->get('k'));
        $this->assertNull($cache->get('missing'));
        $c->locks()->acquire('job', 5)->release();
        $text = $c->metricsText('prometheus');
        self::promtool($text);
        $m = self::samples($text);
        $this->assertSame(5.0, $m['clusterkit_node_picks_total{pool="app",node="a0"}']);
        $this->assertSame(5.0, $m['clusterkit_node_picks_total{pool="app",node="a1"}']);
        $this->assertSame(5.0, $m['clusterkit_node_latency_seconds_count{pool="app",node="a1"}']);
        $this->assertSame(1.0, $m['clusterkit_cache_hits_total{node="distributed"}']);
        $this->assertSame(1.0, $m['clusterkit_cache_misses_total{node="distributed"}']);
        $this->assertSame(1.0, $m['clusterkit_lock_acquisitions_total']);
        $this->assertStringEndsWith("# EOF\n", $c->metricsText('openmetrics'));
        $snap = $c->metricsSnapshot();
        $this->assertSame(10, array_sum(array_column($snap['pools'][0]['nodes'], 'picks')));
        // The existing metrics() call keeps its shape.
        $this->assertSame(1, $c->metrics()['cache']['hits']);
        $this->expectException(InvalidArgumentException::class);
        $this->expectExceptionMessage('format');
        $c->metricsText('xml');
    }

    public function testDisabledMetricsAreUnavailable(): void
    {
        $c = new ClusterManager(['metrics' => ['enabled' => false]]);
        $this->expectException(UnavailableException::class);
        $c->metricsText('prometheus');
    }

    public function testBadEndpointRoutesNameTheField(): void
    {
        $c = new ClusterManager();
        try {
            new MonitoringEndpoint($c, ['/m' => 'yaml']);
            $this->fail('accepted an unknown format');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('routes[/m]', $e->getMessage());
        }
        $this->expectException(InvalidArgumentException::class);
        $this->expectExceptionMessage('routes');
        new MonitoringEndpoint($c, ['metrics' => 'prometheus']);
    }

    public function testStatusPageInHeadlessChromium(): void
    {
        $chromium = null;
        foreach (['chromium', 'chromium-browser'] as $b) {
            foreach (explode(':', (string) getenv('PATH')) as $dir) {
                if ($dir !== '' && is_executable("$dir/$b")) {
                    $chromium ??= "$dir/$b";
                }
            }
        }
        $this->assertNotNull($chromium, 'chromium is missing (Debian package chromium; run-tests installs it)');
        $closed = stream_socket_server('tcp://127.0.0.1:0');
        $closedPort = (int) substr((string) stream_socket_get_name($closed, false), strrpos((string) stream_socket_get_name($closed, false), ':') + 1);
        fclose($closed); // nothing listens there any more
        $srv = stream_socket_server('tcp://127.0.0.1:0');
        $name = (string) stream_socket_get_name($srv, false);
        $port = (int) substr($name, strrpos($name, ':') + 1);
        fclose($srv);
        $env = ['CK_TEST_REDIS_PORT' => (string) Env::redisPort(), 'CK_TEST_CLOSED_PORT' => (string) $closedPort,
                'CLUSTERKIT_LIB' => (string) getenv('CLUSTERKIT_LIB'), 'PATH' => (string) getenv('PATH')];
        $server = proc_open(
            ['php', '-d', 'ffi.enable=1', '-S', "127.0.0.1:$port", __DIR__ . '/web/monitoring.php'],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']],
            $pipes,
            null,
            $env
        );
        $this->assertIsResource($server);
        $profile = sys_get_temp_dir() . '/ck-php-chromium-' . getmypid();
        try {
            $up = false;
            for ($i = 0; $i < 100 && !$up; $i++) {
                $up = @fsockopen('127.0.0.1', $port, $errno, $errstr, 0.2) !== false;
                $up || usleep(50000);
            }
            $this->assertTrue($up, 'php -S did not start');
            $json = json_decode((string) file_get_contents("http://127.0.0.1:$port/ops/status.json"), true);
            $this->assertIsArray($json);
            $this->assertSame(['api', 'cache', 'web'], array_column($json['pools'], 'name'));
            $metrics = (string) file_get_contents("http://127.0.0.1:$port/ops/metrics");
            self::promtool($metrics);
            $cmd = [$chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                    '--no-first-run', "--user-data-dir=$profile", '--dump-dom', "http://127.0.0.1:$port/ops/status"];
            $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', '/dev/null', 'w']], $cp);
            $this->assertIsResource($p);
            stream_set_blocking($cp[1], false);
            $dom = '';
            $deadline = microtime(true) + 60;
            while (microtime(true) < $deadline) {
                $chunk = fread($cp[1], 65536);
                if ($chunk !== false && $chunk !== '') {
                    $dom .= $chunk;
                } elseif (feof($cp[1])) {
                    break;
                } else {
                    usleep(20000);
                }
            }
            if (!feof($cp[1])) {
                proc_terminate($p, 9);
            }
            proc_close($p);
            $this->assertStringContainsString('<title>PHP &lt;status&gt;</title>', $dom);
            $expect = [
                ['web', 'w0', 'healthy'], ['web', 'w1', 'healthy'], ['web', 'w-down', 'unhealthy'],
                ['cache', 'r1', 'healthy'], ['api', 'api-1', 'healthy'], ['api', 'api-2', 'draining'],
            ];
            foreach ($expect as [$pool, $node, $health]) {
                $this->assertStringContainsString(
                    "data-pool=\"$pool\" data-node=\"$node\" data-health=\"$health\"",
                    $dom,
                    "pool $pool node $node in the DOM Chromium rendered"
                );
            }
            $this->assertSame(6, substr_count($dom, '<tr class="node '));
        } finally {
            proc_terminate($server);
            proc_close($server);
            if (is_dir($profile)) {
                exec('rm -rf ' . escapeshellarg($profile));
            }
        }
    }

    public function testFpmWorkersPublishAndOneScrapeAddsThemUp(): void
    {
        $dir = sys_get_temp_dir() . '/ck-php-fpm-metrics-' . getmypid();
        exec('rm -rf ' . escapeshellarg($dir));
        try {
            // Two PHP-FPM masters, one worker each: two processes publish into one directory.
            $ffi = FpmTest::request('FFI', ['op' => 'publish', 'n' => 6, 'dir' => $dir]);
            $pre = FpmTest::request('PRELOAD', ['op' => 'publish', 'n' => 4, 'dir' => $dir]);
            $this->assertSame([200, 200], [$ffi['status'], $pre['status']], json_encode([$ffi, $pre]));
            $this->assertNotSame($ffi['body']['pid'], $pre['body']['pid']);
            $this->assertCount(2, glob("$dir/ck-*.json"));
            // One scrape, from one of the workers, adds up both (its own snapshot included).
            $r = FpmTest::request('FFI', ['op' => 'scrape', 'dir' => $dir]);
            $this->assertSame(200, $r['status'], json_encode($r));
            $text = $r['body']['text'];
            self::promtool($text);
            $m = self::samples($text);
            $this->assertSame(2.0, $m['clusterkit_processes']);
            $picks = $m['clusterkit_node_picks_total{pool="app",node="a0"}'] + $m['clusterkit_node_picks_total{pool="app",node="a1"}'];
            // The FFI worker's deployment may have picked before (earlier runs of this test
            // in the same worker): at least this run's 10, and an even split per worker.
            $this->assertGreaterThanOrEqual(10.0, $picks);
            $this->assertSame(0.0, fmod($picks, 2.0));
        } finally {
            exec('rm -rf ' . escapeshellarg($dir));
        }
    }

    public function testPsr3BridgeAtTraceNeverShowsSecrets(): void
    {
        $logger = new MemoryLogger();
        $bridge = new LogBridge($logger, 'trace');
        try {
            $c = new ClusterManager(Env::redisConfig('phpmon2'));
            $cache = $c->cache();
            $cache->set('user.7', 'VALUE-php-secret-5d1');
            $this->assertSame('VALUE-php-secret-5d1', $cache->get('user.7'));
            $lock = $c->locks()->acquire('php-job', 5);
            $token = $lock->token;
            $lock->release();
            $s = $c->createSession();
            $s->set('card', 'SESSION-php-data-77');
            $s->save();
            $locked = $c->loadSession($s->id(), lock: true);
            $this->assertNotNull($locked);
            $locked->save();
            $n = $bridge->pump();
            $this->assertGreaterThan(0, $n);
            $levels = array_unique(array_column($logger->records, 0));
            $this->assertContains('debug', $levels);
            $all = json_encode($logger->records) . $c->metricsText('prometheus') . $c->metricsText('status_json')
                . $c->statusPage();
            $found = array_filter($logger->records, static fn ($r) => $r[1] === 'get' && isset($r[2]['key_hash']));
            $this->assertNotEmpty($found, 'cache reads are logged with the key hash: ' . json_encode($logger->records));
            foreach (['VALUE-php-secret-5d1', 'SESSION-php-data-77', $s->id(), $token, 'user.7'] as $secret) {
                $this->assertStringNotContainsString($secret, $all);
            }
        } finally {
            LogBridge::setLevel('off');
        }
        $this->assertSame([], LogBridge::poll());
        $this->expectException(InvalidArgumentException::class);
        $this->expectExceptionMessage('level');
        LogBridge::setLevel('loud');
    }
}
