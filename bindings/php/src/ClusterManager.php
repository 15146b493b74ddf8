<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ClusterkitException;
use Clusterkit\Exception\InvalidArgumentException;
use FFI;

/**
 * A whole deployment, built from one config document: its pools of nodes (each a
 * {@see Cluster} with its balancing strategy and health checks), its cache, its locks and its
 * sessions. With no document everything is embedded in this process.
 *
 * Under PHP-FPM use {@see ClusterManager::shared()}: a worker then builds the deployment once
 * and every later request reuses it (its connections, health state and embedded cache),
 * like phpredis's persistent connections.
 *
 * ```php
 * $cluster = ClusterManager::shared([
 *     'pools' => [
 *         'app'   => ['strategy' => 'p2c', 'nodes' => [new Node('web-1', '127.0.0.1', 8081)]],
 *         'cache' => ['strategy' => 'ketama', 'nodes' => [['id' => 'r1', 'host' => '127.0.0.1', 'port' => 6379]]],
 *     ],
 *     'cache' => ['pool' => 'cache'],
 * ]);
 * ```
 */
final class ClusterManager
{
    public readonly Library $library;

    /** @internal the ck_deployment* handle */
    public readonly FFI\CData $handle;

    /** The config text the deployment was built from ("" = everything embedded). */
    public readonly string $config;

    /** Whether this is a handle on the process-wide shared deployment. */
    public readonly bool $isShared;

    /** @var array<string, ClusterManager> shared instances of this process, by config text */
    private static array $sharedInstances = [];

    private ?DistributedCache $cache = null;
    private ?DistributedLock $locks = null;
    /** @var array<string, Cluster> */
    private array $pools = [];
    /** @var array<string, LoadBalancer> */
    private array $balancers = [];

    /**
     * Builds a new deployment of its own. `$config`: a JSON or TOML document, an array (encoded
     * as JSON; {@see Node} objects may stand for nodes), or null/""/[] for everything
     * embedded. Bad documents throw InvalidArgumentException with the library's message,
     * which names the field (e.g. `pools.app.nodes[1].port`).
     */
    public function __construct(string|array|null $config = null, ?Library $library = null)
    {
        $this->init(self::configText($config), $library, false);
    }

    /**
     * A handle on the process-wide deployment for this config (ck_deployment_shared): the
     * first call in a process (an FPM worker) builds it, later calls — in the same request or
     * in later requests served by the same worker — reuse it. The recommended entry point for
     * web applications. A forked child gets its own fresh deployment on first use.
     */
    public static function shared(string|array|null $config = null, ?Library $library = null): self
    {
        $text = self::configText($config);
        $lib = $library ?? Library::load();
        // Keyed by pid too: a forked child asks the library, which builds the child its own.
        $key = getmypid() . "\0" . $lib->origin . "\0" . $text;
        if (isset(self::$sharedInstances[$key])) {
            return self::$sharedInstances[$key];
        }
        $self = (new \ReflectionClass(self::class))->newInstanceWithoutConstructor();
        $self->init($text, $lib, true);
        return self::$sharedInstances[$key] = $self;
    }

    private function init(string $text, ?Library $library, bool $shared): void
    {
        $this->library = $library ?? Library::load();
        $this->config = $text;
        $this->isShared = $shared;
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_deployment*');
        $status = $shared
            ? $ffi->ck_deployment_shared($text, FFI::addr($out))
            : $ffi->ck_deployment_new($text, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        $this->handle = $out;
    }

    /** The config document as text: arrays become JSON; null and [] mean "". */
    public static function configText(string|array|null $config): string
    {
        if ($config === null || $config === []) {
            return '';
        }
        if (is_string($config)) {
            return $config;
        }
        try {
            return json_encode($config, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        } catch (\JsonException $e) {
            throw new InvalidArgumentException("invalid config: cannot encode it as JSON: {$e->getMessage()}", previous: $e);
        }
    }

    public function __destruct()
    {
        // The handle CData is shared by every object made from this one: it is set to NULL
        // after the free, so a late call (e.g. from another destructor at shutdown) fails
        // cleanly instead of touching freed memory.
        if (isset($this->handle) && !FFI::isNull($this->handle)) {
            $this->library->ffi->ck_deployment_free($this->handle);
            FFI::memset(FFI::addr($this->handle), 0, FFI::sizeof($this->handle));
        }
    }

    public function __clone()
    {
        throw new ClusterkitException('a ClusterManager cannot be cloned');
    }

    /**
     * What var_dump / print_r show: the config text with inline passwords (a `password`
     * field, the `user:password@` of a URL) replaced by `***`.
     */
    public function __debugInfo(): array
    {
        $config = preg_replace(
            ['/("password"\s*:\s*)"(?:[^"\\\\]|\\\\.)*"/', '/(\bpassword\s*=\s*)("(?:[^"\\\\]|\\\\.)*"|\'[^\']*\')/', '#(://[^:/@\s"\']*:)[^@/\s"\']*@#'],
            ['$1"***"', '$1"***"', '$1***@'],
            $this->config ?? ''
        );
        return ['config' => $config, 'isShared' => $this->isShared ?? false];
    }

    /**
     * The deployment's cache (PSR-16). Without arguments the same instance every time; with a
     * serializer or a default TTL a new one over the same cache.
     */
    public function cache(?Serializer $serializer = null, ?int $defaultTtl = null): DistributedCache
    {
        if ($serializer === null && $defaultTtl === null) {
            return $this->cache ??= new DistributedCache($this);
        }
        return new DistributedCache($this, $serializer, $defaultTtl);
    }

    /** The deployment's lock service (embedded, one Redis, or Redlock per `[locks]`). */
    public function locks(): DistributedLock
    {
        return $this->locks ??= new DistributedLock($this);
    }

    /** The task queue (`[queue]`: Redis, or embedded in this process). */
    public function queue(): Queue
    {
        return new Queue($this);
    }

    /** A new session with a fresh id (nothing is stored until save()). */
    public function createSession(?Serializer $serializer = null): DistributedSession
    {
        return DistributedSession::create($this, $serializer);
    }

    /**
     * Loads session `$id`; null if it is unknown, expired or malformed. With `$lock` the
     * session's lock is taken in the same round trip (released by save() or unlock()).
     */
    public function loadSession(string $id, bool $lock = false, ?Serializer $serializer = null): ?DistributedSession
    {
        return DistributedSession::load($this, $id, $lock, $serializer);
    }

    /** A session handler for session_set_save_handler(). */
    public function sessionHandler(bool $locking = true): SessionHandler
    {
        return new SessionHandler($this, $locking);
    }

    /** The pool `$name` of the config (NotFoundException if there is none). */
    public function pool(string $name): Cluster
    {
        if (isset($this->pools[$name])) {
            return $this->pools[$name];
        }
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_cluster*');
        $status = $ffi->ck_deployment_cluster($this->handle, $name, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return $this->pools[$name] = Cluster::wrap($this->library, $out, $this);
    }

    /** The load balancer of pool `$name`. */
    public function loadBalancer(string $pool): LoadBalancer
    {
        return $this->balancers[$pool] ??= new LoadBalancer($this, $pool);
    }

    /** Shorthand for loadBalancer($pool)->pick($key). */
    public function pick(string $pool, ?string $key = null): Pick
    {
        return $this->loadBalancer($pool)->pick($key);
    }

    /** Adds a node to pool `$pool` (ConflictException if its id is taken). */
    public function addNode(string $pool, Node $node): void
    {
        $this->pool($pool)->addNode($node);
    }

    /** Removes node `$id` from pool `$pool` (NotFoundException if absent). */
    public function removeNode(string $pool, string $id): void
    {
        $this->pool($pool)->removeNode($id);
    }

    /** @return list<Node> the nodes of pool `$pool` with their health and counters */
    public function nodes(string $pool): array
    {
        return $this->pool($pool)->nodes();
    }

    /** Metrics of the whole deployment: `['cache' => [...], 'pools' => [name => [...]]]`. */
    public function metrics(): array
    {
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_deployment_metrics($this->handle, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return $this->library->takeJson($out);
    }

    /** Formats of {@see ClusterManager::metricsText()} and their ck_metrics_format values. */
    public const METRICS_FORMATS = ['json' => 0, 'prometheus' => 1, 'openmetrics' => 2, 'html' => 3, 'status_json' => 4];

    /** HTTP content types of the formats. */
    public const METRICS_CONTENT_TYPES = [
        'json' => 'application/json',
        'prometheus' => 'text/plain; version=0.0.4; charset=utf-8',
        'openmetrics' => 'application/openmetrics-text; version=1.0.0; charset=utf-8',
        'html' => 'text/html; charset=utf-8',
        'status_json' => 'application/json',
    ];

    private function metricsFormat(string $format): int
    {
        if (!isset(self::METRICS_FORMATS[$format])) {
            throw new InvalidArgumentException(sprintf(
                'invalid format: must be one of %s, got %s',
                implode(', ', array_keys(self::METRICS_FORMATS)),
                json_encode($format)
            ));
        }
        return self::METRICS_FORMATS[$format];
    }

    /**
     * This process's metrics rendered by the library: `prometheus` (text format 0.0.4, for a
     * scrape), `openmetrics`, `json` (the full snapshot), `html` (the status page) or
     * `status_json` (its JSON twin). Throws UnavailableException when the document says
     * `[metrics] enabled = false`, InvalidArgumentException for an unknown format.
     */
    public function metricsText(string $format = 'prometheus'): string
    {
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_deployment_metrics_render($this->handle, $this->metricsFormat($format), FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return $this->library->takeBuf($out);
    }

    /** The full metrics snapshot as an array (see {@see ClusterManager::metricsText()}). */
    public function metricsSnapshot(): array
    {
        $v = json_decode($this->metricsText('json'), true, 512, JSON_THROW_ON_ERROR);
        return is_array($v) ? $v : [];
    }

    /** The status page (one HTML document) titled `$title` (default "clusterkit status"). */
    public function statusPage(?string $title = null): string
    {
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_deployment_status_html($this->handle, $title, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return $this->library->takeBuf($out);
    }

    /**
     * Writes this worker's metrics to `$dir` (created if missing; a tmpfs directory such as
     * /dev/shm/myapp-metrics keeps it in memory) so that one scrape endpoint can add up
     * every PHP-FPM worker with {@see ClusterManager::aggregateMetrics()}. Call it at the end
     * of a request (or every N requests).
     */
    public function publishMetrics(string $dir): void
    {
        $ffi = $this->library->ffi;
        $status = $ffi->ck_deployment_metrics_publish($this->handle, $dir);
        if ($status !== 0) {
            throw $this->library->error($status);
        }
    }

    /**
     * This worker's metrics plus every worker's published in `$dir` within `$maxAge`
     * seconds (files of workers that exited, older than that, are removed), rendered as
     * `$format` (see {@see ClusterManager::metricsText()}).
     */
    public function aggregateMetrics(string $dir, float $maxAge = 60.0, string $format = 'prometheus'): string
    {
        if (!is_finite($maxAge) || $maxAge <= 0 || $maxAge > 86400) {
            throw new InvalidArgumentException('invalid maxAge: must be more than 0 and at most 86400 seconds');
        }
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_deployment_metrics_aggregate(
            $this->handle,
            $dir,
            max(1, (int) round($maxAge * 1000)),
            $this->metricsFormat($format),
            FFI::addr($out)
        );
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return $this->library->takeBuf($out);
    }
}
