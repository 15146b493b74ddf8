<?php

declare(strict_types=1);

namespace Clusterkit\Tests;

use Clusterkit\Cluster;
use Clusterkit\ClusterManager;
use Clusterkit\Event;
use Clusterkit\Exception\ClosedException;
use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Exception\ConflictException;
use Clusterkit\Exception\InvalidArgumentException;
use Clusterkit\Exception\NotFoundException;
use Clusterkit\Exception\UnavailableException;
use Clusterkit\Health;
use Clusterkit\Library;
use Clusterkit\LoadBalancer;
use Clusterkit\Node;
use Clusterkit\Pick;
use PHPUnit\Framework\TestCase;

/** ClusterManager, Cluster, Node, LoadBalancer, Pick, events and the Library loader. */
final class ClusterTest extends TestCase
{
    private static function appConfig(string $strategy = 'round_robin'): array
    {
        return ['pools' => ['app' => ['strategy' => $strategy, 'nodes' => [
            new Node('web-1', '127.0.0.1', 8081, weight: 2, zone: 'a', metadata: ['rack' => 'r1']),
            new Node('web-2', '127.0.0.1', 8082),
        ]]]];
    }

    // --- Library ------------------------------------------------------------------------------

    public function testLibraryLoadsAndChecksTheAbi(): void
    {
        $lib = Library::load();
        $this->assertSame($lib, Library::load(), 'loaded once per path');
        $this->assertSame(Library::ABI_MAJOR, $lib->ffi->ck_abi_version() >> 16);
        $this->assertMatchesRegularExpression('/^\d+\.\d+\.\d+/', $lib->version());
        $this->assertSame('1.' . ($lib->ffi->ck_abi_version() & 0xffff), $lib->abiVersion());
        $this->assertTrue($lib->has('ck_reader_get'));
        $this->assertFalse($lib->has('ck_no_such_function'));
        $this->assertSame(getenv('CLUSTERKIT_LIB'), $lib->origin);
    }

    public function testLibraryWithABadPathFailsClearly(): void
    {
        try {
            Library::load('/nonexistent/libclusterkit.so.1');
            $this->fail('no exception');
        } catch (ClusterkitException $e) {
            $this->assertStringContainsString('cannot load the clusterkit library /nonexistent/libclusterkit.so.1', $e->getMessage());
            $this->assertStringContainsString('CLUSTERKIT_LIB', $e->getMessage());
            $this->assertSame(0, $e->status());
        }
    }

    public function testPreloadHeaderDeclaresScopeAndLib(): void
    {
        $h = Library::preloadHeader('/opt/lib/libclusterkit.so.1');
        $this->assertStringStartsWith("#define FFI_SCOPE \"clusterkit\"\n#define FFI_LIB \"/opt/lib/libclusterkit.so.1\"\n", $h);
        $this->assertStringContainsString('ck_reader_get', $h);
        $this->expectException(ClusterkitException::class);
        Library::preloadHeader("bad\"path");
    }

    // --- ClusterManager -----------------------------------------------------------------------

    public function testEmbeddedByDefault(): void
    {
        foreach ([null, '', []] as $config) {
            $c = new ClusterManager($config);
            $this->assertSame('', $c->config);
            $this->assertFalse($c->isShared);
            $c->cache()->set('k', 'v');
            $this->assertSame('v', $c->cache()->get('k'));
        }
    }

    public function testConfigAsJsonTomlOrArray(): void
    {
        $json = '{"pools":{"app":{"strategy":"round_robin","nodes":[{"id":"a","host":"127.0.0.1","port":9001}]}}}';
        $toml = "[pools.app]\nstrategy = \"round_robin\"\nnodes = [ { id = \"a\", host = \"127.0.0.1\", port = 9001 } ]\n";
        foreach ([$json, $toml, json_decode($json, true)] as $config) {
            $c = new ClusterManager($config);
            $this->assertSame('a', $c->pick('app')->nodeId);
            $this->assertCount(1, $c->nodes('app'));
        }
    }

    public function testBadConfigThrowsWithTheLibrarysMessage(): void
    {
        $cases = [
            '{"pools":{"app":{"nodes":[{"id":"a","host":"h","port":0}]}}}' => 'pools.app.nodes[0].port',
            '{"bogus":1}' => 'unknown field `bogus`',
            '{"pools":{"app":{"strategy":"nope"}}}' => 'pools.app.strategy',
            '{"cache":{"pool":"missing"}}' => 'no pool named "missing"',
            '{not json' => 'invalid',
        ];
        foreach ($cases as $config => $needle) {
            try {
                new ClusterManager($config);
                $this->fail("no exception for $config");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString($needle, $e->getMessage(), $config);
                $this->assertSame(ClusterkitException::INVALID_ARGUMENT, $e->getCode());
                $this->assertSame('invalid_argument', $e->kind());
                $this->assertInstanceOf(\Psr\SimpleCache\InvalidArgumentException::class, $e);
            }
        }
        $this->expectException(InvalidArgumentException::class);
        new ClusterManager(['x' => NAN]); // not encodable as JSON
    }

    public function testSharedReusesOneDeployment(): void
    {
        $config = ['cache' => ['namespace' => 'shared-test-' . bin2hex(random_bytes(4))]];
        $a = ClusterManager::shared($config);
        $this->assertTrue($a->isShared);
        $this->assertSame($a, ClusterManager::shared($config), 'one object per config in a process');
        $a->cache()->set('k', 'from a');
        // Another handle on the same process-wide deployment (what the next FPM request gets).
        $lib = $a->library;
        $out = $lib->ffi->new('ck_deployment*');
        $this->assertSame(0, $lib->ffi->ck_deployment_shared($a->config, \FFI::addr($out)));
        $reader = $lib->ffi->new('ck_buf*');
        $this->assertSame(0, $lib->ffi->ck_cache_get($out, 'k', 1, \FFI::addr($reader)));
        $this->assertSame(serialize('from a'), $lib->takeBuf($reader));
        $lib->ffi->ck_deployment_free($out);
        // A separate deployment does not see it.
        $this->assertNull((new ClusterManager($config))->cache()->get('k'));
    }

    public function testMetrics(): void
    {
        $c = new ClusterManager(self::appConfig());
        $c->cache()->get('missing');
        $m = $c->metrics();
        $this->assertArrayHasKey('cache', $m);
        $this->assertSame(1, $m['cache']['misses']);
        $this->assertSame(2, $m['pools']['app']['total']);
        $this->assertSame('round_robin', $m['pools']['app']['strategy']);
    }

    public function testAHandleFreedAtShutdownFailsCleanly(): void
    {
        $c = new ClusterManager();
        $cache = $c->cache();
        $c->__destruct(); // what PHP's shutdown may do before other objects' destructors run
        try {
            $cache->set('k', 'v');
            $this->fail('no exception');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('NULL', $e->getMessage());
        }
        $c->__destruct(); // idempotent
    }

    // --- pools node by node -------------------------------------------------------------------

    public function testNodesOfAPool(): void
    {
        $c = new ClusterManager(self::appConfig());
        $nodes = $c->nodes('app');
        $this->assertCount(2, $nodes);
        $n = $nodes[0];
        $this->assertInstanceOf(Node::class, $n);
        $this->assertSame(['web-1', '127.0.0.1', 8081, 2, 'a', ['rack' => 'r1']], [$n->id, $n->host, $n->port, $n->weight, $n->zone, $n->metadata]);
        $this->assertSame(Health::Healthy, $n->health);
        $this->assertTrue($n->isHealthy());
        $this->assertSame(0, $n->counters->inFlight);
        $this->assertSame('127.0.0.1:8081', $n->address());
        $this->assertNull($nodes[1]->zone);
        $this->assertSame(1, $nodes[1]->weight);
        $this->assertSame($c->pool('app'), $c->pool('app'));
        $this->assertNull($c->pool('app')->node('nope'));
        $this->assertSame('web-2', $c->pool('app')->node('web-2')?->id);
    }

    public function testAddRemoveHealthWeight(): void
    {
        $c = new ClusterManager(['pools' => ['app' => ['strategy' => 'round_robin']]]);
        $pool = $c->pool('app');
        $this->assertCount(0, $pool);
        $c->addNode('app', new Node('a', '127.0.0.1', 9001));
        $c->addNode('app', new Node('b', '127.0.0.1', 9002, metadata: ['v' => '2']));
        $this->assertCount(2, $pool);
        $this->assertSame(2, $pool->healthyCount());
        try {
            $c->addNode('app', new Node('a', '127.0.0.1', 9003));
            $this->fail('duplicate id accepted');
        } catch (ConflictException $e) {
            $this->assertStringContainsString('a', $e->getMessage());
        }
        try {
            $pool->addNode(new Node('c', '127.0.0.1', 9004, weight: 1000));
            $this->fail('weight 1000 accepted');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('weight', $e->getMessage());
        }
        $pool->setHealth('a', Health::Draining, 'deploy');
        $this->assertSame(1, $pool->healthyCount());
        $this->assertSame(Health::Draining, $pool->node('a')?->health);
        $this->assertSame('deploy', $pool->node('a')?->healthReason);
        for ($i = 0; $i < 5; $i++) {
            $this->assertSame('b', $c->pick('app')->nodeId, 'draining node not picked');
        }
        $pool->setHealth('a', Health::Healthy);
        $this->assertSame(2, $pool->healthyCount());
        $pool->setWeight('b', 5);
        $this->assertSame(5, $pool->node('b')?->weight);
        // Numbers outside the C parameter's type are refused by name, not wrapped by FFI
        // (port 70000 would become 4464, weight 2^32 + 5 would become 5).
        foreach ([[70_000, 1, 'port'], [-1, 1, 'port'], [9005, -1, 'weight'], [9005, (1 << 32) + 5, 'weight']] as [$port, $weight, $field]) {
            try {
                $pool->addNode(new Node('d', '127.0.0.1', $port, weight: $weight));
                $this->fail("port $port weight $weight accepted");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString("invalid $field", $e->getMessage());
            }
        }
        foreach ([-1, (1 << 32) + 5, PHP_INT_MIN] as $weight) {
            try {
                $pool->setWeight('b', $weight);
                $this->fail("weight $weight accepted");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString('invalid weight', $e->getMessage());
            }
        }
        $this->assertSame(5, $pool->node('b')?->weight);
        $this->assertNull($pool->node('d'));
        // A pick's latency and an event stream's timeout: NaN, infinities, negatives and more
        // than 24 h are refused by name; the pick can still be finished afterwards.
        $p = $c->pick('app');
        foreach ([NAN, INF, -0.001, 86_401.0] as $bad) {
            try {
                $p->success($bad);
                $this->fail("latency $bad accepted");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString('invalid latencySeconds', $e->getMessage());
            }
        }
        $p->success(0.002);
        $events = $pool->subscribe();
        foreach ([NAN, INF, -1.0, 86_401.0] as $bad) {
            try {
                $events->next($bad);
                $this->fail("timeout $bad accepted");
            } catch (InvalidArgumentException $e) {
                $this->assertStringContainsString('invalid timeoutSeconds', $e->getMessage());
            }
        }
        $this->assertNull($events->next(0.0));
        $c->removeNode('app', 'a');
        $this->assertCount(1, $pool);
        $this->expectException(NotFoundException::class);
        $c->removeNode('app', 'a');
    }

    public function testUnknownPool(): void
    {
        $c = new ClusterManager();
        try {
            $c->pool('nope');
            $this->fail('no exception');
        } catch (NotFoundException $e) {
            $this->assertStringContainsString('nope', $e->getMessage());
            $this->assertSame('not_found', $e->kind());
        }
        $this->expectException(NotFoundException::class);
        $c->pick('nope');
    }

    public function testStandaloneCluster(): void
    {
        $app = new Cluster('app', 'round_robin');
        $app->addNode(new Node('web-1', '127.0.0.1', 8081));
        $app->addNode(new Node('web-2', '127.0.0.1', 8082));
        $seen = [];
        for ($i = 0; $i < 4; $i++) {
            $seen[] = $app->pick()->nodeId;
        }
        sort($seen);
        $this->assertSame(['web-1', 'web-1', 'web-2', 'web-2'], $seen);
        $this->assertSame('app', $app->metrics()['name']);
        $this->expectException(InvalidArgumentException::class);
        new Cluster('x', 'no_such_strategy');
    }

    // --- balancing ----------------------------------------------------------------------------

    public function testPickAndReport(): void
    {
        $c = new ClusterManager(self::appConfig('least_connections'));
        $lb = $c->loadBalancer('app');
        $this->assertInstanceOf(LoadBalancer::class, $lb);
        $p = $lb->pick();
        $this->assertInstanceOf(Pick::class, $p);
        $this->assertContains($p->nodeId, ['web-1', 'web-2']);
        $this->assertSame('127.0.0.1', $p->host);
        $this->assertSame("127.0.0.1:{$p->port}", $p->address());
        $inFlight = array_sum(array_map(fn (Node $n) => $n->counters->inFlight, $c->nodes('app')));
        $this->assertSame(1, $inFlight, 'a live pick is in flight');
        $p->success(0.0042); // reported in microseconds (ck_pick_success_us)
        $this->assertTrue($p->isFinished());
        $node = $c->pool('app')->node($p->nodeId);
        $this->assertSame(1, $node?->counters->successes);
        $this->assertSame(0, $node?->counters->inFlight);
        $this->assertSame(4200, $node?->counters->lastLatencyUs);

        $q = $lb->pick();
        $q->failure();
        $this->assertSame(1, $c->pool('app')->node($q->nodeId)?->counters->failures);
        $this->expectException(ClosedException::class);
        $q->success(0.1);
    }

    public function testReleasedOrDroppedPicksGiveBackTheirSlot(): void
    {
        $c = new ClusterManager(self::appConfig('least_connections'));
        $p = $c->pick('app');
        $p->release();
        $p->release(); // idempotent
        $q = $c->pick('app');
        unset($q);
        $this->assertSame(0, array_sum(array_map(fn (Node $n) => $n->counters->inFlight, $c->nodes('app'))));
    }

    public function testKeyedPicksAreStable(): void
    {
        $c = new ClusterManager(self::appConfig('ketama'));
        $lb = $c->loadBalancer('app');
        $byKey = [];
        for ($i = 0; $i < 50; $i++) {
            $byKey["user-$i"] = $lb->pick("user-$i")->nodeId;
        }
        $this->assertCount(2, array_unique($byKey), 'keys spread over both nodes');
        foreach ($byKey as $key => $node) {
            $this->assertSame($node, $lb->pick($key)->nodeId);
        }
        $this->assertSame($byKey['user-1'], $lb->pick("user-1")->nodeId);
    }

    public function testNoNodeToPick(): void
    {
        $c = new ClusterManager(['pools' => ['app' => ['strategy' => 'p2c', 'panic_mode' => 'error']]]);
        try {
            $c->pick('app');
            $this->fail('no exception');
        } catch (UnavailableException $e) {
            $this->assertSame('unavailable', $e->kind());
            $this->assertNotSame('', $e->getMessage());
        }
    }

    // --- events -------------------------------------------------------------------------------

    public function testEvents(): void
    {
        $c = new ClusterManager(['pools' => ['app' => ['strategy' => 'round_robin']]]);
        $pool = $c->pool('app');
        $events = $pool->subscribe();
        $this->assertNull($events->next(), 'nothing yet');
        $pool->addNode(new Node('a', '127.0.0.1', 9001));
        $pool->setHealth('a', Health::Unhealthy, 'maintenance');
        $pool->removeNode('a');
        $kinds = [];
        $health = null;
        while (($e = $events->next()) !== null) { // queued as the changes happen
            $this->assertInstanceOf(Event::class, $e);
            $kinds[] = $e->kind;
            if ($e->kind === Event::HEALTH_CHANGED) {
                $health = $e;
            }
            if ($e->kind === Event::REMOVED) {
                break;
            }
        }
        $this->assertContains(Event::ADDED, $kinds);
        $this->assertContains(Event::REMOVED, $kinds);
        $this->assertNotNull($health);
        $this->assertSame('a', $health->nodeId);
        $this->assertSame(Health::Healthy, $health->oldHealth);
        $this->assertSame(Health::Unhealthy, $health->newHealth);
        $this->assertStringContainsString('maintenance', $health->message);
        $this->assertIsArray($health->data);
        $events->close();
        $this->expectException(ClosedException::class);
        $events->next();
    }

    public function testWaitingForAnEvent(): void
    {
        $c = new ClusterManager(['pools' => ['app' => ['strategy' => 'round_robin']]]);
        $events = $c->pool('app')->subscribe();
        $t = microtime(true);
        $this->assertNull($events->next(0.05));
        $this->assertGreaterThanOrEqual(0.04, microtime(true) - $t);
        $c->addNode('app', new Node('a', '127.0.0.1', 9001));
        $e = $events->next(1.0);
        $this->assertSame(Event::ADDED, $e?->kind);
        $this->assertSame('a', $e?->nodeId);
    }
}
