<?php

declare(strict_types=1);

namespace Clusterkit;

/** A node's health (ck_health). */
enum Health: string
{
    /** Balanced over. */
    case Healthy = 'healthy';
    /** Out of balancing (failed checks, ejected, or marked by the operator). */
    case Unhealthy = 'unhealthy';
    /** Finishing its requests; no new ones. */
    case Draining = 'draining';

    /** The C enum value (CK_HEALTHY = 0, CK_UNHEALTHY = 1, CK_DRAINING = 2). */
    public function code(): int
    {
        return match ($this) {
            self::Healthy => 0,
            self::Unhealthy => 1,
            self::Draining => 2,
        };
    }

    public static function fromCode(int $code): self
    {
        return match ($code) {
            0 => self::Healthy,
            1 => self::Unhealthy,
            2 => self::Draining,
            default => throw new Exception\InternalException("unknown ck_health value $code"),
        };
    }
}
