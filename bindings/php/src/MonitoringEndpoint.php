<?php

declare(strict_types=1);

namespace Clusterkit;

/**
 * Serves the library's metrics and status page at paths of the application's choice, from
 * any front controller (plain PHP, PHP-FPM, a framework's route):
 *
 * ```php
 * $endpoint = new MonitoringEndpoint($cluster, [
 *     '/internal/metrics'     => 'prometheus',  // Prometheus scrapes this
 *     '/internal/status'      => 'html',        // the status page
 *     '/internal/status.json' => 'status_json', // its JSON twin
 * ], aggregateDir: '/dev/shm/myapp-metrics');   // PHP-FPM: add up every worker
 * if ($endpoint->handle()) {
 *     return; // served
 * }
 * ```
 *
 * With `aggregateDir`, every request through {@see MonitoringEndpoint::handle()} that is
 * not a monitoring path publishes this worker's metrics there (at most once per
 * `publishInterval` seconds), and a monitoring path serves the sum of every worker's
 * metrics published within `maxAge` seconds.
 */
final class MonitoringEndpoint
{
    /** @var array<string, string> path => format */
    private array $routes;

    private static float $lastPublish = 0.0;

    /**
     * @param array<string, string> $routes request path => format (`prometheus`,
     *        `openmetrics`, `json`, `html`, `status_json`)
     */
    public function __construct(
        private readonly ClusterManager $cluster,
        array $routes = ['/metrics' => 'prometheus', '/status' => 'html', '/status.json' => 'status_json'],
        private readonly ?string $aggregateDir = null,
        private readonly float $maxAge = 60.0,
        private readonly float $publishInterval = 1.0,
        private readonly ?string $title = null,
    ) {
        foreach ($routes as $path => $format) {
            if (!is_string($path) || $path === '' || $path[0] !== '/') {
                throw new Exception\InvalidArgumentException('invalid routes: every path must start with "/", got ' . json_encode($path));
            }
            if (!isset(ClusterManager::METRICS_FORMATS[$format])) {
                throw new Exception\InvalidArgumentException(sprintf(
                    'invalid routes[%s]: must be one of %s, got %s',
                    $path,
                    implode(', ', array_keys(ClusterManager::METRICS_FORMATS)),
                    json_encode($format)
                ));
            }
        }
        $this->routes = $routes;
    }

    /**
     * The response for request path `$path` (query string ignored), or null if it is not a
     * monitoring path: `['status' => 200, 'content_type' => ..., 'body' => ...]`.
     */
    public function respond(string $path): ?array
    {
        $path = (string) parse_url($path, PHP_URL_PATH);
        $format = $this->routes[$path] ?? null;
        if ($format === null) {
            return null;
        }
        if ($this->aggregateDir !== null) {
            $body = $this->cluster->aggregateMetrics($this->aggregateDir, $this->maxAge, $format);
        } elseif ($format === 'html') {
            $body = $this->cluster->statusPage($this->title);
        } else {
            $body = $this->cluster->metricsText($format);
        }
        return ['status' => 200, 'content_type' => ClusterManager::METRICS_CONTENT_TYPES[$format], 'body' => $body];
    }

    /**
     * Serves the current request (`$path` default: REQUEST_URI) if it is a monitoring
     * path: sends the headers and the body and returns true. Otherwise returns false (and,
     * with an aggregate directory, publishes this worker's metrics now and then).
     */
    public function handle(?string $path = null): bool
    {
        $r = $this->respond($path ?? (string) ($_SERVER['REQUEST_URI'] ?? '/'));
        if ($r === null) {
            $this->publishSometimes();
            return false;
        }
        if (!headers_sent()) {
            http_response_code($r['status']);
            header('Content-Type: ' . $r['content_type']);
            header('Cache-Control: no-store');
        }
        echo $r['body'];
        return true;
    }

    /** Publishes this worker's metrics if the interval has passed (no-op without a directory). */
    public function publishSometimes(): void
    {
        if ($this->aggregateDir === null) {
            return;
        }
        $now = microtime(true);
        if ($now - self::$lastPublish >= $this->publishInterval) {
            $this->cluster->publishMetrics($this->aggregateDir);
            self::$lastPublish = $now;
        }
    }
}
