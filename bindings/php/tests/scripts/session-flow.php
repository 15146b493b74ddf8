<?php

// session_start() with SessionHandler in a real PHP process (no cookies: ids set with
// session_id()). Run by SessionTest; prints a JSON report. Argument: embedded | redis.

declare(strict_types=1);

ob_start(); // session_regenerate_id() refuses to run once output was sent
require dirname(__DIR__, 2) . '/autoload.php';
require_once 'Psr/SimpleCache/autoload.php';

use Clusterkit\ClusterManager;
use Clusterkit\SessionHandler;

$config = [];
if (($argv[1] ?? '') === 'redis') {
    $port = (int) getenv('CK_TEST_REDIS_PORT');
    $config = [
        'pools' => ['cache' => ['strategy' => 'ketama', 'nodes' => [['id' => 'r1', 'host' => '127.0.0.1', 'port' => $port]]]],
        'cache' => ['pool' => 'cache', 'namespace' => 'flow-' . bin2hex(random_bytes(4))],
    ];
}
$cluster = ClusterManager::shared($config);
session_set_save_handler(new SessionHandler($cluster), true);

$r = ['counts' => []];
session_start();
$id = session_id();
$_SESSION['n'] = 1;
session_write_close();
$r['id'] = $id;
$r['counts'][] = 1;
for ($i = 0; $i < 2; $i++) {
    session_id($id);
    session_start();
    $_SESSION['n']++;
    $r['counts'][] = $_SESSION['n'];
    session_write_close();
}
session_id($id);
session_start();
session_regenerate_id(true);
$_SESSION['n']++;
$new = session_id();
session_write_close();
$r['regenerated'] = $new;

session_id($new);
session_start();
$r['after_regenerate'] = $_SESSION['n'] ?? null;
session_write_close();

session_id($id);
session_start(); // strict mode: an unknown id is replaced
$r['old_id_kept'] = session_id() === $id;
session_write_close();

session_id($new);
session_start();
session_destroy();
session_id($new);
session_start();
$r['destroyed_gives_new_id'] = session_id() !== $new && !isset($_SESSION['n']);
session_write_close();

ob_end_clean();
echo json_encode($r), "\n";
