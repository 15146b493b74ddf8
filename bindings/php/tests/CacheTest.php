<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\ClusterManager;
use Clusterkit\DistributedCache;
use Clusterkit\Exception\BackendException;
use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Exception\InvalidArgumentException;
use Clusterkit\Exception\UnavailableException;
use Clusterkit\IgbinarySerializer;
use Clusterkit\JsonSerializer;
use Clusterkit\Library;
use Clusterkit\PhpSerializer;
use Clusterkit\Serializer;
use PHPUnit\Framework\TestCase;

/**
 * DistributedCache beyond the PSR-16 suite, on the embedded backend and on Redis (each test
 * runs against both through the data provider).
 */
final class CacheTest extends TestCase
{
    /** @var list<ClusterManager> */
    private array $made = [];

    public static function backends(): array
    {
        return ['embedded' => ['embedded'], 'redis' => ['redis']];
    }

    private function cache(string $backend, ?Serializer $serializer = null, ?int $defaultTtl = null): DistributedCache
    {
        $ns = 'unit-' . bin2hex(random_bytes(4));
        $config = $backend === 'redis' ? Env::redisConfig($ns) : ['cache' => ['namespace' => $ns]];
        $c = new ClusterManager($config);
        $this->made[] = $c;
        return $c->cache($serializer, $defaultTtl);
    }

    protected function tearDown(): void
    {
        foreach ($this->made as $c) {
            $c->cache()->clear();
        }
        $this->made = [];
    }

    /**
     * TTLs keep PSR-16's meaning (0 or negative, or a negative DateInterval: the entry is
     * deleted) but nonsense is refused naming the field: more than 100 years (an int that
     * overflowed into milliseconds used to become a float and a TypeError, or a wrapped
     * number), a DateInterval of centuries, a negative or absurd default TTL.
     *
     * @dataProvider backends
     */
    public function testOutOfRangeTtlsNameTheField(string $backend): void
    {
        $cache = $this->cache($backend);
        $cache->set('k', 'v', DistributedCache::MAX_TTL_SECONDS);
        $this->assertSame('v', $cache->get('k'));
        $neg = new \DateInterval('PT1H');
        $neg->invert = 1;
        $cache->set('k', 'v', $neg); // PSR-16: expired, so deleted
        $this->assertFalse($cache->has('k'));
        $cache->set('k', 'v');
        $cache->set('k', 'v', -5);
        $this->assertFalse($cache->has('k'));
        $bad = [DistributedCache::MAX_TTL_SECONDS + 1, PHP_INT_MAX, intdiv(PHP_INT_MAX, 1000) + 1, new \DateInterval('P101Y'), new \DateInterval('P99999Y')];
        foreach ($bad as $ttl) {
            $shown = $ttl instanceof \DateInterval ? $ttl->format('%yy') : (string) $ttl;
            foreach (['set', 'setRaw', 'add', 'setMultiple'] as $op) {
                try {
                    match ($op) {
                        'set' => $cache->set('k', 'v', $ttl),
                        'setRaw' => $cache->setRaw('k', 'v', $ttl),
                        'add' => $cache->add('k', 'v', $ttl),
                        'setMultiple' => $cache->setMultiple(['k' => 'v'], $ttl),
                    };
                    $this->fail("$op accepted ttl $shown");
                } catch (InvalidArgumentException $e) {
                    $this->assertStringContainsString('invalid ttl', $e->getMessage(), "$op ttl $shown");
                    $this->assertInstanceOf(\Psr\SimpleCache\InvalidArgumentException::class, $e);
                }
            }
        }
        $this->assertFalse($cache->has('k'), 'nothing was written');
        // decrement(PHP_INT_MIN) would negate into a float: refused by name.
        try {
            $cache->decrement('n', PHP_INT_MIN);
            $this->fail('decrement by PHP_INT_MIN accepted');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('invalid by', $e->getMessage());
        }
        $this->assertFalse($cache->has('n'));
        foreach ([-1, DistributedCache::MAX_TTL_SECONDS + 1, PHP_INT_MAX] as $default) {
            try {
                $this->cache($backend, null, $default);
                $this->fail("accepted default TTL $default");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString('invalid defaultTtl', $e->getMessage());
            }
        }
    }

    /** @dataProvider backends */
    public function testBadKeysAreRejectedBeforeAnyCall(string $backend): void
    {
        $cache = $this->cache($backend);
        $bad = ['', 'a{b', 'a}b', 'a(b', 'a)b', 'a/b', 'a\\b', 'a@b', 'a:b', 1, 1.5, true, null, [], new \stdClass()];
        foreach ($bad as $key) {
            foreach (['get', 'has', 'delete'] as $method) {
                try {
                    $cache->$method($key);
                    $this->fail("$method accepted " . var_export($key, true));
                } catch (InvalidArgumentException $e) {
                    $this->assertInstanceOf(\Psr\SimpleCache\InvalidArgumentException::class, $e);
                    $this->assertInstanceOf(\Psr\SimpleCache\CacheException::class, $e);
                    $this->assertStringStartsWith('invalid key', $e->getMessage());
                }
            }
        }
        try {
            $cache->set('a:b', 1);
            $this->fail('set accepted a reserved character');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('"a:b"', $e->getMessage());
        }
        try {
            $cache->getMultiple(['ok', 'a/b']);
            $this->fail('getMultiple accepted a reserved character');
        } catch (InvalidArgumentException) {
        }
        try {
            $cache->getMultiple('not iterable');
            $this->fail('getMultiple accepted a string');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('Traversable', $e->getMessage());
        }
        $this->assertFalse($cache->has('ok'), 'no partial effect');
    }

    /** @dataProvider backends */
    public function testTheLibrarysKeyLimitIsAnInvalidArgument(string $backend): void
    {
        $cache = $this->cache($backend);
        $this->assertTrue($cache->set(str_repeat('k', 4096), 'max'));
        $this->assertSame('max', $cache->get(str_repeat('k', 4096)));
        try {
            $cache->set(str_repeat('k', 4097), 'too long');
            $this->fail('a 4097-byte key was accepted');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('key', $e->getMessage()); // the library's message
        }
        $this->expectException(InvalidArgumentException::class);
        $cache->get(str_repeat('k', 4097));
    }

    /** @dataProvider backends */
    public function testTtls(string $backend): void
    {
        $cache = $this->cache($backend);
        $cache->set('a', 1, 1);
        $cache->set('b', 2, new \DateInterval('PT1S'));
        $cache->set('c', 3);
        $cache->setMultiple(['d' => 4, 'e' => 5], 1);
        $cache->set('z', 'x');
        $this->assertTrue($cache->set('z', 'gone', 0), 'ttl 0 deletes');
        $this->assertFalse($cache->has('z'));
        $cache->set('z', 'x');
        $cache->set('z', 'gone', new \DateInterval('PT0S'));
        $this->assertFalse($cache->has('z'), 'an empty DateInterval deletes');
        $past = new \DateInterval('PT10S');
        $past->invert = 1;
        $cache->set('z', 'x');
        $cache->set('z', 'gone', $past);
        $this->assertFalse($cache->has('z'), 'a negative DateInterval deletes');
        $this->assertSame([1, 2, 3, 4, 5], array_values($cache->getMultiple(['a', 'b', 'c', 'd', 'e'])));
        usleep(1_300_000);
        $this->assertSame(['a' => null, 'b' => null, 'c' => 3, 'd' => null, 'e' => null], $cache->getMultiple(['a', 'b', 'c', 'd', 'e']));
        foreach (['1', 1.5, true, 'PT1S', new \stdClass()] as $bad) {
            try {
                $cache->set('k', 'v', $bad);
                $this->fail('ttl accepted: ' . var_export($bad, true));
            } catch (InvalidArgumentException $e) {
                $this->assertStringStartsWith('invalid ttl', $e->getMessage());
            }
        }
    }

    /** @dataProvider backends */
    public function testDefaultTtl(string $backend): void
    {
        $cache = $this->cache($backend, null, 1);
        $cache->set('a', 'short');
        $cache->set('b', 'longer', 60);
        usleep(1_300_000);
        $this->assertNull($cache->get('a'));
        $this->assertSame('longer', $cache->get('b'));
    }

    /** @dataProvider backends */
    public function testValuesRoundTrip(string $backend): void
    {
        $cache = $this->cache($backend);
        $obj = new \ArrayObject(['x' => 1]);
        $values = [
            'string' => 'hello', 'empty' => '', 'binary' => random_bytes(300), 'int' => 42, 'negative' => -7,
            'big' => PHP_INT_MAX, 'float' => 1.5, 'float-int' => 2.0, 'true' => true, 'false' => false, 'null' => null,
            'array' => ['a' => [1, 2, ['b' => null]]], 'object' => $obj, 'numeric-string' => '123', 'neg-string' => '-5',
        ];
        foreach ($values as $k => $v) {
            $this->assertTrue($cache->set($k, $v));
        }
        foreach ($values as $k => $v) {
            if (is_object($v)) {
                $this->assertEquals($v, $cache->get($k, 'default'), $k);
            } else {
                $this->assertSame($v, $cache->get($k, 'default'), $k);
            }
            $this->assertTrue($cache->has($k), $k);
        }
        $this->assertSame($values['false'], $cache->get('false', 'default'), 'a stored false is not a miss');
        $got = $cache->getMultiple(array_keys($values), 'default');
        $this->assertEquals($values, $got);
        $this->assertSame(array_keys($values), array_keys($got), 'in the order asked');
    }

    /** @dataProvider backends */
    public function testLargeValuesBypassTheReaderBuffer(string $backend): void
    {
        $cache = $this->cache($backend);
        foreach ([DistributedCache::BUFFER_SIZE - 20, DistributedCache::BUFFER_SIZE + 1, 3 << 20] as $size) {
            $v = random_bytes($size);
            $cache->set("v$size", $v);
            $this->assertSame($v, $cache->get("v$size"), "value of $size bytes");
            $cache->setRaw("r$size", $v);
            $this->assertSame($v, $cache->getRaw("r$size"), "raw value of $size bytes");
        }
        $many = $cache->getMultiple(['v' . (3 << 20), 'missing']);
        $this->assertSame(strlen(serialize(random_bytes(3 << 20))), strlen(serialize($many['v' . (3 << 20)])));
        $this->assertNull($many['missing']);
    }

    /** @dataProvider backends */
    public function testBatchReadsInOneCall(string $backend): void
    {
        $cache = $this->cache($backend);
        // The library has the one-call batch read (ck_reader_get_many): that path is tested.
        $this->assertTrue(Library::load()->has('ck_reader_get_many'));
        // An answer larger than the reader's buffer although every value is small.
        $values = [];
        for ($i = 0; $i < 200; $i++) {
            $values["b$i"] = $i % 3 === 0 ? $i : str_repeat(chr(97 + $i % 26), 1000 + $i);
        }
        $this->assertTrue($cache->setMultiple($values));
        $keys = array_keys($values);
        array_splice($keys, 100, 0, ['absent1', 'absent2']);
        $got = $cache->getMultiple($keys, 'dflt');
        $this->assertSame($keys, array_keys($got), 'in the order asked');
        $want = [];
        foreach ($keys as $k) {
            $want[$k] = $values[$k] ?? 'dflt';
        }
        $this->assertSame($want, $got);
        $this->assertSame(99, $got['b99'], 'integers come back as integers');
        $raw = $cache->getManyRaw(['b1', 'absent1', 'b3']);
        $this->assertSame([serialize($values['b1']), null, '3'], $raw);
        // Bytes that are not a serialized value: BackendException, naming the size only.
        $cache->setRaw('junk', 'not-serialized-secret');
        try {
            $cache->getMultiple(['b1', 'junk']);
            $this->fail('getMultiple decoded junk');
        } catch (BackendException $e) {
            $this->assertStringContainsString('21 bytes', $e->getMessage());
            $this->assertStringNotContainsString('secret', $e->getMessage());
        }
    }

    /** @dataProvider backends */
    public function testBatches(string $backend): void
    {
        $cache = $this->cache($backend);
        $this->assertSame([], $cache->getMultiple([]));
        $this->assertTrue($cache->setMultiple([]));
        $this->assertTrue($cache->deleteMultiple([]));
        $values = [];
        for ($i = 0; $i < 300; $i++) {
            $values["k$i"] = str_repeat(chr(65 + $i % 26), $i);
        }
        $this->assertTrue($cache->setMultiple(new \ArrayIterator($values)));
        $this->assertSame($values, $cache->getMultiple(array_keys($values)));
        $gen = (function () {
            yield 'k1';
            yield 'nope';
            yield 'k1';
        })();
        $this->assertSame(['k1' => 'B', 'nope' => 'dflt'], $cache->getMultiple($gen, 'dflt'), 'generators and duplicates');
        $this->assertTrue($cache->deleteMultiple(array_slice(array_keys($values), 0, 150)));
        $left = array_filter($cache->getMultiple(array_keys($values)), fn ($v) => $v !== null);
        $this->assertCount(150, $left);
        $this->assertSame([null, serialize($values['k151'])], $cache->getManyRaw(['k0', 'k151']), 'raw batch, absent = null');
        $this->assertTrue($cache->setMultiple(['x' => 1, 'y' => 2], 0), 'ttl 0 deletes them');
        $this->assertSame(['x' => null, 'y' => null], $cache->getMultiple(['x', 'y']));
    }

    /** @dataProvider backends */
    public function testIncrementAndAdd(string $backend): void
    {
        $cache = $this->cache($backend);
        $this->assertSame(1, $cache->increment('n'));
        $this->assertSame(11, $cache->increment('n', 10));
        $this->assertSame(8, $cache->decrement('n', 3));
        $this->assertSame(8, $cache->get('n'), 'counters read back as ints');
        $cache->set('m', 41);
        $this->assertSame(42, $cache->increment('m'), 'ints set through PSR-16 can be incremented');
        $this->assertSame(['n' => 8, 'm' => 42], $cache->getMultiple(['n', 'm']));
        $this->assertTrue($cache->add('fresh', ['v' => 1], 60));
        $this->assertFalse($cache->add('fresh', 'other'));
        $this->assertSame(['v' => 1], $cache->get('fresh'));
        $this->assertFalse($cache->add('never', 'x', 0), 'ttl 0: nothing added');
        $this->assertFalse($cache->has('never'));
    }

    /** @dataProvider backends */
    public function testIncrementOfANonIntegerFailsAndTheCacheGoesOn(string $backend): void
    {
        $cache = $this->cache($backend);
        $cache->set('s', 'text');
        try {
            $cache->increment('s');
            $this->fail('incremented a string');
        } catch (ClusterkitException $e) {
            $this->assertNotInstanceOf(InvalidArgumentException::class, $e);
            $this->assertNotSame('', $e->getMessage());
        }
        // The server's error reply is the caller's mistake, not a sick node: reads and writes
        // of other keys go on as before.
        $this->assertSame('text', $cache->get('s'));
        $cache->set('other', 'value');
        $this->assertSame('value', $cache->get('other'));
    }

    /** @dataProvider backends */
    public function testRawApiAndDeleteResult(string $backend): void
    {
        $cache = $this->cache($backend);
        $cache->setRaw('raw:key/with@reserved', "\x00bytes\xff");
        $this->assertSame("\x00bytes\xff", $cache->getRaw('raw:key/with@reserved'));
        $this->assertNull($cache->getRaw('absent:key'));
        $this->assertTrue($cache->deleteRaw('raw:key/with@reserved'));
        $this->assertFalse($cache->deleteRaw('raw:key/with@reserved'));
        $cache->setRaw('bad', 'not serialized');
        $this->expectException(BackendException::class);
        $cache->get('bad');
    }

    /** @dataProvider backends */
    public function testRemember(string $backend): void
    {
        $cache = $this->cache($backend);
        $calls = 0;
        $f = function () use (&$calls) {
            $calls++;
            return ['computed' => true];
        };
        $this->assertSame(['computed' => true], $cache->remember('r', 60, $f));
        $this->assertSame(['computed' => true], $cache->remember('r', 60, $f));
        $this->assertSame(1, $calls);
    }

    /** @dataProvider backends */
    public function testClearIsPerNamespace(string $backend): void
    {
        $a = $this->cache($backend);
        $b = $this->cache($backend);
        $a->set('k', 'a');
        $b->set('k', 'b');
        $a->set('k2', 'a');
        $this->assertSame(2, $a->clearCount());
        $this->assertNull($a->get('k'));
        $this->assertSame('b', $b->get('k'));
    }

    /** @dataProvider backends */
    public function testSerializers(string $backend): void
    {
        $json = $this->cache($backend, new JsonSerializer());
        $json->set('j', ['a' => 1, 'b' => [true, null, 1.0]]);
        $this->assertSame(['a' => 1, 'b' => [true, null, 1.0]], $json->get('j'));
        $this->assertSame('{"a":1,"b":[true,null,1.0]}', $json->getRaw('j'), 'readable by other languages');
        $json->set('n', 5);
        $this->assertSame(6, $json->increment('n'));
        $this->assertSame(6, $json->get('n'));
        $json->setRaw('not-json', '{');
        try {
            $json->get('not-json');
            $this->fail('bad JSON decoded');
        } catch (BackendException) {
        }
        try {
            $json->set('bad', NAN);
            $this->fail('NAN encoded');
        } catch (InvalidArgumentException) {
        }

        $php = $this->cache($backend, new PhpSerializer(allowedClasses: false));
        $php->set('o', new \ArrayObject([1]));
        $this->assertInstanceOf(\__PHP_Incomplete_Class::class, $php->get('o'));

        if (!extension_loaded('igbinary')) {
            $this->fail('the igbinary extension is missing (Debian: php8.2-igbinary)');
        }
        $ig = $this->cache($backend, new IgbinarySerializer());
        $ig->set('i', ['x' => [1, 2, 3], 'o' => new \ArrayObject(['y'])]);
        $this->assertEquals(['x' => [1, 2, 3], 'o' => new \ArrayObject(['y'])], $ig->get('i'));
        $ig->set('null', null);
        $this->assertNull($ig->get('null', 'default'));
        $this->assertTrue($ig->has('null'));
        $this->assertSame("\x00\x00\x00\x02", substr((string) $ig->getRaw('i'), 0, 4));
    }

    public function testRedisDownIsAnError(): void
    {
        // A port nobody listens on: reads and writes fail with the library's error (a cache
        // that silently loses writes would be worse), quickly thanks to the timeout.
        $sock = stream_socket_server('tcp://127.0.0.1:0');
        $name = stream_socket_get_name($sock, false);
        fclose($sock);
        $port = (int) substr($name, strrpos($name, ':') + 1);
        $c = new ClusterManager(['cache' => ['redis' => "127.0.0.1:$port", 'timeout' => '200ms', 'on_unavailable' => 'error']]);
        $t = microtime(true);
        try {
            $c->cache()->set('k', 'v');
            $this->fail('a write to a dead server succeeded');
        } catch (ClusterkitException $e) {
            $this->assertContains($e->kind(), ['unavailable', 'timeout', 'backend']);
            $this->assertNotSame('', $e->getMessage());
            $this->assertInstanceOf(\Psr\SimpleCache\CacheException::class, $e);
        }
        $this->assertLessThan(5.0, microtime(true) - $t);
    }
}
