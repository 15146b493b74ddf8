<?php

declare(strict_types=1);

namespace Clusterkit;

/**
 * A node of a pool: an immutable value. Build one to add it to a pool (or to put it into a
 * config array: it serializes to the config's node shape); read them back from
 * {@see Cluster::nodes()} with their health and counters.
 */
final class Node implements \JsonSerializable
{
    /**
     * @param array<string, string> $metadata
     */
    public function __construct(
        public readonly string $id,
        public readonly string $host,
        public readonly int $port,
        public readonly int $weight = 1,
        public readonly ?string $zone = null,
        public readonly array $metadata = [],
        public readonly Health $health = Health::Healthy,
        /** Why the health last changed ("" if it never did). */
        public readonly string $healthReason = '',
        public readonly NodeCounters $counters = new NodeCounters(),
    ) {
        // Validated by the library when the node is added or the config is parsed.
    }

    /** "host:port" */
    public function address(): string
    {
        return str_contains($this->host, ':') ? "[{$this->host}]:{$this->port}" : "{$this->host}:{$this->port}";
    }

    public function isHealthy(): bool
    {
        return $this->health === Health::Healthy;
    }

    /** A node from the library's JSON (ck_cluster_nodes). */
    public static function fromArray(array $a): self
    {
        $meta = [];
        foreach (($a['metadata'] ?? []) as $k => $v) {
            $meta[(string) $k] = (string) $v;
        }
        return new self(
            (string) $a['id'],
            (string) $a['host'],
            (int) $a['port'],
            (int) ($a['weight'] ?? 1),
            isset($a['zone']) && $a['zone'] !== '' ? (string) $a['zone'] : null,
            $meta,
            Health::tryFrom((string) ($a['health'] ?? 'healthy')) ?? Health::Unhealthy,
            (string) ($a['reason'] ?? ''),
            new NodeCounters(
                (int) ($a['in_flight'] ?? 0),
                (int) ($a['successes'] ?? 0),
                (int) ($a['failures'] ?? 0),
                (int) ($a['consecutive_failures'] ?? 0),
                (int) ($a['last_latency_us'] ?? 0),
            ),
        );
    }

    /** The config document's node shape: {"id","host","port","weight","zone","metadata"}. */
    public function jsonSerialize(): array
    {
        $a = ['id' => $this->id, 'host' => $this->host, 'port' => $this->port, 'weight' => max(1, $this->weight)];
        if ($this->zone !== null) {
            $a['zone'] = $this->zone;
        }
        if ($this->metadata !== []) {
            $a['metadata'] = (object) $this->metadata;
        }
        return $a;
    }
}
