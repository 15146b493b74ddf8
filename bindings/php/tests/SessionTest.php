<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\DistributedSession;
use Clusterkit\Exception\ClosedException;
use Clusterkit\Exception\NotFoundException;
use Clusterkit\Exception\TimeoutException;
use Clusterkit\JsonSerializer;
use Clusterkit\SessionHandler;
use PHPUnit\Framework\TestCase;

/**
 * DistributedSession (the field API) and SessionHandler (PHP's handler protocol, called the
 * way PHP calls it, and through session_start() in a child PHP process), embedded and Redis.
 */
final class SessionTest extends TestCase
{
    public static function backends(): array
    {
        return ['embedded' => ['embedded'], 'redis' => ['redis']];
    }

    private function cluster(string $backend, array $sessions = []): ClusterManager
    {
        $config = $backend === 'redis' ? Env::redisConfig('sess-' . bin2hex(random_bytes(4))) : [];
        $config['sessions'] = $sessions + ['lock_wait' => '300ms'];
        return new ClusterManager($config);
    }

    // --- DistributedSession -------------------------------------------------------------------

    /** @dataProvider backends */
    public function testCreateSaveLoad(string $backend): void
    {
        $c = $this->cluster($backend);
        $s = $c->createSession();
        $id = $s->id();
        $this->assertMatchesRegularExpression('/^[A-Za-z0-9]{32}$/', $id);
        $this->assertTrue($s->isNew());
        $this->assertNull($c->loadSession($id), 'nothing stored before save');
        $s->set('user', ['id' => 42, 'name' => 'Ada']);
        $s->set('n', 1);
        $s->setRaw('raw', "\x00\x01");
        $this->assertSame(['id' => 42, 'name' => 'Ada'], $s->get('user'));
        $s->save();
        $this->assertFalse($s->isNew());

        $l = $c->loadSession($id);
        $this->assertNotNull($l);
        $this->assertSame($id, $l->id());
        $this->assertFalse($l->isNew());
        $this->assertSame(['n', 'raw', 'user'], $l->keys());
        $this->assertSame(1, $l->get('n'));
        $this->assertSame(['id' => 42, 'name' => 'Ada'], $l->get('user'));
        $this->assertSame("\x00\x01", $l->getRaw('raw'));
        $this->assertTrue($l->has('n'));
        $this->assertFalse($l->has('nope'));
        $this->assertSame('dflt', $l->get('nope', 'dflt'));
        $l->remove('raw');
        $l->remove('never-there'); // fine
        $l->save();
        $this->assertSame(['n', 'user'], $c->loadSession($id)?->keys());
        $this->assertSame(['n' => 1, 'user' => ['id' => 42, 'name' => 'Ada']], $c->loadSession($id)?->all());
    }

    /** @dataProvider backends */
    public function testUnknownAndMalformedIds(string $backend): void
    {
        $c = $this->cluster($backend);
        foreach (['', 'short', str_repeat('a', 32), str_repeat('!', 32), "../../etc/passwd"] as $id) {
            $this->assertNull($c->loadSession($id), $id);
            $this->assertNull($c->loadSession($id, lock: true), $id);
            $this->assertFalse(DistributedSession::touchId($c, $id));
            $this->assertFalse(DistributedSession::destroyId($c, $id));
        }
    }

    /** @dataProvider backends */
    public function testDeltaSavesDoNotOverwriteOtherFields(string $backend): void
    {
        $c = $this->cluster($backend);
        $s = $c->createSession();
        $s->set('a', 0);
        $s->set('b', 0);
        $s->save();
        $id = $s->id();
        // Two requests load the same session without locking and change different fields.
        $r1 = $c->loadSession($id);
        $r2 = $c->loadSession($id);
        $r1->set('a', 1);
        $r2->set('b', 2);
        $r1->save();
        $r2->save();
        $this->assertSame(['a' => 1, 'b' => 2], $c->loadSession($id)?->all());
    }

    /** @dataProvider backends */
    public function testLockedLoadsAreSerialized(string $backend): void
    {
        $c = $this->cluster($backend);
        $s = $c->createSession();
        $s->set('n', 1);
        $s->save();
        $id = $s->id();
        $first = $c->loadSession($id, lock: true);
        $t = microtime(true);
        try {
            $c->loadSession($id, lock: true);
            $this->fail('two locked loads at once');
        } catch (TimeoutException $e) {
            $this->assertGreaterThanOrEqual(0.25, microtime(true) - $t, 'waited up to lock_wait');
        }
        $this->assertNotNull($c->loadSession($id), 'an unlocked read is not blocked');
        $first->set('n', 2);
        $first->save(); // releases
        $second = $c->loadSession($id, lock: true);
        $this->assertSame(2, $second?->get('n'));
        $second->unlock(); // read, nothing written
        $third = $c->loadSession($id, lock: true);
        $this->assertNotNull($third);
        $third->close(); // a held lock is released in the background
        $this->assertNotNull($this->loadWithin($c, $id, 2.0));
    }

    private function loadWithin(ClusterManager $c, string $id, float $seconds): ?DistributedSession
    {
        $deadline = microtime(true) + $seconds;
        while (true) {
            try {
                return $c->loadSession($id, lock: true);
            } catch (TimeoutException $e) {
                if (microtime(true) > $deadline) {
                    throw $e;
                }
            }
        }
    }

    /** @dataProvider backends */
    public function testRegenerate(string $backend): void
    {
        $c = $this->cluster($backend);
        $s = $c->createSession();
        $s->set('user', 'ada');
        $s->save();
        $old = $s->id();
        $s->set('step', 2); // unsaved: saved by regenerate
        $new = $s->regenerate();
        $this->assertNotSame($old, $new);
        $this->assertSame($new, $s->id());
        $this->assertMatchesRegularExpression('/^[A-Za-z0-9]{32}$/', $new);
        $this->assertNull($c->loadSession($old), 'the old id stops working at once');
        $this->assertSame(['step' => 2, 'user' => 'ada'], $c->loadSession($new)?->all());
    }

    /** @dataProvider backends */
    public function testDestroy(string $backend): void
    {
        $c = $this->cluster($backend);
        $s = $c->createSession();
        $s->set('x', 1);
        $s->save();
        $id = $s->id();
        $other = $c->loadSession($id);
        $s->destroy();
        $this->assertTrue($s->isClosed());
        $this->assertNull($c->loadSession($id));
        $other->set('x', 2);
        try {
            $other->save();
            $this->fail('a destroyed session was saved');
        } catch (NotFoundException $e) {
            $this->assertSame('not_found', $e->kind());
        }
        $this->assertNull($c->loadSession($id), 'not resurrected');
        $this->expectException(ClosedException::class);
        $s->get('x');
    }

    /** @dataProvider backends */
    public function testIdleTimeout(string $backend): void
    {
        $c = $this->cluster($backend, ['idle_timeout' => '1s', 'refresh_interval' => '100ms']);
        $s = $c->createSession();
        $s->set('x', 1);
        $s->save();
        $id = $s->id();
        usleep(600_000);
        $this->assertTrue(DistributedSession::touchId($c, $id), 'touch refreshes');
        usleep(600_000);
        $this->assertNotNull($c->loadSession($id), 'alive: touched 0.6 s ago');
        usleep(1_200_000);
        $this->assertNull($c->loadSession($id), 'idle for more than 1 s');
    }

    /** @dataProvider backends */
    public function testSerializerChoice(string $backend): void
    {
        $c = $this->cluster($backend);
        $s = $c->createSession(new JsonSerializer());
        $s->set('cart', ['apple' => 2]);
        $this->assertSame('{"apple":2}', $s->getRaw('cart'));
        $s->save();
        $this->assertSame(['apple' => 2], $c->loadSession($s->id(), serializer: new JsonSerializer())?->get('cart'));
    }

    // --- SessionHandler, called as PHP calls it -----------------------------------------------

    /** @dataProvider backends */
    public function testHandlerProtocol(string $backend): void
    {
        $c = $this->cluster($backend);
        $h = new SessionHandler($c); // (strict mode is checked by testSessionStartInAPhpProcess)
        $this->assertInstanceOf(\SessionHandlerInterface::class, $h);
        $this->assertInstanceOf(\SessionUpdateTimestampHandlerInterface::class, $h);
        $this->assertInstanceOf(\SessionIdInterface::class, $h);

        // A first visit: no id -> create_sid, read, write, close.
        $this->assertTrue($h->open('', 'PHPSESSID'));
        $id = $h->create_sid();
        $this->assertMatchesRegularExpression('/^[A-Za-z0-9]{32}$/', $id);
        $this->assertFalse($h->validateId($id), 'a fresh id is not a taken one');
        $this->assertSame('', $h->read($id));
        $this->assertTrue($h->write($id, 'n|i:1;'));
        $this->assertTrue($h->close());

        // The next request, on another app server (another handler, same store).
        $h2 = new SessionHandler($c);
        $h2->open('', 'PHPSESSID');
        $this->assertTrue($h2->validateId($id), 'loads it, with the lock');
        $this->assertSame('n|i:1;', $h2->read($id));
        // A concurrent request waits for the lock (here: up to lock_wait, then throws).
        $h3 = new SessionHandler($c);
        try {
            $h3->validateId($id);
            $this->fail('two requests held the session at once');
        } catch (TimeoutException) {
        }
        $this->assertTrue($h2->write($id, 'n|i:2;'));
        $h2->close();
        $this->assertTrue($h3->validateId($id), 'the write released the lock');
        $this->assertSame('n|i:2;', $h3->read($id));
        // Unchanged data (lazy_write): updateTimestamp saves nothing but releases the lock.
        $this->assertTrue($h3->updateTimestamp($id, 'n|i:2;'));
        $h3->close();

        // Read-only request (read_and_close / session_abort): close releases the lock.
        $h4 = new SessionHandler($c);
        $this->assertTrue($h4->validateId($id));
        $h4->read($id);
        $this->assertTrue($h4->close());
        $this->assertTrue($h3->validateId($id));
        $this->assertSame('n|i:2;', $h3->read($id));
        $this->assertTrue($h3->destroy($id));
        $h3->close();
        $this->assertFalse((new SessionHandler($c))->validateId($id), 'destroyed');
        $this->assertSame(0, $h->gc(1440));
        $this->assertFalse((new SessionHandler($c))->updateTimestamp('x', ''), 'touching an unknown id');
    }

    /** @dataProvider backends */
    public function testHandlerWithoutLocking(string $backend): void
    {
        $c = $this->cluster($backend);
        $h = new SessionHandler($c, locking: false);
        $id = $h->create_sid();
        $h->read($id);
        $h->write($id, 'a|i:1;');
        $h->close();
        $a = new SessionHandler($c, locking: false);
        $b = new SessionHandler($c, locking: false);
        $this->assertTrue($a->validateId($id));
        $this->assertTrue($b->validateId($id), 'no lock: both at once');
        $this->assertSame('a|i:1;', $b->read($id));
        $a->close();
        $b->close();
    }

    /** @dataProvider backends */
    public function testSessionStartInAPhpProcess(string $backend): void
    {
        $script = __DIR__ . '/scripts/session-flow.php';
        $cmd = [PHP_BINARY, '-d', 'session.use_cookies=0', '-d', 'session.use_only_cookies=0', '-d', 'session.cache_limiter=', $script, $backend];
        $p = proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        $status = proc_close($p);
        $this->assertSame(0, $status, "session-flow.php failed:\n$out\n$err");
        $r = json_decode($out, true);
        $this->assertIsArray($r, $out . $err);
        $this->assertSame([1, 2, 3], $r['counts']);
        $this->assertNotSame($r['id'], $r['regenerated']);
        $this->assertSame(4, $r['after_regenerate']);
        $this->assertFalse($r['old_id_kept'], 'the old id is gone after session_regenerate_id(true)');
        $this->assertTrue($r['destroyed_gives_new_id']);
        $this->assertSame('', $err);
    }
}
