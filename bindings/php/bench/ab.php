<?php

declare(strict_types=1);

/**
 * A/B of two builds of the library in ONE process, with phpredis in the same rounds
 * (issue #18: getMultiple(16) vs mget, locked session request vs phpredis's handler).
 *
 *     CK_LIB_A=/path/old/libclusterkit_ffi.so CK_HEADER_A=/path/old/clusterkit_php.h \
 *     CK_LIB_B=/path/new/libclusterkit_ffi.so [CK_HEADER_B=...] \
 *       php bindings/php/bench/ab.php PORT [ROUNDS] [N]
 *
 * PORT: a running redis-server on 127.0.0.1 (the bench writes keys b:m0..m15 and sessions
 * under namespace "s"). Each round runs A, B and phpredis one after the other; the medians,
 * min and max of the rounds are printed, and the per-round ratios peer/ck (so that the
 * machine's drift hits all sides alike). A side whose library lacks the new call runs the
 * old path (the binding checks the header), which is how "before" is measured.
 */

require dirname(__DIR__) . '/autoload.php';

use Clusterkit\ClusterManager;
use Clusterkit\Library;
use Clusterkit\SessionHandler;

[$_, $port, $rounds, $n] = $argv + [null, null, 11, 400];
if ($port === null) {
    fwrite(STDERR, "usage: php ab.php PORT [ROUNDS] [N]\n");
    exit(2);
}
$rounds = (int) $rounds;
$n = (int) $n;
$sides = [];
foreach (['A', 'B'] as $s) {
    $lib = getenv("CK_LIB_$s");
    if ($lib === false || $lib === '') {
        continue;
    }
    $h = getenv("CK_HEADER_$s");
    $sides[$s] = Library::load($lib, ($h === false || $h === '') ? null : $h);
}
if ($sides === []) {
    fwrite(STDERR, "set CK_LIB_A and/or CK_LIB_B\n");
    exit(2);
}

$value = ['id' => 42, 'name' => 'Ada Lovelace', 'roles' => ['admin', 'dev'], 'active' => true];
$keys = [];
for ($i = 0; $i < 16; $i++) {
    $keys[] = "m$i";
}
$peer = new Redis();
$peer->connect('127.0.0.1', (int) $port);
$peer->setOption(Redis::OPT_SERIALIZER, Redis::SERIALIZER_PHP);
$peerKeys = array_map(fn ($k) => "b:$k", $keys);
foreach ($peerKeys as $k) {
    $peer->set($k, $value);
}
$caches = [];
$handlers = [];
foreach ($sides as $s => $lib) {
    $cm = new ClusterManager(['cache' => ['redis' => "127.0.0.1:$port", 'namespace' => 'b']], $lib);
    $caches[$s] = $cm->cache();
    foreach ($keys as $k) {
        $caches[$s]->set($k, $value);
    }
    $sm = new ClusterManager(['cache' => ['redis' => "127.0.0.1:$port", 'namespace' => 's']], $lib);
    $handlers[$s] = new SessionHandler($sm);
}
foreach ($caches as $s => $c) {
    if ($c->getMultiple($keys) !== $peer->mget($peerKeys) + []) {
        $got = array_values($c->getMultiple($keys));
        if ($got !== $peer->mget($peerKeys)) {
            fwrite(STDERR, "side $s: getMultiple differs from mget\n");
            exit(1);
        }
    }
}

ini_set('session.use_cookies', '0');
ini_set('session.use_only_cookies', '0');
ini_set('session.cache_limiter', '');
ini_set('session.use_strict_mode', '1');
ini_set('session.lazy_write', '1');
ini_set('redis.session.locking_enabled', '1');
ini_set('redis.session.lock_retries', '-1');
$use = [];
foreach ($handlers as $s => $h) {
    $use[$s] = static function () use ($h): void {
        session_set_save_handler($h, false);
    };
}
$use['peer'] = static function () use ($port): void {
    ini_set('session.save_handler', 'redis');
    ini_set('session.save_path', "tcp://127.0.0.1:$port");
};
$cycle = static function (string $id): void {
    session_id($id);
    session_start();
    $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
    session_write_close();
};
$sid = [];
foreach ($use as $s => $u) {
    $u();
    if ($s === 'peer') {
        session_id(session_create_id());
    }
    session_start();
    $_SESSION['n'] = 0;
    $sid[$s] = session_id();
    session_write_close();
}

$time = static function (callable $f, int $n): float {
    $t = hrtime(true);
    $f($n);
    return (hrtime(true) - $t) / $n / 1000;
};
$res = [];
for ($r = 0; $r < $rounds; $r++) {
    foreach ($caches as $s => $c) {
        $res["gm $s"][] = $time(function ($n) use ($c, $keys) { for ($i = 0; $i < $n; $i++) { $c->getMultiple($keys); } }, $n);
    }
    $res['gm phpredis'][] = $time(function ($n) use ($peer, $peerKeys) { for ($i = 0; $i < $n; $i++) { $peer->mget($peerKeys); } }, $n);
    foreach ($use as $s => $u) {
        $u();
        $id = $sid[$s];
        $res['sess ' . ($s === 'peer' ? 'phpredis' : $s)][] = $time(function ($n) use ($cycle, $id) { for ($i = 0; $i < $n; $i++) { $cycle($id); } }, intdiv($n, 2));
    }
}
$med = static function (array $v): float {
    sort($v);
    return $v[intdiv(count($v), 2)];
};
printf("%-14s %9s %9s %9s\n", 'row', 'median', 'min', 'max');
foreach ($res as $k => $v) {
    printf("%-14s %8.1fus %8.1fus %8.1fus\n", $k, $med($v), min($v), max($v));
}
foreach (array_keys($sides) as $s) {
    foreach (['gm' => 'gm phpredis', 'sess' => 'sess phpredis'] as $what => $p) {
        $ratios = array_map(fn ($a, $b) => $b / $a, $res["$what $s"], $res[$p]);
        sort($ratios);
        printf("%s %-4s phpredis/ck: median %.2fx (rounds %.2f-%.2f)\n", $s, $what, $med($ratios), $ratios[0], end($ratios));
    }
}
