<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/**
 * A picked node: where to send the request, and the handle through which its outcome is
 * reported. Finish it once with success() or failure(); a pick that is neither (released or
 * destroyed) just gives back its in-flight count.
 */
final class Pick
{
    public readonly string $nodeId;
    public readonly string $host;
    public readonly int $port;

    private ?FFI\CData $handle;

    /** @internal */
    public function __construct(private readonly FFI $ffi, FFI\CData $handle)
    {
        $this->handle = $handle;
        $this->nodeId = (string) $ffi->ck_pick_node_id($handle);
        $this->host = (string) $ffi->ck_pick_host($handle);
        $this->port = (int) $ffi->ck_pick_port($handle);
    }

    /** "host:port" (IPv6 hosts in brackets). */
    public function address(): string
    {
        return str_contains($this->host, ':') ? "[{$this->host}]:{$this->port}" : "{$this->host}:{$this->port}";
    }

    /** The request succeeded after `$latencySeconds` (e.g. (hrtime(true) - $t0) / 1e9). */
    public function success(float $latencySeconds = 0.0): void
    {
        if (is_nan($latencySeconds) || $latencySeconds < 0 || $latencySeconds > DistributedLock::MAX_WAIT_SECONDS) {
            // Checked before the pick is taken: it can still be finished.
            throw new Exception\InvalidArgumentException(sprintf('invalid latencySeconds: must be between 0 and %d seconds, got %s', DistributedLock::MAX_WAIT_SECONDS, var_export($latencySeconds, true)));
        }
        $h = $this->take();
        $us = $latencySeconds > 0 ? (int) round($latencySeconds * 1e6) : 0;
        $this->ffi->ck_pick_success_us($h, $us);
    }

    /** The request failed (consecutive failures eject the node for a while). */
    public function failure(): void
    {
        $this->ffi->ck_pick_failure($this->take());
    }

    /** Gives the pick back without reporting an outcome. Idempotent. */
    public function release(): void
    {
        if ($this->handle !== null) {
            $h = $this->handle;
            $this->handle = null;
            $this->ffi->ck_pick_free($h);
        }
    }

    /** Whether success(), failure() or release() was called. */
    public function isFinished(): bool
    {
        return $this->handle === null;
    }

    public function __destruct()
    {
        $this->release();
    }

    private function take(): FFI\CData
    {
        if ($this->handle === null) {
            throw new Exception\ClosedException('this pick was already finished');
        }
        $h = $this->handle;
        $this->handle = null;
        return $h;
    }
}
