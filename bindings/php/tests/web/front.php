<?php

// Front script of the two `php -S` app servers run-tests starts (A and B, sharing one
// redis-server): PHP's own sessions through clusterkit's SessionHandler.
//   /incr[?sleep=µs]   session_start(); n++ (read, sleep, write: a lost update without the lock)
//   /get               read only (read_and_close)
//   /regenerate        session_regenerate_id(true)
//   /destroy           session_destroy()
//   /healthz           "ok"

declare(strict_types=1);

require dirname(__DIR__, 2) . '/autoload.php';

use Clusterkit\ClusterManager;
use Clusterkit\SessionHandler;

header('Content-Type: application/json');
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
if ($path === '/healthz') {
    echo '"ok"';
    return;
}

$port = (int) getenv('CK_TEST_REDIS_PORT');
// Shared: a worker builds the deployment once and every later request reuses it (and its
// Redis connection), as under PHP-FPM.
$cluster = ClusterManager::shared([
    'pools' => ['cache' => ['strategy' => 'ketama', 'nodes' => [['id' => 'r1', 'host' => '127.0.0.1', 'port' => $port]]]],
    'cache' => ['pool' => 'cache', 'namespace' => 'web'],
    'sessions' => ['lock_wait' => '20s'],
]);
session_set_save_handler(new SessionHandler($cluster), true);

$out = ['server' => getenv('CK_TEST_SERVER'), 'pid' => getmypid(), 'lib' => $cluster->library->origin];
switch ($path) {
    case '/incr':
        session_start();
        $n = $_SESSION['n'] ?? 0;
        usleep((int) ($_GET['sleep'] ?? 0));
        $_SESSION['n'] = $n + 1;
        break;
    case '/get':
        session_start(['read_and_close' => true]);
        break;
    case '/regenerate':
        session_start();
        $out['old'] = session_id();
        session_regenerate_id(true);
        break;
    case '/destroy':
        session_start();
        session_destroy();
        $_SESSION = [];
        break;
    default:
        http_response_code(404);
        echo json_encode(['error' => "no route $path"]);
        return;
}
$out['id'] = session_id();
$out['n'] = $_SESSION['n'] ?? null;
echo json_encode($out);
