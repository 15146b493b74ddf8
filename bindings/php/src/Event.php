<?php

declare(strict_types=1);

namespace Clusterkit;

/** One event of a pool (see {@see Cluster::subscribe()}). */
final class Event
{
    public const ADDED = 'added';
    public const REMOVED = 'removed';
    public const UPDATED = 'updated';
    public const HEALTH_CHANGED = 'health_changed';
    public const PANIC_CHANGED = 'panic_changed';
    public const STRATEGY_CHANGED = 'strategy_changed';
    public const DISCOVERY_PROBLEM = 'discovery_problem';
    /** The subscription missed events: re-read the nodes. */
    public const LAGGED = 'lagged';

    /** @internal ck_event_kind values, in order */
    public const KINDS = [
        self::ADDED, self::REMOVED, self::UPDATED, self::HEALTH_CHANGED,
        self::PANIC_CHANGED, self::STRATEGY_CHANGED, self::DISCOVERY_PROBLEM, self::LAGGED,
    ];

    public function __construct(
        /** One of the constants above. */
        public readonly string $kind,
        /** The node concerned, null for pool-wide events. */
        public readonly ?string $nodeId,
        /** For health_changed: the health before and after. */
        public readonly ?Health $oldHealth,
        public readonly ?Health $newHealth,
        /** The reason or description. */
        public readonly string $message,
        /** The whole event as the library describes it (ck_event_json). */
        public readonly array $data,
    ) {
    }
}
