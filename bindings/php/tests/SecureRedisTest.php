<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Exception\ConflictException;
use Clusterkit\Exception\TimeoutException;
use Clusterkit\Exception\UnavailableException;
use PHPUnit\Framework\TestCase;

/**
 * Production connections from PHP: three TLS-only redis-servers with an ACL user and mutual
 * TLS (started by run-tests), the password taken from an environment variable, database 6.
 * The cache, Redlock, sessions, the Redis health check and registry discovery work; a wrong
 * password fails with UnavailableException ("authentication failed") whose message never
 * holds the password, and the registry pool reports a discovery problem without it.
 */
final class SecureRedisTest extends TestCase
{
    private static function manager(array $password): ClusterManager
    {
        return new ClusterManager(Env::secureConfig($password));
    }

    public function testCacheLocksAndSessionsOverAclAndMutualTls(): void
    {
        $ck = self::manager(['password_env' => 'CK_TEST_SECURE_PASSWORD']);

        $cache = $ck->cache();
        $key = 'greeting-' . bin2hex(random_bytes(4));
        $this->assertTrue($cache->set($key, ['hello' => 'world'], 60));
        $this->assertSame(['hello' => 'world'], $cache->get($key));
        $this->assertTrue($cache->has($key));

        // Redlock over the three masters. A first TLS handshake per master may exceed the
        // masters' 500 ms connect timeout on a loaded machine: warm up (bounded).
        $locks = $ck->locks();
        // A fresh name per attempt: a timed-out attempt may still hold its key on some
        // masters until its TTL passes.
        for ($i = 0; $i < 10; $i++) {
            try {
                $locks->acquire('php-secure-warmup-' . bin2hex(random_bytes(4)), 1.0)->release();
                break;
            } catch (UnavailableException | TimeoutException | ConflictException) {
                // Still slower than the connect timeout (a split vote may read as a conflict).
                usleep(100_000);
            }
        }
        $name = 'php-secure-lock-' . bin2hex(random_bytes(4));
        $lock = $locks->acquire($name, 10.0);
        $this->assertGreaterThan(0, $lock->fencingToken());
        $this->assertNull($locks->tryAcquire($name, 10.0));
        $lock->release();
        $again = $locks->acquire($name, 10.0);
        $this->assertGreaterThan($lock->fencingToken(), $again->fencingToken());
        $again->release();

        $session = $ck->createSession();
        $session->set('user', 'alice');
        $session->save();
        $id = $session->id();
        $loaded = $ck->loadSession($id, true);
        $this->assertNotNull($loaded);
        $this->assertSame('alice', $loaded->get('user'));
        $loaded->set('visits', 2);
        $loaded->save();
        $this->assertSame(2, $ck->loadSession($id)?->get('visits'));

        // Health: the Redis PING check passes on both shards (bounded wait).
        $deadline = microtime(true) + 30;
        while ($ck->pool('cache')->healthyCount() < 2 && microtime(true) < $deadline) {
            usleep(100_000);
        }
        $this->assertSame(2, $ck->pool('cache')->healthyCount());

        // Registry discovery: the node run-tests registered shows up (bounded wait).
        $deadline = microtime(true) + 30;
        while ($ck->pool('app')->node('web-1') === null && microtime(true) < $deadline) {
            usleep(100_000);
        }
        $node = $ck->pool('app')->node('web-1');
        $this->assertNotNull($node);
        $this->assertSame(8081, $node->port);
    }

    public function testWrongPasswordIsUnavailableWithoutTheSecret(): void
    {
        $wrong = 'php-wrong-' . bin2hex(random_bytes(6));
        $right = (string) getenv('CK_TEST_SECURE_PASSWORD');
        $ck = self::manager(['password' => $wrong]);
        $messages = [];
        try {
            $ck->cache()->set('k', 'v');
            $this->fail('a write with a wrong password succeeded');
        } catch (UnavailableException $e) {
            $this->assertStringContainsString('authentication failed', $e->getMessage());
            $messages[] = $e->getMessage();
        }
        try {
            $ck->locks()->acquire('php-secure-x', 1.0);
            $this->fail('a lock with a wrong password was acquired');
        } catch (UnavailableException | TimeoutException $e) {
            // Refused AUTH (unavailable), or on a loaded machine the TLS handshakes outlast the
            // masters' connect timeout first (timed out): either way no lock and no secret.
            $this->assertMatchesRegularExpression('/authentication failed|timed out/', $e->getMessage());
            $messages[] = $e->getMessage();
        }
        try {
            $s = $ck->createSession();
            $s->set('a', 1);
            $s->save();
            $this->fail('a session was saved with a wrong password');
        } catch (ClusterkitException $e) {
            $messages[] = $e->getMessage();
        }
        // The registry pool reports a discovery problem (bounded wait) and finds no node.
        $events = $ck->pool('app')->subscribe();
        $problem = null;
        $deadline = microtime(true) + 30;
        while ($problem === null && microtime(true) < $deadline) {
            $ev = $events->next(0.5);
            if ($ev !== null && $ev->kind === \Clusterkit\Event::DISCOVERY_PROBLEM) {
                $problem = $ev;
            }
        }
        $this->assertNotNull($problem, 'no discovery problem with a wrong password');
        $messages[] = $problem->message . json_encode($problem->data);
        $this->assertNull($ck->pool('app')->node('web-1'));
        $messages[] = json_encode($ck->metrics());
        $messages[] = print_r($ck, true);
        $this->assertCount(6, $messages);
        foreach ($messages as $m) {
            $this->assertStringNotContainsString($wrong, $m);
            $this->assertStringNotContainsString($right, $m);
        }
    }

    public function testConfigErrorsNameTheField(): void
    {
        try {
            new ClusterManager(['redis' => ['password_env' => 'CK_SURELY_UNSET_VARIABLE_4711']]);
            $this->fail('an unset password variable was accepted');
        } catch (\Clusterkit\Exception\InvalidArgumentException $e) {
            $this->assertStringContainsString('redis.password_env', $e->getMessage());
        }
        try {
            new ClusterManager(['redis' => ['tls' => ['ca_file' => '/nonexistent/ca.pem']]]);
            $this->fail('a missing CA file was accepted');
        } catch (\Clusterkit\Exception\InvalidArgumentException $e) {
            $this->assertStringContainsString('redis.tls.ca_file', $e->getMessage());
        }
    }
}
