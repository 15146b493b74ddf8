<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use PHPUnit\Framework\TestCase;

/**
 * fork() (pcntl, as PHP-FPM's master forks its workers and pcntl-based job runners fork
 * theirs): a child of a process that already used clusterkit keeps working, with the
 * embedded backend and with Redis; the parent too, after the child.
 */
final class ForkTest extends TestCase
{
    protected function setUp(): void
    {
        if (!function_exists('pcntl_fork')) {
            $this->fail('the pcntl extension is missing: php-cli on Debian has it built in');
        }
    }

    /**
     * Runs `$child` in a forked child; returns what it returned (JSON through a file). The
     * child leaves through exec, so that no PHPUnit shutdown code runs twice.
     */
    private function inChild(callable $child): mixed
    {
        $file = tempnam(sys_get_temp_dir(), 'ck-fork');
        $pid = pcntl_fork();
        if ($pid === -1) {
            $this->fail('fork failed');
        }
        if ($pid === 0) {
            try {
                $result = ['ok' => true, 'value' => $child()];
            } catch (\Throwable $e) {
                $result = ['ok' => false, 'error' => get_class($e) . ': ' . $e->getMessage()];
            }
            file_put_contents($file, json_encode($result));
            pcntl_exec('/bin/true');
            posix_kill(posix_getpid(), SIGKILL); // exec failed
        }
        $deadline = microtime(true) + 30;
        do {
            $done = pcntl_waitpid($pid, $status, WNOHANG);
            if ($done === 0) {
                usleep(10_000);
            }
        } while ($done === 0 && microtime(true) < $deadline);
        if ($done === 0) {
            posix_kill($pid, SIGKILL);
            pcntl_waitpid($pid, $status);
            $this->fail('the child hung (killed after 30 s)');
        }
        $this->assertTrue(pcntl_wifexited($status), 'the child exited normally');
        $result = json_decode((string) file_get_contents($file), true);
        unlink($file);
        $this->assertIsArray($result, 'the child reported');
        $this->assertTrue($result['ok'], $result['error'] ?? '');
        return $result['value'];
    }

    public function testEmbeddedAfterFork(): void
    {
        $c = new ClusterManager(['pools' => ['app' => ['strategy' => 'round_robin', 'nodes' => [
            ['id' => 'a', 'host' => '127.0.0.1', 'port' => 9001],
        ]]]]);
        $cache = $c->cache();
        $cache->set('before', 'parent');
        $lock = $c->locks()->acquire('fork-embedded', 10);
        $got = $this->inChild(function () use ($c, $cache) {
            $cache->set('child', 'value');
            $l = $c->locks()->acquire('child-lock', 5, 1);
            $l->release();
            $s = $c->createSession();
            $s->set('x', 1);
            $s->save();
            return [
                'before' => $cache->get('before'),
                'child' => $cache->get('child'),
                'pick' => $c->pick('app')->nodeId,
                'session' => $c->loadSession($s->id())?->get('x'),
                'shared' => ClusterManager::shared(['cache' => ['namespace' => 'fork']])->cache()->set('k', 1),
            ];
        });
        $this->assertSame(['before' => 'parent', 'child' => 'value', 'pick' => 'a', 'session' => 1, 'shared' => true], $got);
        // The parent goes on (its embedded cache is its own: the child's write is not here).
        $this->assertSame('parent', $cache->get('before'));
        $this->assertNull($cache->get('child'));
        $lock->release();
    }

    public function testRedisAfterFork(): void
    {
        $c = new ClusterManager(Env::redisConfig('fork-' . bin2hex(random_bytes(4))));
        $cache = $c->cache();
        $cache->set('before', 'parent'); // the parent's connection exists before the fork
        $held = $c->locks()->acquire('fork-redis-held', 10);
        $got = $this->inChild(function () use ($c, $cache, $held) {
            $cache->set('child', 'value');
            $conflict = false;
            try {
                $c->locks()->acquire('fork-redis-held', 5);
            } catch (\Clusterkit\Exception\ConflictException) {
                $conflict = true;
            }
            $l = $c->locks()->acquire('fork-redis-child', 5, 1);
            $fence = $l->fencingToken();
            $l->release();
            $s = $c->createSession();
            $s->set('x', 2);
            $s->save();
            return [
                'before' => $cache->get('before'),
                'many' => $cache->getMultiple(['before', 'child']),
                'conflict' => $conflict,
                'fence' => $fence > 0,
                'session' => $s->id(),
                'inherited lock still held' => $held->isHeld(),
            ];
        });
        $this->assertSame('parent', $got['before']);
        $this->assertSame(['before' => 'parent', 'child' => 'value'], $got['many']);
        $this->assertTrue($got['conflict'], "the parent's lock is seen as held in the child");
        $this->assertTrue($got['fence']);
        $this->assertTrue($got['inherited lock still held']);
        // The parent sees the child's writes (same Redis) and its own connection still works.
        $this->assertSame('value', $cache->get('child'));
        $this->assertSame(2, $c->loadSession($got['session'])?->get('x'));
        $held->release();
        $this->assertNotNull($c->locks()->acquire('fork-redis-held', 5));
    }

    public function testManyChildren(): void
    {
        $c = new ClusterManager(Env::redisConfig('forks-' . bin2hex(random_bytes(4))));
        $cache = $c->cache();
        $cache->set('n', 0);
        for ($i = 0; $i < 4; $i++) {
            $this->assertSame($i + 1, $this->inChild(fn () => $cache->increment('n')));
        }
        $this->assertSame(4, $cache->get('n'));
    }
}
