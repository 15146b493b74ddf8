<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\DistributedLock;
use Clusterkit\Exception\ClosedException;
use Clusterkit\Exception\ConflictException;
use Clusterkit\Exception\InvalidArgumentException;
use Clusterkit\Exception\TimeoutException;
use Clusterkit\Lock;
use PHPUnit\Framework\TestCase;

/** DistributedLock and Lock on the embedded lock service and on one Redis. */
final class LockTest extends TestCase
{
    public static function backends(): array
    {
        return ['embedded' => ['embedded'], 'redis' => ['redis']];
    }

    private function locks(string $backend): DistributedLock
    {
        $c = new ClusterManager($backend === 'redis' ? Env::redisConfig() : null);
        return $c->locks();
    }

    private static function name(): string
    {
        return 'lock-' . bin2hex(random_bytes(6));
    }

    /** @dataProvider backends */
    public function testAcquireAndConflict(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $lock = $locks->acquire($name, 10);
        $this->assertInstanceOf(Lock::class, $lock);
        $this->assertSame($name, $lock->name);
        $this->assertNotSame('', $lock->token);
        $this->assertGreaterThan(0, $lock->fencingToken());
        $this->assertTrue($lock->isHeld());
        $this->assertGreaterThan(9.0, $lock->validity());
        $this->assertLessThanOrEqual(10.0, $lock->validity());
        try {
            $locks->acquire($name, 10);
            $this->fail('acquired a held lock');
        } catch (ConflictException $e) {
            $this->assertSame('conflict', $e->kind());
            $this->assertStringContainsString($name, $e->getMessage());
        }
        $this->assertNull($locks->tryAcquire($name, 10));
        $lock->release();
        $this->assertFalse($lock->isHeld());
        $this->assertSame(0.0, $lock->validity());
    }

    /**
     * `fencing: false` (issue #18): no fencing token (asking for it is a NotFoundException
     * naming the option), still exclusive against fenced acquisitions, and fenced tokens keep
     * increasing around it.
     *
     * @dataProvider backends
     */
    public function testWithoutFencing(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $fenced = $locks->acquire($name, 10);
        $this->assertTrue($fenced->hasFencingToken());
        $first = $fenced->fencingToken();
        $fenced->release();
        $plain = $locks->acquire($name, 10, 0.0, fencing: false);
        $this->assertFalse($plain->hasFencingToken());
        try {
            $plain->fencingToken();
            $this->fail('an unfenced lock returned a fencing token');
        } catch (\Clusterkit\Exception\NotFoundException $e) {
            $this->assertSame('not_found', $e->kind());
            $this->assertStringContainsString('fencing = false', $e->getMessage());
            $this->assertStringContainsString($name, $e->getMessage());
            $this->assertStringNotContainsString($plain->token, $e->getMessage());
        }
        $this->assertTrue($plain->isHeld());
        $this->assertNull($locks->tryAcquire($name, 10));
        $this->assertNull($locks->tryAcquire($name, 10, 0.0, false));
        $plain->extend(10);
        $plain->release();
        $again = $locks->tryAcquire($name, 10);
        $this->assertNotNull($again);
        $this->assertGreaterThan($first, $again->fencingToken());
        $again->release();
        $seen = $locks->synchronized($name, fn (Lock $l) => $l->hasFencingToken(), 5, 1, fencing: false);
        $this->assertFalse($seen);
    }

    /** @dataProvider backends */
    public function testWaitTimesOut(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $held = $locks->acquire($name, 10);
        $t = microtime(true);
        try {
            $locks->acquire($name, 10, 0.3);
            $this->fail('acquired a held lock');
        } catch (TimeoutException $e) {
            $this->assertSame('timeout', $e->kind());
        }
        $elapsed = microtime(true) - $t;
        $this->assertGreaterThanOrEqual(0.28, $elapsed);
        $this->assertLessThan(1.5, $elapsed, 'the wait ends at its deadline, not much later');
        $this->assertNull($locks->tryAcquire($name, 10, 0.05));
        $held->release();
    }

    /** @dataProvider backends */
    public function testAWaiterGetsTheLockWhenItExpires(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $first = $locks->acquire($name, 0.3);
        $t = microtime(true);
        $second = $locks->acquire($name, 10, 5);
        // Not before the first one's TTL (0.3 s), and soon after it: the waiter sleeps until
        // the holder's remaining TTL, not for its whole wait (5 s).
        $waited = microtime(true) - $t;
        $this->assertGreaterThanOrEqual(0.25, $waited);
        $this->assertLessThan(1.5, $waited);
        $this->assertGreaterThan($first->fencingToken(), $second->fencingToken());
        $this->assertFalse($first->isHeld(), 'the first holder knows it expired');
        try {
            $first->release();
            $this->fail('released a lock that was taken over');
        } catch (ConflictException) {
        }
        $second->release();
    }

    /** @dataProvider backends */
    public function testFencingTokensStrictlyIncrease(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $last = 0;
        for ($i = 0; $i < 20; $i++) {
            $lock = $locks->acquire($name, 5);
            $this->assertGreaterThan($last, $lock->fencingToken());
            $last = $lock->fencingToken();
            $lock->release();
        }
        // Another lock service handle (another process in real life) continues the sequence.
        $other = $this->locks($backend);
        if ($backend === 'redis') {
            $lock = $other->acquire($name, 5);
            $this->assertGreaterThan($last, $lock->fencingToken());
            $lock->release();
        } else {
            $this->assertGreaterThan(0, $other->acquire($name, 5)->fencingToken());
        }
    }

    /** @dataProvider backends */
    public function testExtendAndRelease(string $backend): void
    {
        $locks = $this->locks($backend);
        $lock = $locks->acquire(self::name(), 1);
        $lock->extend(20);
        $this->assertGreaterThan(15.0, $lock->validity());
        $lock->release();
        try {
            $lock->extend(5);
            $this->fail('extended a released lock');
        } catch (ClosedException $e) {
            $this->assertSame('closed', $e->kind());
        }
        $this->expectException(ClosedException::class);
        $lock->release();
    }

    /** @dataProvider backends */
    public function testExtendingALostLockConflicts(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $lock = $locks->acquire($name, 0.2);
        usleep(300_000);
        $thief = $locks->acquire($name, 10);
        try {
            $lock->extend(10);
            $this->fail('extended a lost lock');
        } catch (ConflictException) {
        }
        $this->assertFalse($lock->isHeld());
        $thief->release();
    }

    /** @dataProvider backends */
    public function testSynchronizedAlwaysReleases(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $seen = null;
        $result = $locks->synchronized($name, function (Lock $lock) use (&$seen) {
            $seen = $lock;
            return 'result';
        }, 10, 1);
        $this->assertSame('result', $result);
        $this->assertFalse($seen->isHeld());
        $locks->acquire($name, 1)->release(); // free again

        try {
            $locks->synchronized($name, function () {
                throw new \DomainException('boom');
            }, 10, 1);
            $this->fail('no exception');
        } catch (\DomainException $e) {
            $this->assertSame('boom', $e->getMessage(), "the callable's exception, not the release's");
        }
        $locks->acquire($name, 1)->release(); // released despite the exception

        // Work that outlived its lock is reported.
        try {
            $locks->synchronized($name, function () use ($locks, $name) {
                usleep(300_000);
                $locks->acquire($name, 5); // someone else took it meanwhile
                return 'too late';
            }, 0.2, 1);
            $this->fail('a lost lock went unnoticed');
        } catch (ConflictException) {
        }
    }

    /** @dataProvider backends */
    public function testADroppedLockIsReleased(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $lock = $locks->acquire($name, 30);
        unset($lock); // released in the background
        $again = $locks->acquire($name, 5, 2);
        $this->assertTrue($again->isHeld());
        $again->release();
    }

    /** @dataProvider backends */
    public function testBadArguments(string $backend): void
    {
        $locks = $this->locks($backend);
        foreach ([['', 10], [self::name(), 0], [self::name(), -1], [self::name(), 1e12]] as [$name, $ttl]) {
            try {
                $locks->acquire($name, $ttl);
                $this->fail("accepted name '$name' ttl $ttl");
            } catch (InvalidArgumentException $e) {
                $this->assertNotSame('', $e->getMessage());
            }
        }
    }

    /**
     * Out-of-range numbers are refused with the parameter's name, before any call: nothing
     * is clamped (1e12 s used to become 1 ms) or turned into "no wait".
     *
     * @dataProvider backends
     */
    public function testOutOfRangeNumbersNameTheParameter(string $backend): void
    {
        $locks = $this->locks($backend);
        $name = self::name();
        $cases = [
            [NAN, 0.0, 'ttlSeconds'], [INF, 0.0, 'ttlSeconds'], [-INF, 0.0, 'ttlSeconds'],
            [-0.5, 0.0, 'ttlSeconds'], [0.0, 0.0, 'ttlSeconds'], [1e12, 0.0, 'ttlSeconds'],
            [86_400.5, 0.0, 'ttlSeconds'], [(float) PHP_INT_MAX, 0.0, 'ttlSeconds'],
            [10.0, NAN, 'waitSeconds'], [10.0, INF, 'waitSeconds'], [10.0, -1.0, 'waitSeconds'],
            [10.0, 86_401.0, 'waitSeconds'], [10.0, 1e300, 'waitSeconds'],
        ];
        foreach ($cases as [$ttl, $wait, $field]) {
            try {
                $locks->acquire($name, $ttl, $wait);
                $this->fail("accepted ttl $ttl wait $wait");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString("invalid $field", $e->getMessage(), "ttl $ttl wait $wait");
                $this->assertSame('invalid_argument', $e->kind());
            }
        }
        // The boundaries pass: 24 h TTL, no wait; a tiny positive TTL is 1 ms, not 0.
        $lock = $locks->acquire($name, 86_400.0, 0.0);
        $this->assertGreaterThan(85_000.0, $lock->validity()); // minus a ~1% clock drift margin
        foreach ([NAN, INF, -1.0, 0.0, 86_400.001] as $bad) {
            try {
                $lock->extend($bad);
                $this->fail("extend accepted $bad");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString('invalid ttlSeconds', $e->getMessage());
            }
        }
        $this->assertTrue($lock->isHeld());
        $lock->release();
        $this->assertSame(1, DistributedLock::ms(0.0001));
        $this->assertSame(0, DistributedLock::ms(0.0, 'waitSeconds', DistributedLock::MAX_WAIT_SECONDS, true));
    }
}
