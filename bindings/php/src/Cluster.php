<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/**
 * One pool of nodes and the strategy requests are balanced over them with: either a pool of
 * a deployment ({@see ClusterManager::pool()}) or a standalone one built node by node.
 *
 * ```php
 * $app = new Cluster('app', 'round_robin');
 * $app->addNode(new Node('web-1', '127.0.0.1', 8081, weight: 2, zone: 'a'));
 * $app->addNode(new Node('web-2', '127.0.0.1', 8082));
 * $pick = $app->pick();
 * ```
 */
final class Cluster implements \Countable
{
    public readonly Library $library;

    /** @internal the ck_cluster* handle */
    public readonly FFI\CData $handle;

    /** Keeps the deployment alive while its pool is in use. */
    private ?ClusterManager $owner = null;

    private ?LoadBalancer $balancer = null;

    /**
     * A standalone pool (ck_cluster_new). `$strategy`: round_robin, weighted_round_robin,
     * random, least_connections, p2c, ketama, maglev or rendezvous.
     */
    public function __construct(string $name, string $strategy = 'p2c', ?Library $library = null)
    {
        $this->library = $library ?? Library::load();
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_cluster*');
        $status = $ffi->ck_cluster_new($name, $strategy, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        $this->handle = $out;
    }

    /** @internal a handle from ck_deployment_cluster */
    public static function wrap(Library $library, FFI\CData $handle, ClusterManager $owner): self
    {
        $self = (new \ReflectionClass(self::class))->newInstanceWithoutConstructor();
        $self->library = $library;
        $self->handle = $handle;
        $self->owner = $owner;
        return $self;
    }

    public function __destruct()
    {
        // The handle CData is shared by every object made from this one: it is set to NULL
        // after the free, so a late call (e.g. from another destructor at shutdown) fails
        // cleanly instead of touching freed memory.
        if (isset($this->handle) && !FFI::isNull($this->handle)) {
            $this->library->ffi->ck_cluster_free($this->handle);
            FFI::memset(FFI::addr($this->handle), 0, FFI::sizeof($this->handle));
        }
    }

    public function __clone()
    {
        throw new Exception\ClusterkitException('a Cluster cannot be cloned');
    }

    /** Adds a node (ConflictException if the id is taken; InvalidArgumentException names a bad field). */
    public function addNode(Node $node): void
    {
        self::checkRange('port', $node->port, 0, 0xFFFF);
        self::checkRange('weight', $node->weight, 0, 0xFFFFFFFF);
        $meta = $node->metadata === [] ? null : json_encode((object) $node->metadata, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE);
        $status = $this->library->ffi->ck_cluster_add_node(
            $this->handle,
            $node->id,
            $node->host,
            $node->port,
            $node->weight,
            $node->zone,
            $meta
        );
        if ($status !== 0) {
            throw $this->library->error($status);
        }
    }

    /** Removes node `$id` (NotFoundException if absent). Picks holding it finish normally. */
    public function removeNode(string $id): void
    {
        $status = $this->library->ffi->ck_cluster_remove_node($this->handle, $id);
        if ($status !== 0) {
            throw $this->library->error($status);
        }
    }

    /**
     * The operator's word on a node: Unhealthy or Draining take it out of balancing whatever
     * its checks say; Healthy lifts the override.
     */
    public function setHealth(string $id, Health $health, string $reason = ''): void
    {
        $status = $this->library->ffi->ck_cluster_set_health($this->handle, $id, $health->code(), $reason === '' ? null : $reason);
        if ($status !== 0) {
            throw $this->library->error($status);
        }
    }

    /** Changes a node's weight (1..256). */
    public function setWeight(string $id, int $weight): void
    {
        self::checkRange('weight', $weight, 0, 0xFFFFFFFF);
        $status = $this->library->ffi->ck_cluster_set_weight($this->handle, $id, $weight);
        if ($status !== 0) {
            throw $this->library->error($status);
        }
    }

    /**
     * A number for a C parameter of a narrower type: outside its range, PHP's FFI would wrap
     * it silently (70000 → port 4464), so it is refused here with the field's name; the
     * library checks the exact bounds (port 1..65535, weight 1..256) of what passes.
     */
    private static function checkRange(string $name, int $value, int $min, int $max): void
    {
        if ($value < $min || $value > $max) {
            throw new Exception\InvalidArgumentException("invalid $name: must be between $min and $max, got $value");
        }
    }

    /** @return list<Node> every node with its health and counters, as of now */
    public function nodes(): array
    {
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_cluster_nodes($this->handle, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return array_map(static fn (array $n) => Node::fromArray($n), $this->library->takeJson($out));
    }

    /** Node `$id`, or null if the pool has none by that id. */
    public function node(string $id): ?Node
    {
        foreach ($this->nodes() as $n) {
            if ($n->id === $id) {
                return $n;
            }
        }
        return null;
    }

    /** Number of nodes. */
    public function count(): int
    {
        return (int) $this->library->ffi->ck_cluster_len($this->handle);
    }

    /** Number of healthy nodes. */
    public function healthyCount(): int
    {
        return (int) $this->library->ffi->ck_cluster_healthy_count($this->handle);
    }

    /** The pool's metrics: name, strategy, version, total, healthy, in_panic, health, nodes. */
    public function metrics(): array
    {
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_buf*');
        $status = $ffi->ck_cluster_metrics($this->handle, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return $this->library->takeJson($out);
    }

    /** The pool's load balancer. */
    public function loadBalancer(): LoadBalancer
    {
        return $this->balancer ??= LoadBalancer::forCluster($this);
    }

    /** Shorthand for loadBalancer()->pick($key). */
    public function pick(?string $key = null): Pick
    {
        return $this->loadBalancer()->pick($key);
    }

    /** A subscription to this pool's events (added, removed, health changed, ...), polled. */
    public function subscribe(): EventStream
    {
        $ffi = $this->library->ffi;
        $out = $ffi->new('ck_events*');
        $status = $ffi->ck_cluster_subscribe($this->handle, FFI::addr($out));
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        return new EventStream($this->library, $out, $this);
    }
}
