<?php
/**
 * Generate libmemcached ketama placement reference vectors.
 *
 * Usage (from the repository root):
 *   php scripts/gen-ketama-vectors.php > tests/data/ketama_libmemcached.json
 *
 * Requires the php-memcached extension (Debian: php-cli php-memcached).
 *
 * This script never talks to any server: it only calls addServer() and
 * getServerByKey(), which are pure local computations in libmemcached
 * (servers are resolved/connected lazily on the first real operation, and
 * no get/set/etc. is ever issued here). It can be run inside a network
 * namespace without any interface, e.g. `unshare -n php scripts/...`.
 *
 * Output: JSON
 *   { "generator": "...",
 *     "cases": [ { "name": ..., "servers": [ {host, port, weight}, ... ],
 *                  "keys": [ [key, "host:port"], ... ] }, ... ] }
 */

declare(strict_types=1);

const KEYS_PER_CASE = 1000;
const JSON_FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR;

function fail(string $msg): void
{
    fwrite(STDERR, "gen-ketama-vectors: $msg\n");
    exit(1);
}

if (!extension_loaded('memcached')) {
    fail('the memcached extension is not loaded (install php-memcached)');
}

/** Runtime libmemcached library version, as reported by the extension's phpinfo block. */
function libmemcached_versions(): string
{
    $info = '';
    ob_start();
    try {
        (new ReflectionExtension('memcached'))->info();
    } finally {
        $info = (string) ob_get_clean();
    }
    $parts = [];
    if (preg_match('/libmemcached(?:-awesome)? library version\s*=>\s*(\S+)/i', $info, $m)) {
        $parts[] = 'libmemcached ' . $m[1] . ' (runtime library)';
    }
    if (preg_match('/libmemcached(?:-awesome)? headers version\s*=>\s*(\S+)/i', $info, $m)) {
        $parts[] = 'headers ' . $m[1];
    }
    $parts[] = sprintf('LIBMEMCACHED_VERSION_HEX=0x%08x', Memcached::LIBMEMCACHED_VERSION_HEX);
    return implode(', ', $parts);
}

/** True if libmemcached would accept $key as an ASCII-protocol key. */
function valid_key(string $key): bool
{
    $len = strlen($key);
    if ($len < 1 || $len > 250) {
        return false;
    }
    for ($i = 0; $i < $len; $i++) {
        $o = ord($key[$i]);
        if ($o <= 0x20 || $o === 0x7f) {
            return false;
        }
    }
    return true;
}

/**
 * 1000 deterministic, unique, valid keys: short single letters, "user:<n>",
 * "session:<md5>", keys of length 20..200, UTF-8 keys, numeric keys, ...
 */
function make_keys(): array
{
    // Note: PHP turns numeric-string array keys into ints, so keep the
    // ordered list separate from the de-duplication set.
    $keys = [];
    $seen = [];
    $add = function (string $k) use (&$keys, &$seen): void {
        if (!valid_key($k)) {
            fail('generated an invalid key: ' . json_encode($k, JSON_FLAGS));
        }
        if (!isset($seen[$k])) {
            $seen[$k] = true;
            $keys[] = $k;
        }
    };

    foreach (range('a', 'z') as $c) {
        $add($c);
    }
    // Fixed edge cases.
    $add(str_repeat('x', 200));
    $add(str_repeat('é', 100));           // 200 bytes of UTF-8
    $add('0');
    $add('-');
    $add('foo');
    $add('bar');
    $add('{user:1}:profile');
    $add('path/with/slashes?and=query&x=1');

    // Keys equal to continuum point names: md5(key)[0..4] is then exactly a
    // point value, which pins the lookup rule "first point with value >= hash"
    // (not ">").
    foreach ([
        '127.0.0.1-0', '127.0.0.2-1', '127.0.0.3-39',
        '127.0.0.1:6379-0', '127.0.0.1:6381-7', '127.0.0.1:6383-39',
        '127.0.0.1:7001-0', '127.0.0.1:7002-3', '127.0.0.1:7004-71',
        'cache-0.test-0', 'cache-4.test-5', 'cache-8.test-62',
        'localhost-0', '127.0.0.1:11212-2', '::1:11213-39',
        '127.0.0.1:8001-6', '127.0.0.1:8005-0', '127.0.0.1:8004-30',
    ] as $k) {
        $add($k);
    }

    // Keys whose hash lies above every continuum point (>= 0xfffc0000), so the
    // lookup must wrap around to the first point, and keys whose hash lies
    // below every point (< 0x00100000). Found by a deterministic search.
    $hash = fn(string $k): int => unpack('V', md5($k, true))[1];
    for ($n = 0, $found = 0; $found < 4; $n++) {
        if ($hash("wrap:$n") >= 0xfffc0000) {
            $add("wrap:$n");
            $found++;
        }
    }
    for ($n = 0, $found = 0; $found < 2; $n++) {
        if ($hash("low:$n") < 0x00100000) {
            $add("low:$n");
            $found++;
        }
    }

    $utf8 = ['ключ', 'ユーザー', 'café', '😀', 'naïve', '中文', 'Ωmega', 'straße'];
    for ($n = 0; count($keys) < KEYS_PER_CASE; $n++) {
        switch ($n % 10) {
            case 0:
            case 1:
                $add("user:$n");
                break;
            case 2:
                $add('session:' . md5((string) $n));
                break;
            case 3:
                // length 20..200 inclusive
                $len = 20 + (($n * 53) % 181);
                $s = "long:$n:";
                for ($j = 0; strlen($s) < $len; $j++) {
                    $s .= sha1("$n/$j");
                }
                $add(substr($s, 0, $len));
                break;
            case 4:
                $add($utf8[intdiv($n, 10) % count($utf8)] . ":$n");
                break;
            case 5:
                $add((string) $n);
                break;
            case 6:
                $add('obj:' . substr(sha1("obj$n"), 0, 16));
                break;
            case 7:
                $add("path/to/item-$n.json");
                break;
            case 8:
                $add("k$n");
                break;
            case 9:
                $add(sprintf('h%08x', ($n * 2654435761) & 0xffffffff));
                break;
        }
    }
    return $keys;
}

/** Case definitions: name => list of [host, port, weight]. */
function cases(): array
{
    $ten = [];
    for ($i = 0; $i < 10; $i++) {
        $ten[] = ["cache-$i.test", 11211, ($i % 3) + 1];
    }
    return [
        'three-default-port' => [
            ['127.0.0.1', 11211, 1],
            ['127.0.0.2', 11211, 1],
            ['127.0.0.3', 11211, 1],
        ],
        'five-ports' => array_map(fn(int $p) => ['127.0.0.1', $p, 1], range(6379, 6383)),
        'weighted' => [
            ['127.0.0.1', 7001, 1],
            ['127.0.0.1', 7002, 2],
            ['127.0.0.1', 7003, 3],
            ['127.0.0.1', 7004, 5],
        ],
        'single' => [
            ['127.0.0.1', 7001, 1],
        ],
        'ten-hostnames' => $ten,
        'localhost-mixed' => [
            ['localhost', 11211, 1],
            ['127.0.0.1', 11212, 1],
            ['::1', 11213, 1],
        ],
        // Total weight 25 over 5 servers: libmemcached computes points per
        // server in single-precision float, giving 28/60/92/124/480 points,
        // whereas double-precision math would give 32/64/96/128/480. This case
        // pins that detail down (none of the cases above distinguish it).
        'float32-weights' => [
            ['127.0.0.1', 8001, 1],
            ['127.0.0.1', 8002, 2],
            ['127.0.0.1', 8003, 3],
            ['127.0.0.1', 8004, 4],
            ['127.0.0.1', 8005, 15],
        ],
    ];
}

function run_case(string $name, array $servers, array $keys): array
{
    $m = new Memcached();
    if (!$m->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true)) {
        fail("$name: setOption(OPT_LIBKETAMA_COMPATIBLE) failed: " . $m->getResultMessage());
    }
    foreach ($servers as [$host, $port, $weight]) {
        if (!$m->addServer($host, $port, $weight)) {
            fail("$name: addServer($host, $port, $weight) failed: " . $m->getResultMessage());
        }
    }
    $list = $m->getServerList();
    if (count($list) !== count($servers)) {
        fail("$name: server list has " . count($list) . ' entries, expected ' . count($servers));
    }
    foreach ($servers as $i => [$host, $port]) {
        if ($list[$i]['host'] !== $host || $list[$i]['port'] !== $port) {
            fail("$name: server $i came back as " . json_encode($list[$i], JSON_FLAGS));
        }
    }
    $known = [];
    foreach ($servers as [$host, $port]) {
        $known["$host:$port"] = true;
    }

    $pairs = [];
    foreach ($keys as $key) {
        $s = $m->getServerByKey($key);
        if ($s === false) {
            fail("$name: getServerByKey(" . json_encode($key, JSON_FLAGS) . ') failed: ' . $m->getResultMessage());
        }
        $hp = $s['host'] . ':' . $s['port'];
        if (!isset($known[$hp])) {
            fail("$name: getServerByKey returned unknown server $hp");
        }
        $pairs[] = [$key, $hp];
    }
    return ['name' => $name, 'servers' => $servers, 'keys' => $pairs];
}

$keys = make_keys();
if (count($keys) !== KEYS_PER_CASE) {
    fail('expected ' . KEYS_PER_CASE . ' keys, got ' . count($keys));
}

$generator = sprintf(
    'scripts/gen-ketama-vectors.php with php-memcached %s / %s, OPT_LIBKETAMA_COMPATIBLE=true, getServerByKey',
    phpversion('memcached'),
    libmemcached_versions()
);

$results = [];
foreach (cases() as $name => $servers) {
    $results[] = run_case($name, $servers, $keys);
}

// Hand-formatted JSON: one server / one key pair per line keeps diffs readable.
$j = fn($v) => json_encode($v, JSON_FLAGS);
$out = "{\n  \"generator\": " . $j($generator) . ",\n  \"cases\": [\n";
foreach ($results as $ci => $c) {
    $out .= "    {\n      \"name\": " . $j($c['name']) . ",\n      \"servers\": [\n";
    $srv = [];
    foreach ($c['servers'] as [$host, $port, $weight]) {
        $srv[] = '        {"host": ' . $j($host) . ', "port": ' . $port . ', "weight": ' . $weight . '}';
    }
    $out .= implode(",\n", $srv) . "\n      ],\n      \"keys\": [\n";
    $kp = [];
    foreach ($c['keys'] as [$key, $hp]) {
        $kp[] = '        [' . $j($key) . ', ' . $j($hp) . ']';
    }
    $out .= implode(",\n", $kp) . "\n      ]\n    }" . ($ci < count($results) - 1 ? ',' : '') . "\n";
}
$out .= "  ]\n}\n";

// Self-check: the hand-built JSON must parse back to the same data.
$decoded = json_decode($out, true, 512, JSON_THROW_ON_ERROR);
if (count($decoded['cases']) !== count($results)) {
    fail('JSON round-trip check failed');
}

fwrite(STDOUT, $out);
