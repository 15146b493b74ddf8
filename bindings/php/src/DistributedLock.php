<?php

declare(strict_types=1);

namespace Clusterkit;

use Clusterkit\Exception\ConflictException;
use Clusterkit\Exception\TimeoutException;
use FFI;

/**
 * The deployment's distributed locks: embedded in the process, one Redis, or Redlock over
 * the `[locks]` pool's independent masters. Every acquisition carries a fencing token that
 * strictly increases across holders of a name: pass it to the resource you protect so that a
 * holder whose lock expired cannot overwrite a newer holder's work.
 *
 * ```php
 * $locks = $cluster->locks();
 * $result = $locks->synchronized('report.build', function (Lock $lock) {
 *     return buildReport($lock->fencingToken());
 * }, ttl: 30, wait: 5);
 * ```
 */
final class DistributedLock
{
    private readonly FFI $ffi;

    public function __construct(private readonly ClusterManager $cluster)
    {
        $this->ffi = $cluster->library->ffi;
    }

    /**
     * Acquires lock `$name` for `$ttlSeconds`. `$waitSeconds` 0 makes one attempt
     * (ConflictException if someone else holds it); more waits up to that long, woken by the
     * holder's release (TimeoutException when it passes). UnavailableException when no
     * quorum of masters answers. `$fencing` false acquires without a fencing token (one
     * round trip less on Redlock; {@see Lock::fencingToken()} then throws): only for
     * callers that do not pass the token to the resource they protect. The deployment's
     * `[locks] fencing = false` turns it off for every acquisition.
     */
    public function acquire(string $name, float $ttlSeconds = 30.0, float $waitSeconds = 0.0, bool $fencing = true): Lock
    {
        $out = $this->ffi->new('ck_lock*');
        $status = $this->ffi->ck_lock_acquire_flags(
            $this->cluster->handle,
            $name,
            self::ms($ttlSeconds, 'ttlSeconds', self::MAX_TTL_SECONDS),
            self::ms($waitSeconds, 'waitSeconds', self::MAX_WAIT_SECONDS, true),
            $fencing ? 0 : self::NO_FENCING,
            FFI::addr($out)
        );
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return new Lock($this->cluster, $out);
    }

    /** Like acquire(), but null instead of ConflictException / TimeoutException. */
    public function tryAcquire(string $name, float $ttlSeconds = 30.0, float $waitSeconds = 0.0, bool $fencing = true): ?Lock
    {
        try {
            return $this->acquire($name, $ttlSeconds, $waitSeconds, $fencing);
        } catch (ConflictException | TimeoutException) {
            return null;
        }
    }

    /**
     * Runs `$fn($lock)` while holding lock `$name` and returns its result; the lock is
     * released afterwards whatever happens. If `$fn` returned normally but the lock had been
     * lost meanwhile (it expired, someone else took it), the release throws
     * ConflictException: the work was not protected to its end.
     *
     * @template T
     * @param callable(Lock): T $fn
     * @return T
     */
    public function synchronized(string $name, callable $fn, float $ttl = 30.0, float $wait = 10.0, bool $fencing = true): mixed
    {
        $lock = $this->acquire($name, $ttl, $wait, $fencing);
        $ok = false;
        try {
            $result = $fn($lock);
            $ok = true;
        } finally {
            if ($ok) {
                $lock->release();
            } else {
                try {
                    $lock->release();
                } catch (\Throwable) {
                    // $fn's exception is the one that matters.
                }
            }
        }
        return $result;
    }

    /** ck_lock_flag CK_LOCK_NO_FENCING. */
    private const NO_FENCING = 1;

    /** Longest lock TTL, in seconds (the library's maximum: 24 h). */
    public const MAX_TTL_SECONDS = 86_400;
    /** Longest wait or timeout of a blocking call, in seconds (the library's CK_MAX_WAIT_MS: 24 h). */
    public const MAX_WAIT_SECONDS = 86_400;

    /**
     * Seconds → whole milliseconds (at least 1 for a positive value), for the parameter
     * `$name`. InvalidArgumentException naming it for NaN, an infinity, a negative value, more
     * than `$maxSeconds`, or 0 unless `$zeroAllowed`: nothing is clamped or rounded to 0.
     */
    public static function ms(float $seconds, string $name = 'ttlSeconds', float $maxSeconds = self::MAX_TTL_SECONDS, bool $zeroAllowed = false): int
    {
        if (is_nan($seconds) || $seconds < 0 || $seconds > $maxSeconds || (!$zeroAllowed && $seconds == 0)) {
            $range = $zeroAllowed ? "between 0 and $maxSeconds" : "more than 0 and at most $maxSeconds";
            throw new Exception\InvalidArgumentException(sprintf('invalid %s: must be %s seconds, got %s', $name, $range, var_export($seconds, true)));
        }
        return $seconds == 0 ? 0 : max(1, (int) round($seconds * 1000));
    }
}
