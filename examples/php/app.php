<?php

/*
 * clusterkit in a PHP application: two app nodes behind a load balancer, a distributed cache,
 * a distributed lock and sessions, all from one config document.
 *
 *   php examples/php/app.php                           cache, locks, sessions embedded
 *   REDIS=127.0.0.1:6379 php examples/php/app.php      cache, locks, sessions in Redis
 *
 * The library: CLUSTERKIT_LIB=/abs/path/libclusterkit.so.1, or libclusterkit.so.1 installed
 * where the dynamic linker finds it (scripts/stage-lib --release --prefix /usr/local).
 */

declare(strict_types=1);

require __DIR__ . '/../../bindings/php/autoload.php';

use Clusterkit\ClusterManager;
use Clusterkit\DistributedSession;
use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Health;
use Clusterkit\Lock;

// --- two app nodes on loopback (php -S), stopped when the example ends ----------------------
function freePort(): int
{
    $s = stream_socket_server('tcp://127.0.0.1:0');
    $name = (string) stream_socket_get_name($s, false);
    fclose($s);
    return (int) substr($name, strrpos($name, ':') + 1);
}

$nodes = [];
foreach (['web-1', 'web-2'] as $id) {
    $port = freePort();
    $proc = proc_open(
        [PHP_BINARY, '-S', "127.0.0.1:$port", __DIR__ . '/node.php'],
        [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']],
        $pipes,
        null,
        ['NODE_ID' => $id] + getenv()
    );
    $nodes[$id] = ['port' => $port, 'proc' => $proc];
}
$stop = static function (string $id) use (&$nodes): void {
    if (isset($nodes[$id]['proc']) && is_resource($nodes[$id]['proc'])) {
        proc_terminate($nodes[$id]['proc']);
        proc_close($nodes[$id]['proc']);
    }
    unset($nodes[$id]['proc']);
};
register_shutdown_function(static function () use (&$nodes, $stop): void {
    foreach (array_keys($nodes) as $id) {
        $stop($id);
    }
});
foreach ($nodes as $id => $n) {
    for ($i = 0; $i < 100 && !@fsockopen('127.0.0.1', $n['port'], $errno, $errstr, 0.1); $i++) {
        usleep(50_000);
    }
}

// --- the deployment: one document ------------------------------------------------------------
$config = [
    'pools' => [
        'app' => [
            'strategy' => 'p2c',
            'nodes' => array_map(
                static fn (string $id, array $n) => ['id' => $id, 'host' => '127.0.0.1', 'port' => $n['port'], 'zone' => 'local'],
                array_keys($nodes),
                $nodes
            ),
            // Active checks, and passive ones: 2 failed calls in a row eject a node for 10 s.
            'health' => ['check' => 'http', 'path' => '/healthz', 'interval' => '300ms', 'timeout' => '200ms', 'rise' => 1, 'fall' => 1],
            'outlier' => ['consecutive_failures' => 2, 'base_ejection_time' => '10s'],
        ],
    ],
    'sessions' => ['idle_timeout' => '30m', 'lock_wait' => '2s'],
];
$redis = getenv('REDIS');
if ($redis !== false && $redis !== '') {
    [$host, $port] = explode(':', $redis) + [1 => '6379'];
    $config['pools']['redis'] = ['strategy' => 'ketama', 'nodes' => [['id' => 'r1', 'host' => $host, 'port' => (int) $port]]];
    $config['cache'] = ['pool' => 'redis', 'namespace' => 'example'];
    $config['locks'] = ['pool' => 'redis'];
}

// One deployment per process: an FPM worker builds it once and reuses it for every request.
$cluster = ClusterManager::shared($config);
$lb = $cluster->loadBalancer('app');
$cache = $cluster->cache();
$locks = $cluster->locks();
$cache->clear(); // start from an empty cache (this deployment's namespace only)
printf("clusterkit %s; app nodes: %s; cache/locks/sessions: %s\n",
    $cluster->library->version(),
    implode(', ', array_map(fn ($n) => $n->id . '@' . $n->address(), $cluster->nodes('app'))),
    $redis ? "Redis at $redis" : 'embedded');

// --- a one-time job, run by whichever process gets the lock -----------------------------------
$locks->synchronized('example.warmup', function (Lock $lock) use ($cache) {
    // The fencing token lets a store reject writes from a holder whose lock expired.
    $cache->set('catalog.version', $lock->fencingToken());
    printf("warm-up ran under lock %s (fencing token %d, %.1f s left)\n", $lock->name, $lock->fencingToken(), $lock->validity());
}, ttl: 10, wait: 2);

// --- a request handler: session, cache, balanced call to an app node --------------------------
function fetchPrice(\Clusterkit\LoadBalancer $lb, int $item): array
{
    $lastError = null;
    for ($attempt = 0; $attempt < 5; $attempt++) {
        $pick = $lb->pick();
        $t = hrtime(true);
        $body = @file_get_contents(
            "http://{$pick->address()}/price?item=$item",
            false,
            stream_context_create(['http' => ['timeout' => 1.0]])
        );
        if ($body !== false) {
            $pick->success((hrtime(true) - $t) / 1e9);
            return json_decode($body, true);
        }
        $pick->failure(); // feeds outlier detection; try another node
        $lastError = "{$pick->nodeId} did not answer";
    }
    throw new RuntimeException($lastError ?? 'no answer');
}

function handleRequest(ClusterManager $cluster, ?string $sessionId, int $item): array
{
    $session = ($sessionId !== null ? $cluster->loadSession($sessionId, lock: true) : null)
        ?? $cluster->createSession();
    $cache = $cluster->cache();
    $price = $cache->get("price.$item");
    $servedBy = 'cache';
    if ($price === null) {
        $answer = fetchPrice($cluster->loadBalancer('app'), $item);
        $price = $answer['price'];
        $servedBy = $answer['node'];
        $cache->set("price.$item", $price, 60);
    }
    $viewed = $session->get('viewed', []);
    $viewed[] = $item;
    $session->set('viewed', $viewed);
    $session->save(); // only changed fields are written; releases the session lock
    return [$session->id(), $price, $servedBy, count($viewed)];
}

$sid = null;
$served = [];
foreach ([1, 2, 3, 4, 5, 1, 2, 6, 7, 8] as $item) {
    [$sid, $price, $by, $views] = handleRequest($cluster, $sid, $item);
    $served[$by] = ($served[$by] ?? 0) + 1;
}
ksort($served);
printf("10 requests, one session (%s…, %d items viewed): served by %s\n", substr($sid, 0, 8), $views,
    implode(', ', array_map(fn ($k, $v) => "{$k}×{$v}", array_keys($served), $served)));

// --- a node goes away: health checks and outlier detection take it out -------------------------
$stop('web-2');
$served = [];
for ($item = 100; $item < 110; $item++) {
    $by = fetchPrice($lb, $item)['node'];
    $served[$by] = ($served[$by] ?? 0) + 1;
}
printf("web-2 stopped; next 10 calls served by: %s\n", implode(', ', array_map(fn ($k, $v) => "{$k}×{$v}", array_keys($served), $served)));
$deadline = microtime(true) + 5;
while ($cluster->pool('app')->node('web-2')?->health === Health::Healthy && microtime(true) < $deadline) {
    usleep(100_000);
}
foreach ($cluster->nodes('app') as $n) {
    printf("  %-6s %-9s %s (%d ok, %d failed)\n", $n->id, $n->health->value, $n->healthReason, $n->counters->successes, $n->counters->failures);
}

// --- errors are exceptions with the library's message ----------------------------------------
try {
    $cache->get('not/a/psr16/key');
} catch (ClusterkitException $e) {
    printf("%s: %s\n", (new ReflectionClass($e))->getShortName(), $e->getMessage());
}
$m = $cluster->metrics();
printf("cache: %d hits, %d misses, %d writes\n", $m['cache']['hits'], $m['cache']['misses'], $m['cache']['writes']);
DistributedSession::destroyId($cluster, $sid);
echo "done\n";
