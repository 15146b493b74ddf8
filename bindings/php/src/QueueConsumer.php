<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/**
 * Reserves jobs of one queue and settles them (a worker). reserve() waits with blocking
 * reads on the server, never by polling. A job not acked within the queue's visibility
 * timeout (a crashed worker) is reclaimed by another worker: handlers must be idempotent.
 */
final class QueueConsumer
{
    private readonly FFI $ffi;
    private ?FFI\CData $handle;

    /** @internal use Queue::consumer() */
    public function __construct(private readonly ClusterManager $cluster, FFI\CData $handle)
    {
        $this->ffi = $cluster->library->ffi;
        $this->handle = $handle;
    }

    public function __destruct()
    {
        if ($this->handle !== null) {
            $this->ffi->ck_queue_consumer_free($this->handle);
            $this->handle = null;
        }
    }

    private function handle(): FFI\CData
    {
        if ($this->handle === null) {
            throw new Exception\ClosedException('the consumer was freed');
        }
        return $this->handle;
    }

    /** The next job, waiting up to `$timeoutSeconds` (0: do not wait); null if none came. */
    public function reserve(float $timeoutSeconds = 5.0): ?Job
    {
        $ms = DistributedLock::ms($timeoutSeconds, 'timeoutSeconds', DistributedLock::MAX_WAIT_SECONDS, true);
        $out = $this->ffi->new('ck_job*');
        $status = $this->ffi->ck_queue_reserve($this->handle(), $ms, FFI::addr($out));
        if ($status === 1) { // CK_NOT_FOUND: nothing within the timeout, or stopped
            return null;
        }
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
        return new Job($this->cluster->library, $out);
    }

    /** The job is done. ConflictException when its lease is gone (it was reclaimed). */
    public function ack(Job $job): void
    {
        $this->check($this->ffi->ck_queue_ack($this->handle(), $job->handle()));
    }

    /**
     * The attempt failed: retried after its backoff, or dead-lettered after its last attempt
     * (returns true then). The error text is kept with the job.
     */
    public function fail(Job $job, string|\Throwable $error): bool
    {
        $text = $error instanceof \Throwable ? get_class($error) . ': ' . $error->getMessage() : $error;
        $dead = $this->ffi->new('bool');
        $this->check($this->ffi->ck_queue_fail($this->handle(), $job->handle(), str_replace("\0", '', $text), FFI::addr($dead)));
        return (bool) $dead->cdata;
    }

    /** Heartbeat: the lease runs one full visibility timeout from now. */
    public function extend(Job $job): void
    {
        $this->check($this->ffi->ck_queue_extend($this->handle(), $job->handle()));
    }

    /** Puts the job back without consuming an attempt. */
    public function release(Job $job): void
    {
        $this->check($this->ffi->ck_queue_release($this->handle(), $job->handle()));
    }

    /** Waiting reserves return null at once, later ones too. */
    public function stop(): void
    {
        if ($this->handle !== null) {
            $this->ffi->ck_queue_consumer_stop($this->handle);
        }
    }

    /** stop() and return every job still leased to this consumer; returns how many. */
    public function shutdown(): int
    {
        $n = $this->ffi->new('uint64_t');
        $this->check($this->ffi->ck_queue_consumer_shutdown($this->handle(), FFI::addr($n)));
        return (int) $n->cdata;
    }

    private function check(int $status): void
    {
        if ($status !== 0) {
            throw $this->cluster->library->error($status);
        }
    }
}
