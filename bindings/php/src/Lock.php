<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/**
 * A held distributed lock (see {@see DistributedLock::acquire()}). Release it explicitly;
 * a Lock destroyed while still held is released in the background.
 */
final class Lock
{
    private readonly FFI $ffi;
    private ?FFI\CData $handle;

    /** The lock's name. */
    public readonly string $name;

    /** The holder's random token (what release and extend prove ownership with). */
    public readonly string $token;

    /** The fencing token; null when acquired with `fencing: false`. */
    private readonly ?int $fence;

    /** Why there is no fencing token (the library's not_found error), when there is none. */
    private readonly ?Exception\ClusterkitException $noFence;

    /** @internal */
    public function __construct(private readonly ClusterManager $cluster, FFI\CData $handle)
    {
        $this->ffi = $cluster->library->ffi;
        $this->handle = $handle;
        $this->name = (string) $this->ffi->ck_lock_name($handle);
        $this->token = (string) $this->ffi->ck_lock_token($handle);
        $fence = $this->ffi->new('uint64_t');
        $status = $this->ffi->ck_lock_get_fencing_token($handle, FFI::addr($fence));
        // CK_NOT_FOUND: acquired without a fencing token (the library's message says so).
        $this->fence = $status === 0 ? (int) $fence->cdata : null;
        $this->noFence = $status === 0 ? null : $cluster->library->error($status);
    }

    /**
     * The fencing token: strictly greater than every earlier holder's of this name.
     * NotFoundException when the lock was acquired with `fencing: false` (or the deployment's
     * `[locks] fencing = false`): it has no token.
     */
    public function fencingToken(): int
    {
        if ($this->fence === null) {
            throw $this->noFence ?? new Exception\NotFoundException('no fencing token');
        }
        return $this->fence;
    }

    /** Whether this lock carries a fencing token (false when acquired with `fencing: false`). */
    public function hasFencingToken(): bool
    {
        return $this->fence !== null;
    }

    /** Seconds of validity left as far as this holder knows (0 once released or expired). */
    public function validity(): float
    {
        if ($this->handle === null) {
            return 0.0;
        }
        return $this->ffi->ck_lock_validity_ms($this->handle) / 1000;
    }

    /** Whether the lock is still held (not released, not known to be expired or lost). */
    public function isHeld(): bool
    {
        return $this->handle !== null && $this->ffi->ck_lock_is_held($this->handle);
    }

    /**
     * Extends the lock to `$ttlSeconds` from now. ConflictException if it was lost (expired
     * and taken), ClosedException if it was released.
     */
    public function extend(float $ttlSeconds): void
    {
        if ($this->handle === null) {
            throw new Exception\ClosedException("lock {$this->name} was released");
        }
        $status = $this->ffi->ck_lock_extend($this->handle, DistributedLock::ms($ttlSeconds, 'ttlSeconds', DistributedLock::MAX_TTL_SECONDS));
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }

    /**
     * Releases the lock. ConflictException if it had expired or been taken meanwhile (the
     * protected work may have overlapped another holder's); ClosedException if it was
     * already released.
     */
    public function release(): void
    {
        if ($this->handle === null) {
            throw new Exception\ClosedException("lock {$this->name} was already released");
        }
        $h = $this->handle;
        $this->handle = null;
        try {
            $status = $this->ffi->ck_lock_release($h);
            if ($status !== 0) {
                throw $this->cluster->library->error($status);
            }
        } finally {
            $this->ffi->ck_lock_free($h);
        }
    }

    public function __destruct()
    {
        if ($this->handle !== null) {
            $h = $this->handle;
            $this->handle = null;
            $this->ffi->ck_lock_free($h); // releases in the background if still held
        }
    }
}
