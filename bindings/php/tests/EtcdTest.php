<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\Exception\ConflictException;
use Clusterkit\Exception\InvalidArgumentException;
use PHPUnit\Framework\TestCase;

/**
 * etcd discovery and locks (issue #17) through the config document alone: the package has no
 * etcd logic, the core does it. Runs a private 3-member etcd (scripts/etcd-cluster).
 */
final class EtcdTest extends TestCase
{
    private static string $dir = '';
    /** @var list<string> */
    private static array $eps = [];

    private static function script(): string
    {
        return dirname(__DIR__, 3) . '/scripts/etcd-cluster';
    }

    public static function setUpBeforeClass(): void
    {
        self::$dir = sys_get_temp_dir() . '/ck-etcd-php-' . bin2hex(random_bytes(4));
        $out = [];
        exec(escapeshellarg(self::script()) . ' start ' . escapeshellarg(self::$dir) . ' 2>&1', $out, $rc);
        if ($rc !== 0) {
            throw new \RuntimeException('cannot start etcd: ' . implode("\n", $out));
        }
        self::$eps = explode(',', trim((string) end($out)));
    }

    public static function tearDownAfterClass(): void
    {
        exec(escapeshellarg(self::script()) . ' stop ' . escapeshellarg(self::$dir));
    }

    private static function etcdctl(string ...$args): string
    {
        $cmd = 'ETCDCTL_API=3 etcdctl --command-timeout=5s --endpoints=' . escapeshellarg(implode(',', self::$eps));
        foreach ($args as $a) {
            $cmd .= ' ' . escapeshellarg($a);
        }
        exec($cmd . ' 2>&1', $out, $rc);
        if ($rc !== 0) {
            throw new \RuntimeException("etcdctl failed: " . implode("\n", $out));
        }
        return implode("\n", $out);
    }

    private static function until(string $what, callable $check, float $seconds = 20.0): void
    {
        $end = microtime(true) + $seconds;
        while (!$check()) {
            if (microtime(true) > $end) {
                self::fail("timed out after {$seconds} s waiting for $what");
            }
            usleep(20000);
        }
    }

    public function testDiscoveryAndLocksFromTheConfigDocument(): void
    {
        $lease = explode(' ', self::etcdctl('lease', 'grant', '60'))[1];
        self::etcdctl('put', "--lease=$lease", '/php/web/n1', '{"id":"n1","host":"127.0.0.1","port":8001}');
        self::etcdctl('put', '/php/web/junk', '{not json');
        $ck = new ClusterManager([
            'pools' => ['web' => ['strategy' => 'round_robin',
                'discovery' => ['etcd' => ['endpoints' => self::$eps, 'prefix' => '/php/web/', 'ttl' => '2s']]]],
            'locks' => ['etcd' => ['endpoints' => self::$eps, 'prefix' => '/php/locks/']],
        ]);
        $web = $ck->pool('web');
        self::until('n1 discovered', fn () => $web->count() === 1);
        $this->assertNotNull($web->node('n1'));
        $this->assertNull($web->node('junk'));

        // Locks: the same API as on Redis; the fencing token is etcd's create revision.
        $locks = $ck->locks();
        $a = $locks->acquire('job', 5);
        $this->assertTrue($a->isHeld());
        $this->assertGreaterThan(0, $a->fencingToken());
        $this->assertNull($locks->tryAcquire('job', 5));
        try {
            $locks->acquire('job', 5);
            $this->fail('acquired a held lock');
        } catch (ConflictException $e) {
            $this->assertSame('conflict', $e->kind());
        }
        $this->assertStringContainsString('/php/locks/job/', self::etcdctl('get', '--prefix', '/php/locks/', '--keys-only'));
        $this->assertStringNotContainsString($a->token, self::etcdctl('get', '--prefix', '/php/locks/'));
        $f1 = $a->fencingToken();
        $a->release();
        $this->assertSame('', trim(self::etcdctl('get', '--prefix', '/php/locks/', '--keys-only')));
        $b = $locks->acquire('job', 5, 5.0);
        $this->assertGreaterThan($f1, $b->fencingToken());
        $b->release();

        // The node's lease is revoked (its process died): it leaves the pool.
        self::etcdctl('lease', 'revoke', $lease);
        self::until('n1 gone after its lease', fn () => $web->count() === 0);
    }

    public function testBadEtcdSectionNamesTheField(): void
    {
        try {
            new ClusterManager(['locks' => ['etcd' => ['endpoints' => ['nohost']]]]);
            $this->fail('accepted a bad endpoint');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('locks.etcd.endpoints[0]', $e->getMessage());
        }
        try {
            new ClusterManager(['locks' => ['etcd' => ['endpoints' => ['127.0.0.1:1'], 'user' => 'u',
                'password' => 's3cr3t-etcd', 'password_env' => 'X']]]);
            $this->fail('accepted two password sources');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('password', $e->getMessage());
            $this->assertStringNotContainsString('s3cr3t-etcd', $e->getMessage());
        }
    }
}
