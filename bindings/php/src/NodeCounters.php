<?php

declare(strict_types=1);

namespace Clusterkit;

/** A node's live counters, as of the moment the Node was read. */
final class NodeCounters
{
    public function __construct(
        /** Requests picked and not yet finished. */
        public readonly int $inFlight = 0,
        /** Reported successes. */
        public readonly int $successes = 0,
        /** Reported failures. */
        public readonly int $failures = 0,
        /** Failures since the last success (outlier detection ejects on these). */
        public readonly int $consecutiveFailures = 0,
        /** Latency of the last reported success, in microseconds (0 if none). */
        public readonly int $lastLatencyUs = 0,
    ) {
    }
}
