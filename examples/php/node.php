<?php

// One app node of the example (run by app.php with `php -S`): a tiny backend service.
//   /healthz        "ok" (the pool's active health check)
//   /price?item=N   {"node": ..., "item": N, "price": ...} after ~5 ms of "work"

declare(strict_types=1);

header('Content-Type: application/json');
$node = getenv('NODE_ID') ?: 'node';
switch (parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH)) {
    case '/healthz':
        echo '"ok"';
        break;
    case '/price':
        usleep(5000);
        $item = (int) ($_GET['item'] ?? 0);
        echo json_encode(['node' => $node, 'item' => $item, 'price' => round(10 + $item * 1.25, 2)]);
        break;
    default:
        http_response_code(404);
        echo '"not found"';
}
