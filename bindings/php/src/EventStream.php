<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/**
 * A subscription to a pool's events, read by polling. Each subscription has its own queue;
 * one that falls too far behind gets a single Event::LAGGED and should re-read the nodes.
 *
 * ```php
 * $events = $cluster->pool('app')->subscribe();
 * while ($e = $events->next(1.0)) {
 *     printf("%s %s: %s\n", $e->kind, $e->nodeId, $e->message);
 * }
 * ```
 */
final class EventStream
{
    private ?FFI\CData $handle;
    private readonly FFI\CData $out;

    /** @internal */
    public function __construct(private readonly Library $library, FFI\CData $handle, private readonly Cluster $cluster)
    {
        $this->handle = $handle;
        $this->out = $library->ffi->new('ck_event*[1]');
    }

    /** The next event, waiting up to `$timeoutSeconds` (0: do not wait); null if none came. */
    public function next(float $timeoutSeconds = 0.0): ?Event
    {
        if ($this->handle === null) {
            throw new Exception\ClosedException('this event subscription is closed');
        }
        $ffi = $this->library->ffi;
        if (is_nan($timeoutSeconds) || $timeoutSeconds < 0 || $timeoutSeconds > DistributedLock::MAX_WAIT_SECONDS) {
            throw new Exception\InvalidArgumentException(sprintf('invalid timeoutSeconds: must be between 0 and %d seconds, got %s', DistributedLock::MAX_WAIT_SECONDS, var_export($timeoutSeconds, true)));
        }
        $ms = $timeoutSeconds > 0 ? (int) ceil($timeoutSeconds * 1000) : 0;
        $status = $ffi->ck_events_next($this->handle, $ms, $this->out);
        if ($status === Exception\ClusterkitException::TIMEOUT) {
            return null;
        }
        if ($status !== 0) {
            throw $this->library->error($status);
        }
        $ev = $this->out[0];
        try {
            $kind = (int) $ffi->ck_event_get_kind($ev);
            $node = (string) $ffi->ck_event_node_id($ev);
            $json = $ffi->new('ck_buf*');
            $status = $ffi->ck_event_json($ev, FFI::addr($json));
            if ($status !== 0) {
                throw $this->library->error($status);
            }
            $data = $this->library->takeJson($json);
            $health = $kind === 3;
            return new Event(
                Event::KINDS[$kind] ?? 'unknown',
                $node === '' ? null : $node,
                $health ? Health::fromCode((int) $ffi->ck_event_old_health($ev)) : null,
                $health ? Health::fromCode((int) $ffi->ck_event_new_health($ev)) : null,
                (string) $ffi->ck_event_message($ev),
                $data,
            );
        } finally {
            $ffi->ck_event_free($ev);
        }
    }

    /** Ends the subscription. Idempotent. */
    public function close(): void
    {
        if ($this->handle !== null) {
            $h = $this->handle;
            $this->handle = null;
            $this->library->ffi->ck_events_free($h);
        }
    }

    public function __destruct()
    {
        $this->close();
    }
}
