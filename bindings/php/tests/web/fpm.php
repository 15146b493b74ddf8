<?php

// Front script of the PHP-FPM masters run-tests starts (FpmTest sends FastCGI requests with
// cgi-fcgi; one worker per master, so consecutive requests run in the same process). The
// query string picks the backend (`backend=embedded|redis`) and the operation (`op=`):
//   info                   the worker: pid, where the library came from, FFI/opcache state
//   put&key=K&value=V      cache set (no TTL);  get&key=K   cache get (null when missing)
//   ops                    cache, lock and session operations, their results
//   session                PHP's own session (SessionHandler, cookie in HTTP_COOKIE): n++
//   fail&name=N            takes lock N and a locked session, then a bad cache key: an
//                          uncaught InvalidArgumentException (HTTP 500)
//   lock&name=N            whether lock N can be taken now (then releases it), and whether
//                          the session the failed request N held locked loads at once
//   publish&n=N&dir=D      N picks on pool `app` of a second shared deployment, then
//                          publishMetrics(D);  scrape&dir=D  aggregateMetrics(D) as text
//   cdef                   FFI::cdef() outside preloaded code: refused under ffi.enable=preload
// `fresh=1` builds a deployment for the request alone (`new ClusterManager`) instead of
// ClusterManager::shared(), the documented FPM entry point.

declare(strict_types=1);

require dirname(__DIR__, 2) . '/autoload.php';

use Clusterkit\ClusterManager;
use Clusterkit\DistributedSession;
use Clusterkit\SessionHandler;

parse_str($_SERVER['QUERY_STRING'] ?? '', $q);
$backend = (string) ($q['backend'] ?? 'embedded');
$config = match ($backend) {
    'embedded' => ['sessions' => ['lock_wait' => '5s']],
    'redis' => [
        'pools' => ['cache' => ['strategy' => 'ketama', 'nodes' => [
            ['id' => 'r1', 'host' => '127.0.0.1', 'port' => (int) getenv('CK_TEST_REDIS_PORT')],
        ]]],
        'cache' => ['pool' => 'cache', 'namespace' => 'fpm'],
        'locks' => ['pool' => 'cache'],
        'sessions' => ['lock_wait' => '5s'],
    ],
    default => throw new \InvalidArgumentException("unknown backend $backend"),
};
// `fresh=1`: a deployment of this request only (what shared() avoids), for comparison.
$cluster = empty($q['fresh']) ? ClusterManager::shared($config) : new ClusterManager($config);

header('Content-Type: application/json');
$opcache = function_exists('opcache_get_status') ? (opcache_get_status(false) ?: []) : [];
$out = [
    'pid' => getmypid(),
    'sapi' => PHP_SAPI,
    'lib' => $cluster->library->origin,
    'ffi' => ini_get('ffi.enable'),
    'opcache' => (bool) ($opcache['opcache_enabled'] ?? false),
    // Whether opcache.preload (preload.php) preloaded clusterkit's classes.
    'preloaded' => in_array(ClusterManager::class, $opcache['preload_statistics']['classes'] ?? [], true),
];
$cache = $cluster->cache();
$locks = $cluster->locks();
$key = (string) ($q['key'] ?? '');
$name = (string) ($q['name'] ?? '');

switch ($q['op'] ?? 'info') {
    case 'info':
        break;
    case 'put':
        $out['stored'] = $cache->set($key, (string) $q['value']);
        break;
    case 'get':
        $out['value'] = $cache->get($key);
        break;
    case 'ops':
        $k = 'ops.' . bin2hex(random_bytes(6));
        $r = [];
        $cache->set($k, ['a' => 1, 'b' => [true, 2.5]], 60);
        $r['get'] = $cache->get($k);
        $r['increment'] = [$cache->increment("$k.n"), $cache->increment("$k.n", 4), $cache->decrement("$k.n")];
        $cache->setMultiple(["$k.x" => 'x', "$k.y" => 'y'], 60);
        $r['getMultiple'] = $cache->getMultiple(["$k.x", "$k.y", "$k.z"], '-');
        $r['add'] = [$cache->add("$k.once", 1, 60), $cache->add("$k.once", 2, 60)];
        $cache->deleteMultiple([$k, "$k.n", "$k.x", "$k.y", "$k.once"]);
        $r['hasAfterDelete'] = $cache->has($k);

        $lock = $locks->acquire("lock.$k", 10);
        $r['fence'] = $lock->fencingToken();
        $r['contended'] = $locks->tryAcquire("lock.$k", 10) === null;
        $lock->release();
        $again = $locks->tryAcquire("lock.$k", 10);
        $r['reacquired'] = $again !== null && $again->fencingToken() > $r['fence'];
        $again?->release();

        $s = $cluster->createSession();
        $s->set('user', 42);
        $s->set('cart', ['sku-1']);
        $s->save();
        $locked = $cluster->loadSession($s->id(), lock: true);
        $r['sessionLoaded'] = $locked?->all();
        $locked->set('cart', ['sku-1', 'sku-2']);
        $locked->remove('user');
        $locked->save();
        $r['sessionSaved'] = $cluster->loadSession($s->id())?->all();
        $r['destroyId'] = DistributedSession::destroyId($cluster, $s->id());
        $r['sessionDestroyed'] = $cluster->loadSession($s->id()) === null;
        $out['ops'] = $r;
        break;
    case 'session':
        session_set_save_handler(new SessionHandler($cluster), true);
        session_start();
        $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
        $out['id'] = session_id();
        $out['n'] = $_SESSION['n'];
        break;
    case 'fail':
        // Held when the request dies: the lock, a locked session and a PHP session.
        $held = $locks->acquire($name, 60);
        $out['fence'] = $held->fencingToken();
        $s = $cluster->createSession();
        $s->set('k', 'v');
        $s->save();
        $lockedSession = $cluster->loadSession($s->id(), lock: true);
        $cache->set("fail.session.$name", $s->id());
        $cache->get('bad{key}'); // InvalidArgumentException, not caught
        break;
    case 'lock':
        $l = $locks->tryAcquire($name, 10);
        $out['acquired'] = $l !== null;
        $l?->release();
        $sid = $cache->get("fail.session.$name");
        if (is_string($sid)) {
            // The session the failed request held locked: free again (lock_wait is 5 s).
            $t = microtime(true);
            $out['session'] = $cluster->loadSession($sid, lock: true)?->all();
            $out['sessionWait'] = microtime(true) - $t;
        }
        break;
    case 'publish':
        // Monitoring: N picks on the pool `app`, then this worker's metrics to `dir`.
        $pool = ClusterManager::shared(['pools' => ['app' => ['strategy' => 'round_robin', 'nodes' => [
            ['id' => 'a0', 'host' => '127.0.0.1', 'port' => 1], ['id' => 'a1', 'host' => '127.0.0.1', 'port' => 2],
        ]]]]);
        for ($i = 0; $i < (int) ($q['n'] ?? 0); $i++) {
            $pool->pick('app')->success(0.001);
        }
        $pool->publishMetrics((string) $q['dir']);
        break;
    case 'scrape':
        // Monitoring: every worker's metrics added up, as one Prometheus scrape.
        $pool = ClusterManager::shared(['pools' => ['app' => ['strategy' => 'round_robin', 'nodes' => [
            ['id' => 'a0', 'host' => '127.0.0.1', 'port' => 1], ['id' => 'a1', 'host' => '127.0.0.1', 'port' => 2],
        ]]]]);
        $out['text'] = $pool->aggregateMetrics((string) $q['dir'], 60.0, 'prometheus');
        break;
    case 'cdef':
        try {
            \FFI::cdef('int abs(int);');
            $out['cdef'] = 'allowed';
        } catch (\FFI\Exception $e) {
            $out['cdef'] = $e->getMessage();
        }
        break;
    default:
        http_response_code(404);
        $out['error'] = 'no op ' . ($q['op'] ?? '');
}
echo json_encode($out);
