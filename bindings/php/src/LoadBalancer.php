<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/**
 * Picks nodes of one pool with the pool's strategy (health-aware; consistent-hashing
 * strategies follow the key). Every pick counts as a request in flight on its node until it
 * is finished: report the outcome with {@see Pick::success()} / {@see Pick::failure()}, which
 * feed least-connections, p2c and outlier detection, or let it go.
 *
 * ```php
 * $lb = $cluster->loadBalancer('app');
 * $pick = $lb->pick($userId);            // or pick() without a key
 * $t = hrtime(true);
 * try {
 *     $response = callBackend($pick->host, $pick->port);
 *     $pick->success((hrtime(true) - $t) / 1e9);
 * } catch (\Throwable $e) {
 *     $pick->failure();
 *     throw $e;
 * }
 * ```
 */
final class LoadBalancer
{
    private readonly FFI $ffi;
    private readonly FFI\CData $out;
    private ?ClusterManager $deployment = null;
    private ?Cluster $cluster = null;
    private string $pool = '';

    /** The balancer of pool `$pool` of a deployment. */
    public function __construct(ClusterManager $deployment, string $pool)
    {
        $this->ffi = $deployment->library->ffi;
        $this->out = $this->ffi->new('ck_pick*[1]');
        $this->deployment = $deployment;
        $this->pool = $pool;
    }

    /** @internal the balancer of a standalone pool */
    public static function forCluster(Cluster $cluster): self
    {
        $self = (new \ReflectionClass(self::class))->newInstanceWithoutConstructor();
        $self->ffi = $cluster->library->ffi;
        $self->out = $self->ffi->new('ck_pick*[1]');
        $self->cluster = $cluster;
        return $self;
    }

    /**
     * Picks a node; with `$key` the pick follows the key (ketama, maglev, rendezvous place it;
     * other strategies ignore it). Throws UnavailableException when there is no node to pick,
     * NotFoundException when the pool does not exist.
     */
    public function pick(?string $key = null): Pick
    {
        $len = $key === null ? 0 : strlen($key);
        $status = $this->cluster !== null
            ? $this->ffi->ck_cluster_pick($this->cluster->handle, $key, $len, $this->out)
            : $this->ffi->ck_deployment_pick($this->deployment->handle, $this->pool, $key, $len, $this->out);
        if ($status !== 0) {
            throw ($this->cluster?->library ?? $this->deployment->library)->error($status);
        }
        return new Pick($this->ffi, $this->out[0]);
    }
}
