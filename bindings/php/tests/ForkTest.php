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
     * child leaves through exec, so that no PHPUnit shutdown code runs twice. The child gets
     * its own process group: when it does not exit within `$deadlineSeconds` the whole group
     * (with any process it forked) is killed and the test fails instead of hanging.
     */
    private function inChild(callable $child, float $deadlineSeconds = 30.0): mixed
    {
        $file = tempnam(sys_get_temp_dir(), 'ck-fork');
        $pid = pcntl_fork();
        if ($pid === -1) {
            $this->fail('fork failed');
        }
        if ($pid === 0) {
            posix_setpgid(0, 0);
            try {
                $result = ['ok' => true, 'value' => $child()];
            } catch (\Throwable $e) {
                $result = ['ok' => false, 'error' => get_class($e) . ': ' . $e->getMessage()];
            }
            file_put_contents($file, json_encode($result));
            pcntl_exec('/bin/true');
            posix_kill(posix_getpid(), SIGKILL); // exec failed
        }
        $deadline = microtime(true) + $deadlineSeconds;
        do {
            $done = pcntl_waitpid($pid, $status, WNOHANG);
            if ($done === 0) {
                usleep(10_000);
            }
        } while ($done === 0 && microtime(true) < $deadline);
        if ($done === 0) {
            posix_kill(-$pid, SIGKILL);
            posix_kill($pid, SIGKILL);
            pcntl_waitpid($pid, $status);
            @unlink($file);
            $this->fail(sprintf('the child hung (killed after %.1f s)', $deadlineSeconds));
        }
        $this->assertTrue(pcntl_wifexited($status), 'the child exited normally');
        $result = json_decode((string) file_get_contents($file), true);
        unlink($file);
        $this->assertIsArray($result, 'the child reported');
        $this->assertTrue($result['ok'], $result['error'] ?? '');
        return $result['value'];
    }

    /**
     * The deadline works: a child that hangs (it and a process it forked sleep for a minute)
     * fails the test within about the deadline, and both are killed (the pipe they hold open
     * reaches EOF).
     */
    public function testAHungChildFailsOnTheDeadline(): void
    {
        [$r, $w] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $t0 = microtime(true);
        try {
            $this->inChild(function () use ($r) {
                fclose($r);
                pcntl_fork(); // both processes hold the write end
                sleep(60);
                return null;
            }, 0.5);
            $this->fail('a hanging child was not detected');
        } catch (\PHPUnit\Framework\AssertionFailedError $e) {
            $this->assertStringContainsString('the child hung', $e->getMessage());
        }
        $took = microtime(true) - $t0;
        $this->assertGreaterThanOrEqual(0.45, $took);
        $this->assertLessThan(10.0, $took);
        fclose($w);
        stream_set_timeout($r, 5);
        $this->assertSame('', (string) fread($r, 1), 'the child and its child are gone (EOF)');
        $this->assertTrue(feof($r), 'EOF rather than the 5 s read timeout');
        fclose($r);
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
