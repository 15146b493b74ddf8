<?php
// The PHP side of test_interop_php.py, on the PHP package (bindings/php) over the C ABI.
// The deployment comes from the same JSON document as the Python side (env CK_CONFIG).
//   php interop.php write            writes a cache value, a session, takes a lock; prints
//                                    them as JSON; holds the lock until a line on stdin
//   php interop.php read SID         reads what Python wrote; tries the lock Python holds
//   php interop.php acquire          takes and releases the lock; prints its fencing token
declare(strict_types=1);

require dirname(__DIR__, 2) . '/php/autoload.php';

use Clusterkit\ClusterManager;

$ck = new ClusterManager((string) getenv('CK_CONFIG'));
$cache = $ck->cache();
$mode = $argv[1] ?? '';
$out = [];
switch ($mode) {
    case 'write':
        $cache->setRaw('interop:php', "from-php\x00\xff\xfe bytes");
        $s = $ck->createSession();
        $s->setRaw('user', 'ada');
        $s->setRaw('cart', '[1,2,3]');
        $s->save();
        $lock = $ck->locks()->acquire('interop-php-lock', 30.0);
        $out = ['session' => $s->id(), 'fence' => $lock->fencingToken()];
        echo json_encode($out), "\n";
        fflush(STDOUT);
        fgets(STDIN);
        $lock->release();
        echo "released\n";
        break;
    case 'read':
        $v = $cache->getRaw('interop:py');
        $s = $ck->loadSession($argv[2]);
        $fields = [];
        if ($s !== null) {
            foreach ($s->keys() as $k) {
                $fields[$k] = bin2hex((string) $s->getRaw($k));
            }
        }
        $held = $ck->locks()->tryAcquire('interop-py-lock', 5.0) === null;
        echo json_encode(['value' => $v === null ? null : bin2hex($v), 'fields' => $fields, 'held_by_other' => $held]), "\n";
        break;
    case 'acquire':
        $lock = $ck->locks()->acquire('interop-py-lock', 5.0, 5.0);
        echo json_encode(['fence' => $lock->fencingToken()]), "\n";
        $lock->release();
        break;
    default:
        fwrite(STDERR, "usage: interop.php write|read SID|acquire\n");
        exit(2);
}
