<?php

declare(strict_types=1);

namespace Clusterkit;

use FFI;

/** A reserved job (plain data plus the handle its consumer settles it with). */
final class Job
{
    public readonly string $id;
    public readonly string $payload;
    /** This delivery's attempt, from 1. */
    public readonly int $attempt;
    public readonly int $maxAttempts;
    /** When it was first enqueued, Unix ms. */
    public readonly int $enqueuedAtMs;
    /** "high", "normal" or "low". */
    public readonly string $priority;
    /** The error the previous attempt failed with. */
    public readonly ?string $lastError;
    private ?FFI\CData $handle;
    private readonly FFI $ffi;

    /** @internal */
    public function __construct(Library $library, FFI\CData $handle)
    {
        $ffi = $library->ffi;
        $this->ffi = $ffi;
        $this->handle = $handle;
        $this->id = (string) $ffi->ck_job_id($handle);
        $len = $ffi->new('size_t');
        $p = $ffi->ck_job_payload($handle, FFI::addr($len));
        $this->payload = $len->cdata === 0 ? '' : FFI::string($p, $len->cdata);
        $this->attempt = (int) $ffi->ck_job_attempt($handle);
        $this->maxAttempts = (int) $ffi->ck_job_max_attempts($handle);
        $this->enqueuedAtMs = (int) $ffi->ck_job_enqueued_at_ms($handle);
        $this->priority = ['high', 'normal', 'low'][(int) $ffi->ck_job_priority($handle)] ?? 'normal';
        $err = $ffi->ck_job_last_error($handle);
        $this->lastError = $err === null ? null : (string) $err;
    }

    public function __destruct()
    {
        if ($this->handle !== null) {
            $this->ffi->ck_job_free($this->handle);
            $this->handle = null;
        }
    }

    /** @internal */
    public function handle(): FFI\CData
    {
        if ($this->handle === null) {
            throw new Exception\ClosedException('the job was freed');
        }
        return $this->handle;
    }
}
