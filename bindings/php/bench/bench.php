<?php

/*
 * clusterkit's PHP binding next to phpredis, side by side in one process against one private
 * redis-server (started here on a free loopback port, stopped at the end).
 *
 *   cargo build --release -p clusterkit-ffi
 *   CLUSTERKIT_LIB=$CARGO_TARGET_DIR/$CARGO_BUILD_TARGET/release/libclusterkit_ffi.so \
 *     php bindings/php/bench/bench.php [--quick]
 *
 * Rows (each measured in 15 short alternating rounds, clusterkit then phpredis, the median
 * round kept, so that the machine's drifts hit both sides alike):
 *  - GET / SET of a small value over one connection (both with PHP serialization, and raw);
 *  - getMultiple of 16 keys vs Redis::mget;
 *  - a locked session request (session_start(), $_SESSION['n']++, session_write_close() with
 *    session_id() set each time) through clusterkit's SessionHandler vs phpredis's handler
 *    (session.save_handler=redis, redis.session.locking_enabled=1), with the Redis commands
 *    each request costs;
 *  - the embedded backend through FFI (no Redis: ns per get/set).
 * The clusterkit side talks to Redis as `[cache] redis = "127.0.0.1:PORT"` (one server, one
 * connection), and as a ketama pool of that one node for the pool rows.
 */

declare(strict_types=1);

require dirname(__DIR__) . '/autoload.php';
if (stream_resolve_include_path('Psr/SimpleCache/autoload.php') !== false) {
    require_once 'Psr/SimpleCache/autoload.php';
}

use Clusterkit\ClusterManager;
use Clusterkit\SessionHandler;

if (!class_exists(Redis::class)) {
    fwrite(STDERR, "the redis extension (phpredis) is missing: apt-get install php8.2-redis\n");
    exit(1);
}
$quick = in_array('--quick', $argv, true);
$scale = $quick ? 0.2 : 1.0;

// --- a private redis-server --------------------------------------------------------------
$sock = stream_socket_server('tcp://127.0.0.1:0');
$name = (string) stream_socket_get_name($sock, false);
fclose($sock);
$port = (int) substr($name, strrpos($name, ':') + 1);
$redisProc = proc_open(
    ['redis-server', '--bind', '127.0.0.1', '--port', (string) $port, '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']],
    $pipes
);
register_shutdown_function(static function () use ($redisProc): void {
    proc_terminate($redisProc);
    proc_close($redisProc);
});
for ($i = 0; $i < 100 && !@fsockopen('127.0.0.1', $port, $e, $s, 0.1); $i++) {
    usleep(50_000);
}

// --- the two clients ---------------------------------------------------------------------
$phpredis = new Redis();
$phpredis->connect('127.0.0.1', $port);
$phpredisSer = new Redis();
$phpredisSer->connect('127.0.0.1', $port);
$phpredisSer->setOption(Redis::OPT_SERIALIZER, Redis::SERIALIZER_PHP);

$single = new ClusterManager(['cache' => ['redis' => "127.0.0.1:$port", 'namespace' => 'b']]);
$pool = new ClusterManager([
    'pools' => ['cache' => ['strategy' => 'ketama', 'nodes' => [['id' => 'r1', 'host' => '127.0.0.1', 'port' => $port]]]],
    'cache' => ['pool' => 'cache', 'namespace' => 'p'],
]);
$embedded = new ClusterManager();
$ck = $single->cache();
$ckPool = $pool->cache();
$emb = $embedded->cache();

$value = ['id' => 42, 'name' => 'Ada Lovelace', 'roles' => ['admin', 'dev'], 'active' => true];
$raw = str_repeat('v', 100);

// --- measuring ---------------------------------------------------------------------------
/** ns per call of $fn, run $n times */
function measure(callable $fn, int $n): float
{
    $t = hrtime(true);
    $fn($n);
    return (hrtime(true) - $t) / $n;
}

/**
 * Alternating rounds of each contender; the median ns/op of each.
 *
 * @param array<string, callable(int): void> $contenders
 * @return array<string, float>
 */
function compare(array $contenders, int $n, int $rounds = 15): array
{
    foreach ($contenders as $fn) {
        $fn(max(1, intdiv($n, 10))); // warm-up
    }
    $times = [];
    for ($r = 0; $r < $rounds; $r++) {
        foreach ($contenders as $name => $fn) {
            $times[$name][] = measure($fn, $n);
        }
    }
    $out = [];
    foreach ($times as $name => $t) {
        sort($t);
        $out[$name] = $t[intdiv(count($t), 2)];
    }
    return $out;
}

$rows = [];
$row = static function (string $what, float $ck, ?float $peer, string $note = '') use (&$rows): void {
    $rows[] = [$what, $ck, $peer, $note];
};
$n = static fn (int $base): int => max(100, (int) ($base * $scale));

// GET / SET over one connection.
$ck->set('k', $value);
$phpredisSer->set('b:k', $value);
$ck->setRaw('raw', $raw);
$phpredis->set('b:raw', $raw);
$r = compare([
    'ck' => function (int $n) use ($ck) { for ($i = 0; $i < $n; $i++) { $ck->get('k'); } },
    'peer' => function (int $n) use ($phpredisSer) { for ($i = 0; $i < $n; $i++) { $phpredisSer->get('b:k'); } },
], $n(4000));
$row('GET (PSR-16 get, serialized array)', $r['ck'], $r['peer'], 'phpredis with SERIALIZER_PHP');
$r = compare([
    'ck' => function (int $n) use ($ck) { for ($i = 0; $i < $n; $i++) { $ck->set('k', $GLOBALS['value']); } },
    'peer' => function (int $n) use ($phpredisSer) { for ($i = 0; $i < $n; $i++) { $phpredisSer->set('b:k', $GLOBALS['value']); } },
], $n(4000));
$row('SET (PSR-16 set, serialized array)', $r['ck'], $r['peer'], 'phpredis with SERIALIZER_PHP');
$r = compare([
    'ck' => function (int $n) use ($ck) { for ($i = 0; $i < $n; $i++) { $ck->getRaw('raw'); } },
    'peer' => function (int $n) use ($phpredis) { for ($i = 0; $i < $n; $i++) { $phpredis->get('b:raw'); } },
], $n(4000));
$row('GET raw 100 B', $r['ck'], $r['peer']);
$r = compare([
    'ck' => function (int $n) use ($ck, $raw) { for ($i = 0; $i < $n; $i++) { $ck->setRaw('raw', $raw); } },
    'peer' => function (int $n) use ($phpredis, $raw) { for ($i = 0; $i < $n; $i++) { $phpredis->set('b:raw', $raw); } },
], $n(4000));
$row('SET raw 100 B', $r['ck'], $r['peer']);

// The same GET through a ketama pool (what a sharded deployment uses).
$ckPool->set('k', $value);
$r = compare([
    'ck' => function (int $n) use ($ckPool) { for ($i = 0; $i < $n; $i++) { $ckPool->get('k'); } },
    'peer' => function (int $n) use ($phpredisSer) { for ($i = 0; $i < $n; $i++) { $phpredisSer->get('b:k'); } },
], $n(4000));
$row('GET via a ketama pool of 1 node', $r['ck'], $r['peer'], 'phpredis: one connection');

// getMultiple(16) vs mget.
$keys = [];
for ($i = 0; $i < 16; $i++) {
    $keys[] = "m$i";
    $ck->set("m$i", $value);
    $phpredisSer->set("b:m$i", $value);
}
$peerKeys = array_map(fn ($k) => "b:$k", $keys);
$r = compare([
    'ck' => function (int $n) use ($ck, $keys) { for ($i = 0; $i < $n; $i++) { $ck->getMultiple($keys); } },
    'peer' => function (int $n) use ($phpredisSer, $peerKeys) { for ($i = 0; $i < $n; $i++) { $phpredisSer->mget($peerKeys); } },
], $n(1500));
$row('getMultiple 16 keys vs mget', $r['ck'], $r['peer'], 'both unserialize 16 arrays');

// --- sessions: a locked request cycle ----------------------------------------------------
ini_set('session.use_cookies', '0');
ini_set('session.use_only_cookies', '0');
ini_set('session.cache_limiter', '');
ini_set('session.use_strict_mode', '1');
ini_set('session.lazy_write', '1');
ini_set('redis.session.locking_enabled', '1');
ini_set('redis.session.lock_retries', '-1');

$sessionCluster = ClusterManager::shared(['cache' => ['redis' => "127.0.0.1:$port", 'namespace' => 's']]);
$ckHandler = new SessionHandler($sessionCluster);
$useCk = static function () use ($ckHandler): void {
    session_set_save_handler($ckHandler, false);
};
$usePhpredis = static function () use ($port): void {
    ini_set('session.save_handler', 'redis');
    ini_set('session.save_path', "tcp://127.0.0.1:$port");
};
$cycle = static function (string $id): void {
    session_id($id);
    session_start();
    $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
    session_write_close();
};
// One session per side, created once.
$useCk();
session_start();
$_SESSION['n'] = 0;
$ckSid = session_id();
session_write_close();
$usePhpredis();
session_id(session_create_id());
session_start();
$_SESSION['n'] = 0;
$peerSid = session_id();
session_write_close();

/**
 * Round trips clients made to Redis while $fn ran: the server's read events
 * (INFO total_reads_processed), asked on one connection of the bench (a pipeline of several
 * commands arrives in one read; the second INFO's own read is subtracted).
 */
$roundTrips = static function (callable $fn) use ($port): int {
    $info = stream_socket_client("tcp://127.0.0.1:$port");
    $reads = static function () use ($info): int {
        fwrite($info, "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n");
        $len = (int) substr(fgets($info), 1);
        $text = '';
        while (strlen($text) < $len + 2) {
            $text .= fread($info, $len + 2 - strlen($text));
        }
        preg_match('/^total_reads_processed:(\d+)/m', $text, $m);
        return (int) $m[1];
    };
    $before = $reads();
    $fn();
    $n = $reads() - $before - 1;
    fclose($info);
    return $n;
};
$perRequest = [];
$r = compare([
    'ck' => function (int $n) use ($useCk, $cycle, $ckSid) { $useCk(); for ($i = 0; $i < $n; $i++) { $cycle($ckSid); } },
    'peer' => function (int $n) use ($usePhpredis, $cycle, $peerSid) { $usePhpredis(); for ($i = 0; $i < $n; $i++) { $cycle($peerSid); } },
], $n(1000), 9);
foreach (['ck' => [$useCk, $ckSid], 'peer' => [$usePhpredis, $peerSid]] as $side => [$use, $sid]) {
    $use();
    $perRequest[$side] = $roundTrips(function () use ($cycle, $sid) {
        for ($i = 0; $i < 100; $i++) {
            $cycle($sid);
        }
    }) / 100;
}
$row('locked session request (start, n++, write_close)', $r['ck'], $r['peer'], sprintf('round trips/request: clusterkit %.1f, phpredis %.1f', $perRequest['ck'], $perRequest['peer']));
$useCk();
session_id($ckSid);
session_start();
$ckN = $_SESSION['n'];
session_write_close();
$usePhpredis();
session_id($peerSid);
session_start();
$peerN = $_SESSION['n'];
session_write_close();

// --- the embedded backend through FFI ----------------------------------------------------
$emb->set('k', $value);
$emb->setRaw('raw', $raw);
$e = compare([
    'get' => function (int $n) use ($emb) { for ($i = 0; $i < $n; $i++) { $emb->get('k'); } },
    'getRaw' => function (int $n) use ($emb) { for ($i = 0; $i < $n; $i++) { $emb->getRaw('raw'); } },
    'set' => function (int $n) use ($emb) { for ($i = 0; $i < $n; $i++) { $emb->set('k', $GLOBALS['value']); } },
    'setRaw' => function (int $n) use ($emb, $raw) { for ($i = 0; $i < $n; $i++) { $emb->setRaw('raw', $raw); } },
    'miss' => function (int $n) use ($emb) { for ($i = 0; $i < $n; $i++) { $emb->get('absent'); } },
    'loop' => function (int $n) { for ($i = 0; $i < $n; $i++) { } },
], $n(500000));
$lbCluster = new ClusterManager(['pools' => ['app' => ['strategy' => 'p2c', 'nodes' => [
    ['id' => 'a', 'host' => '127.0.0.1', 'port' => 9001], ['id' => 'b', 'host' => '127.0.0.1', 'port' => 9002],
]]]]);
$lb = $lbCluster->loadBalancer('app');
$p = compare([
    'pick' => function (int $n) use ($lb) { for ($i = 0; $i < $n; $i++) { $lb->pick()->success(0.001); } },
    'keyed' => function (int $n) use ($lb) { for ($i = 0; $i < $n; $i++) { $lb->pick('user.42')->release(); } },
], $n(200000));
$row('embedded get (PSR-16, unserialize)', $e['get'], null);
$row('embedded get raw 100 B (one FFI call + copy)', $e['getRaw'], null, 'target <= 300 ns');
$row('embedded get miss', $e['miss'], null);
$row('embedded set (PSR-16, serialize)', $e['set'], null);
$row('embedded set raw 100 B', $e['setRaw'], null);
$row('pick() + success() (p2c, 2 nodes)', $p['pick'], null, 'Pick object with node id, host, port');
$row('pick($key) + release()', $p['keyed'], null);

// --- the table ---------------------------------------------------------------------------
$fmt = static fn (float $ns): string => $ns >= 10_000 ? sprintf('%.1f µs', $ns / 1000) : sprintf('%.0f ns', $ns);
printf("clusterkit %s (PHP %s, FFI) vs phpredis %s; redis-server %s on 127.0.0.1:%d; %s\n",
    $single->library->version(), PHP_VERSION, phpversion('redis'), $phpredis->info('server')['redis_version'], $port,
    php_uname('m') . ', ' . (int) shell_exec('nproc') . ' cores');
printf("empty loop overhead %.1f ns/iteration (included in every figure)\n\n", $e['loop']);
printf("| %-48s | %10s | %10s | %16s | %s\n", 'operation', 'clusterkit', 'phpredis', 'phpredis/ck', 'note');
printf("|%s|%s|%s|%s|%s\n", str_repeat('-', 50), str_repeat('-', 12), str_repeat('-', 12), str_repeat('-', 18), '---');
foreach ($rows as [$what, $ckNs, $peerNs, $note]) {
    printf("| %-48s | %10s | %10s | %16s | %s\n", $what, $fmt($ckNs), $peerNs === null ? '-' : $fmt($peerNs),
        $peerNs === null ? '-' : sprintf('%.2fx', $peerNs / $ckNs), $note);
}
printf("\n(phpredis/ck > 1: clusterkit is faster.) Session counters after the run: clusterkit %d, phpredis %d.\n", $ckN, $peerN);
